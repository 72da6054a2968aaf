"""``recovery passphrase REPO``: change the passphrase of an encrypted backup location.

The old passphrase comes from the CLI's secrets provider (:mod:`recovery.commands.secrets`); the
new one from ``RECOVERY_NEW_PASSPHRASE`` or typed twice on the terminal, never from arguments.
"""

from __future__ import annotations

import argparse
import os

from recovery.commands.secrets import ask_new
from recovery.errors import UsageError


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
