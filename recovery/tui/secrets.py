"""The TUI's secrets: masked dialogs and a host-key question, asked from the engine's worker
threads; and what the person typed in the network location form, kept for the session.

Installed by :class:`~recovery.tui.app.RecoveryApp` as the provider of
:mod:`recovery.repository.secrets` (the one interface the CLI implements on the terminal). The
engine asks from a worker thread while the person's screen is on the UI thread: the question is
posted there and the worker waits for the answer. What is typed is kept in memory only, per
location, so it is asked once; it is never written anywhere nor put into a message or a log.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.screen import ModalScreen

from recovery.repository.secrets import EnvironmentSecrets, S3Keys

if TYPE_CHECKING:
    from recovery.tui.app import RecoveryApp


@dataclass(frozen=True)
class NetworkLogin:
    """What the network location form gave for one location (kept for the session)."""

    password: str | None = None
    identity: str | None = None
    s3_keys: S3Keys | None = None

    def __repr__(self) -> str:
        return f"NetworkLogin(identity={self.identity!r}, secrets hidden)"


class DialogSecrets(EnvironmentSecrets):
    """The environment first (so a script behaves the same), then what the form gave, then a
    dialog."""

    def __init__(self, app: RecoveryApp) -> None:
        super().__init__()
        self.app = app
        self._passphrases: dict[str, str] = {}
        self._logins: dict[str, NetworkLogin] = {}
        self._lock = threading.Lock()

    # What the form gave ------------------------------------------------------------------

    def remember(self, location: str, login: NetworkLogin) -> None:
        with self._lock:
            self._logins[location] = login

    def known_locations(self) -> list[str]:
        """Network locations used in this session, the latest first."""
        with self._lock:
            return list(reversed(self._logins))

    def _login(self, location: str) -> NetworkLogin | None:
        with self._lock:
            return self._logins.get(location)

    # The provider ------------------------------------------------------------------------

    def passphrase(self, location: str, new: bool) -> str | None:
        given = super().passphrase(location, new)
        if given:
            return given
        with self._lock:
            known = self._passphrases.get(location)
        if known:
            return known
        answer = self._ask(self._passphrase_screen(location, new))
        if isinstance(answer, str) and answer:
            with self._lock:
                self._passphrases[location] = answer
            return answer
        return None

    def password(self, location: str) -> str | None:
        login = self._login(location)
        if login is not None and login.password:
            return login.password
        given = super().password(location)
        if given:
            return given
        from recovery.tui.screens.dialogs import SecretScreen

        answer = self._ask(
            SecretScreen("Password", [f"The password for {location}."], placeholder="password")
        )
        if isinstance(answer, str) and answer:
            self.remember(location, NetworkLogin(answer, login.identity if login else None))
            return answer
        return None

    def identity(self, location: str) -> str | None:
        login = self._login(location)
        return login.identity if login is not None else None

    def s3_keys(self, location: str) -> S3Keys | None:
        login = self._login(location)
        return login.s3_keys if login is not None else None

    def accept_host_key(self, host: str, key_type: str, fingerprint: str) -> bool:
        if super().accept_host_key(host, key_type, fingerprint):
            return True
        from recovery.tui.screens.dialogs import ConfirmScreen

        answer = self._ask(
            ConfirmScreen(
                "Unknown SSH server",
                [
                    f"The SSH server {host} is not known yet. Its {key_type} key fingerprint is",
                    f"  {fingerprint}",
                    "Compare it with the one the server's owner gives you. Trusting it",
                    "adds it to ~/.ssh/known_hosts (in memory on the live system).",
                ],
                confirm="Trust this server",
                cancel="Refuse",
            )
        )
        return answer is True

    # Asking on the UI thread ---------------------------------------------------------------

    def _passphrase_screen(self, location: str, new: bool) -> ModalScreen[str | None]:
        from recovery.tui.screens.dialogs import SecretScreen

        if new:
            return SecretScreen(
                "Encrypt the new backup location",
                [
                    f"Choose a passphrase for {location}.",
                    "Every image there can only be read with it: keep it safe. It cannot be",
                    "recovered if it is lost.",
                ],
                confirm=True,
            )
        return SecretScreen(
            "Encrypted backup location", [f"{location} is encrypted.", "Type its passphrase."]
        )

    def _ask(self, screen: ModalScreen[str | None] | ModalScreen[bool]) -> object:
        """Show ``screen`` from a worker thread and wait for its answer; None when the app ends
        or when asked on the UI thread (which must not block: there is no answer to give)."""
        done = threading.Event()
        box: list[object] = [None]

        def answered(value: object) -> None:
            box[0] = value
            done.set()

        try:
            self.app.call_from_thread(self.app.push_screen, screen, answered)
        except RuntimeError:
            return None
        while not done.wait(0.5):
            if not self.app.is_running:
                return None
        return box[0]
