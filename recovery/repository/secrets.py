"""Where the repository gets a passphrase from: one provider for the whole process.

The repository asks :func:`current` when it opens an encrypted location (or creates one); the
CLI installs a provider that also asks on the terminal, the TUI one that shows a masked dialog
(:func:`use`). The default reads only the environment (``RECOVERY_PASSPHRASE``), so scripts and
tests need nothing else. A passphrase never comes from a command line.
"""

from __future__ import annotations

import os
from typing import Protocol


class Secrets(Protocol):
    def passphrase(self, location: str, new: bool) -> str | None:
        """The passphrase for ``location``; ``new``: for a location being created (a
        provider that asks should ask twice). None when there is none to give."""
        ...


class EnvironmentSecrets:
    def passphrase(self, location: str, new: bool) -> str | None:
        return os.environ.get("RECOVERY_PASSPHRASE") or None


_current: Secrets = EnvironmentSecrets()


def use(provider: Secrets) -> None:
    global _current
    _current = provider


def current() -> Secrets:
    return _current
