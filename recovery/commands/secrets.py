"""The command line's secrets: ``--identity FILE``, ``--accept-new-host-key``, and questions on
the terminal (no echo) when the environment gives no passphrase or password.

Called by :mod:`recovery.cli` (add the options, install the provider). :class:`TerminalSecrets`
is the CLI's one implementation of :class:`recovery.repository.secrets.Secrets`: the environment
first, then the terminal. Promises: a secret is never read from the command line, is handed only
to the code that asked, is asked once per location and process, and is never printed.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from recovery.errors import NotConfirmed, UsageError
from recovery.repository import secrets
from recovery.repository.secrets import EnvironmentSecrets

TAKES_LOCATION = (
    "backup",
    "images",
    "verify",
    "restore",
    "remove",
    "passphrase",
    "open",
    "extract",
)
"""The commands whose REPO may be a network location."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--identity",
        metavar="FILE",
        help="SSH private key for an sftp:// location (default: ~/.ssh/id_*); a passphrase is "
        "read from RECOVERY_PASSWORD or asked",
    )
    p.add_argument(
        "--accept-new-host-key",
        action="store_true",
        help="trust an sftp:// server whose key is not yet in ~/.ssh/known_hosts (scripts; on a "
        "terminal you are asked)",
    )


def _ask(prompt: str) -> str:
    try:
        return getpass.getpass(prompt, stream=sys.stderr)
    except (EOFError, KeyboardInterrupt):
        raise NotConfirmed("nothing typed: nothing was done") from None


def ask_new(what: str) -> str | None:
    """A new passphrase, typed twice on the terminal; None without a terminal."""
    if not sys.stdin.isatty():
        return None
    first = _ask(f"New passphrase for {what}: ")
    if not first:
        raise UsageError("an empty passphrase protects nothing: give one")
    if _ask("The same passphrase again: ") != first:
        raise UsageError("the two passphrases differ: nothing was done; run it again")
    return first


def _interactive() -> bool:
    return sys.stdin.isatty() and os.path.exists("/dev/tty")


class TerminalSecrets(EnvironmentSecrets):
    """The environment first; then, on a terminal, ask (without echo)."""

    def __init__(self, identity_file: str | None = None, accept_new_host_key: bool = False):
        super().__init__(identity_file, accept_new_host_key)
        self._passphrases: dict[str, str] = {}

    def passphrase(self, location: str, new: bool) -> str | None:
        given = super().passphrase(location, new) or self._passphrases.get(location)
        if given:
            return given
        if new:
            typed = ask_new(location)
        elif sys.stdin.isatty():
            typed = _ask(f"Passphrase for {location}: ")
        else:
            typed = None
        if typed:
            self._passphrases[location] = typed
        return typed

    def password(self, location: str) -> str | None:
        given = super().password(location)
        if given is not None or not _interactive():
            return given
        return _ask(f"Password for {location} (not shown): ") or None

    def accept_host_key(self, host: str, key_type: str, fingerprint: str) -> bool:
        if super().accept_host_key(host, key_type, fingerprint):
            return True
        if not _interactive():
            return False
        print(
            f"The SSH server {host} is not known yet. Its {key_type} key fingerprint is\n"
            f"  {fingerprint}\nCompare it with the one the server's owner gives you.",
            file=sys.stderr,
        )
        try:
            with open("/dev/tty") as tty:
                print("Trust this server and remember it? [y/N] ", end="", file=sys.stderr)
                sys.stderr.flush()
                return tty.readline().strip().lower() in ("y", "yes")
        except OSError:
            return False


def install(args: argparse.Namespace) -> None:
    """Make the command's provider the one the repository and the backends ask."""
    identity = getattr(args, "identity", None)
    if identity:
        identity = os.path.abspath(identity)
    secrets.use(TerminalSecrets(identity, bool(getattr(args, "accept_new_host_key", False))))
