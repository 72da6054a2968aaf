"""Where the repository and the network backends get secrets and trust decisions: one provider
for the whole process.

Asked by :class:`recovery.repository.store.Repository` for a passphrase when it opens (or
creates) an encrypted location, and by the network backends (sftp, smb, s3) when they connect:
a password, an SSH key file, whether to trust a new SSH host key, S3 keys. The default,
:class:`EnvironmentSecrets`, reads only the environment, so scripts and tests need nothing else.
Each front end implements :class:`Secrets` once and installs it with :func:`use`: the command
line asks on the terminal (:mod:`recovery.commands.secrets`), the TUI in masked dialogs
(:mod:`recovery.tui.secrets`).

Promises: a secret never comes from a command line; it is only ever returned to the code that
asked; nothing here prints, logs or stores it (:class:`S3Keys` hides its secret in ``repr``).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class S3Keys:
    """An S3 access key pair typed by the person (the environment's keys are read by the S3
    client library itself)."""

    access_key: str
    secret_key: str = field(repr=False)


class Secrets(Protocol):
    def passphrase(self, location: str, new: bool) -> str | None:
        """The encryption passphrase for ``location``; ``new``: for a location being created
        (a provider that asks should ask twice). None when there is none to give."""
        ...

    def password(self, location: str) -> str | None:
        """The password for ``location`` (SMB, SFTP, or an SSH key's passphrase), or None."""
        ...

    def identity(self, location: str) -> str | None:
        """An SSH private key file chosen by the person (``--identity``), or None."""
        ...

    def accept_host_key(self, host: str, key_type: str, fingerprint: str) -> bool:
        """Whether to trust (and remember) an SSH server key that known_hosts does not hold."""
        ...

    def s3_keys(self, location: str) -> S3Keys | None:
        """S3 keys given for ``location``; None leaves the S3 client's own search
        (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, then ``~/.aws/credentials``)."""
        ...


class EnvironmentSecrets:
    """Secrets from the environment only: ``RECOVERY_PASSPHRASE``, ``RECOVERY_PASSWORD``; a
    new SSH host key is accepted only with ``RECOVERY_ACCEPT_NEW_HOST_KEY=1`` (or
    ``accept_new_host_key``). Front ends that ask a person derive from it: the environment
    answers first, so a script behaves the same under every front end."""

    def __init__(self, identity_file: str | None = None, accept_new_host_key: bool = False):
        self.identity_file = identity_file
        self.accept_new = accept_new_host_key

    def passphrase(self, location: str, new: bool) -> str | None:
        return os.environ.get("RECOVERY_PASSPHRASE") or None

    def password(self, location: str) -> str | None:
        return os.environ.get("RECOVERY_PASSWORD") or None

    def identity(self, location: str) -> str | None:
        return self.identity_file

    def accept_host_key(self, host: str, key_type: str, fingerprint: str) -> bool:
        return self.accept_new or os.environ.get("RECOVERY_ACCEPT_NEW_HOST_KEY") == "1"

    def s3_keys(self, location: str) -> S3Keys | None:
        return None


_current: Secrets = EnvironmentSecrets()
_lock = threading.Lock()


def use(provider: Secrets) -> None:
    """Make ``provider`` the one asked from now on (by locations opened from now on)."""
    global _current
    with _lock:
        _current = provider


def current() -> Secrets:
    with _lock:
        return _current
