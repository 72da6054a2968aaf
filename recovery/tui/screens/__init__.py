"""The screens of the TUI, one module per step a person goes through."""
