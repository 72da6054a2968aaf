"""``recovery passphrase REPO``, and where the CLI gets passphrases from.

:class:`TerminalSecrets` is the CLI's provider for :mod:`recovery.repository.secrets`: the
environment first (``RECOVERY_PASSPHRASE``), then the terminal without echo (twice for a new
location). A passphrase is asked once per location and process, never taken from arguments.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from recovery.errors import NotConfirmed, UsageError


def _ask(prompt: str) -> str:
    try:
        return getpass.getpass(prompt, stream=sys.stderr)
    except (EOFError, KeyboardInterrupt):
        raise NotConfirmed("no passphrase given: nothing was done") from None


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


class TerminalSecrets:
    def __init__(self) -> None:
        self._known: dict[str, str] = {}

    def passphrase(self, location: str, new: bool) -> str | None:
        given = os.environ.get("RECOVERY_PASSPHRASE") or self._known.get(location)
        if given:
            return given
        if new:
            typed = ask_new(location)
        elif sys.stdin.isatty():
            typed = _ask(f"Passphrase for {location}: ")
        else:
            typed = None
        if typed:
            self._known[location] = typed
        return typed


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("repo", metavar="REPO", help="an encrypted backup location")


def run(args: argparse.Namespace) -> int:
    from recovery.engine import api  # the whole engine: only when a command runs

    new = os.environ.get("RECOVERY_NEW_PASSPHRASE") or None
    if new is None:
        api.check_passphrase(args.repo)  # the old one first, so a wrong one is told at once
        new = ask_new(args.repo)
    if new is None:
        raise UsageError(
            "no new passphrase: set RECOVERY_NEW_PASSPHRASE, or run on a terminal to be asked"
        )
    api.change_passphrase(args.repo, new)
    print(f"The passphrase of {args.repo} was changed; the old one no longer opens it.")
    return 0
