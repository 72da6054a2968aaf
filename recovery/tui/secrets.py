"""The TUI's source of passphrases: a masked dialog, asked from the engine's worker threads.

Installed by :class:`~recovery.tui.app.RecoveryApp` as the provider of
:mod:`recovery.repository.secrets`. The engine asks from a worker thread while the person's
screen is on the UI thread: the question is posted there and the worker waits for the answer.
A passphrase is kept in memory for the session only, per location, so it is asked once.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from recovery.tui.app import RecoveryApp


class DialogSecrets:
    def __init__(self, app: RecoveryApp) -> None:
        self.app = app
        self._known: dict[str, str] = {}
        self._lock = threading.Lock()

    def passphrase(self, location: str, new: bool) -> str | None:
        given = os.environ.get("RECOVERY_PASSPHRASE")
        if given:
            return given
        with self._lock:
            known = self._known.get(location)
        if known:
            return known
        answer = self._ask(location, new)
        if answer:
            with self._lock:
                self._known[location] = answer
        return answer

    def _ask(self, location: str, new: bool) -> str | None:
        from recovery.tui.screens.dialogs import SecretScreen

        done = threading.Event()
        box: list[str | None] = [None]

        def answered(value: str | None) -> None:
            box[0] = value
            done.set()

        if new:
            screen = SecretScreen(
                "Encrypt the new backup location",
                [
                    f"Choose a passphrase for {location}.",
                    "Every image there can only be read with it: keep it safe. It cannot be",
                    "recovered if it is lost.",
                ],
                confirm=True,
            )
        else:
            screen = SecretScreen(
                "Encrypted backup location",
                [f"{location} is encrypted.", "Type its passphrase."],
            )
        try:
            self.app.call_from_thread(self.app.push_screen, screen, answered)
        except RuntimeError:
            return None  # asked on the UI thread, which must not block: none to give
        while not done.wait(0.5):
            if not self.app.is_running:
                return None
        return box[0]
