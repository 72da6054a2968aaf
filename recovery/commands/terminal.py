"""The command line's :class:`recovery.repository.secrets.Secrets`: the environment first, then
questions on the terminal (no echo). Installed by :func:`recovery.commands.secrets.install`."""

from __future__ import annotations

import sys

from recovery.commands.secrets import ask_hidden, ask_new, interactive
from recovery.repository.secrets import EnvironmentSecrets


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
            typed = ask_hidden(f"Passphrase for {location}: ")
        else:
            typed = None
        if typed:
            self._passphrases[location] = typed
        return typed

    def password(self, location: str) -> str | None:
        given = super().password(location)
        if given is not None or not interactive():
            return given
        return ask_hidden(f"Password for {location} (not shown): ") or None

    def accept_host_key(self, host: str, key_type: str, fingerprint: str) -> bool:
        if super().accept_host_key(host, key_type, fingerprint):
            return True
        if not interactive():
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
