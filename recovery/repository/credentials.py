"""Where network backends get secrets and trust decisions: one small seam.

Called by the network backends (sftp, smb, s3) when they connect. The default,
:class:`EnvironmentCredentials`, reads only the environment, so the engine works in scripts;
the CLI installs a provider that also asks on the terminal, the TUI one with a masked dialog
(:func:`use_credentials`). Promises: a secret is only ever returned to the backend that asked;
nothing here prints, logs or stores it.
"""

from __future__ import annotations

import os
import threading
from typing import Protocol


class Credentials(Protocol):
    def password(self, location: str) -> str | None:
        """The password for ``location`` (SMB, SFTP, or an SSH key's passphrase), or None."""
        ...

    def accept_host_key(self, host: str, key_type: str, fingerprint: str) -> bool:
        """Whether to trust (and remember) an SSH server key that known_hosts does not hold."""
        ...

    def identity(self, location: str) -> str | None:
        """An SSH private key file chosen by the person (``--identity``), or None."""
        ...


class EnvironmentCredentials:
    """Secrets from the environment only: ``RECOVERY_PASSWORD``; a new SSH host key is accepted
    only with ``RECOVERY_ACCEPT_NEW_HOST_KEY=1`` (or ``accept_new_host_key``)."""

    def __init__(self, identity_file: str | None = None, accept_new_host_key: bool = False):
        self.identity_file = identity_file
        self.accept_new = accept_new_host_key

    def password(self, location: str) -> str | None:
        return os.environ.get("RECOVERY_PASSWORD") or None

    def accept_host_key(self, host: str, key_type: str, fingerprint: str) -> bool:
        return self.accept_new or os.environ.get("RECOVERY_ACCEPT_NEW_HOST_KEY") == "1"

    def identity(self, location: str) -> str | None:
        return self.identity_file


_current: Credentials = EnvironmentCredentials()
_lock = threading.Lock()


def use_credentials(provider: Credentials) -> None:
    """Make ``provider`` the one backends opened from now on ask."""
    global _current
    with _lock:
        _current = provider


def current_credentials() -> Credentials:
    with _lock:
        return _current
