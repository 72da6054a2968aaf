"""The command line's credentials for network locations: ``--identity FILE``,
``--accept-new-host-key``, and questions on the terminal (no echo) when the environment gives no
password.

Called by :mod:`recovery.cli` (two lines: add the options, install the provider). Promises: a
secret is read from ``RECOVERY_PASSWORD`` or the terminal, never from the command line, and
handed only to the backend that asked (through
:func:`recovery.repository.credentials.use_credentials`); nothing here prints it.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from recovery.repository.credentials import EnvironmentCredentials, use_credentials

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


class TerminalCredentials(EnvironmentCredentials):
    """The environment first; then, on a terminal, ask (a password without echo)."""

    def password(self, location: str) -> str | None:
        given = super().password(location)
        if given is not None or not _interactive():
            return given
        return getpass.getpass(f"Password for {location} (not shown): ") or None

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


def _interactive() -> bool:
    return sys.stdin.isatty() and os.path.exists("/dev/tty")


def install(args: argparse.Namespace) -> None:
    """Make the command's credentials provider the one network backends ask."""
    identity = getattr(args, "identity", None)
    if identity:
        identity = os.path.abspath(identity)
    use_credentials(
        TerminalCredentials(identity, bool(getattr(args, "accept_new_host_key", False)))
    )
