"""The Textual app. Imports the engine; the engine never imports this package."""
