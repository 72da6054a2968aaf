"""The engine: backup, restore, clone, verify, images, remove.

Each operation is planned first (a plain plan object the UI can show), then executed with
progress reported through :class:`recovery.engine.progress.Progress` callbacks.
"""
