"""The command line's secrets: ``--identity FILE``, ``--accept-new-host-key``, and questions on
the terminal (no echo) when the environment gives no passphrase or password.

Called by :mod:`recovery.cli` (add the options, install the provider).
:class:`recovery.commands.terminal.TerminalSecrets` is the CLI's one implementation of
:class:`recovery.repository.secrets.Secrets`: the environment first, then the terminal.
Promises: a secret is never read from the command line, is handed only to the code that asked,
is asked once per location and process, and is never printed.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from recovery.errors import NotConfirmed, UsageError

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


def ask_hidden(prompt: str) -> str:
    try:
        return getpass.getpass(prompt, stream=sys.stderr)
    except (EOFError, KeyboardInterrupt):
        raise NotConfirmed("nothing typed: nothing was done") from None


def ask_new(what: str) -> str | None:
    """A new passphrase, typed twice on the terminal; None without a terminal."""
    if not sys.stdin.isatty():
        return None
    first = ask_hidden(f"New passphrase for {what}: ")
    if not first:
        raise UsageError("an empty passphrase protects nothing: give one")
    if ask_hidden("The same passphrase again: ") != first:
        raise UsageError("the two passphrases differ: nothing was done; run it again")
    return first


def interactive() -> bool:
    return sys.stdin.isatty() and os.path.exists("/dev/tty")


def install(args: argparse.Namespace) -> None:
    """Make the command's provider the one the repository and the backends ask."""
    # Here, not at the top: the command line is parsed, and a command's early step started
    # (cli.main), before the repository's modules load.
    from recovery.commands.terminal import TerminalSecrets
    from recovery.repository import secrets

    identity = getattr(args, "identity", None)
    if identity:
        identity = os.path.abspath(identity)
    secrets.use(TerminalSecrets(identity, bool(getattr(args, "accept_new_host_key", False))))
