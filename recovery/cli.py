"""The command line: argparse and ``main()``, the only place errors become exit codes.

``recovery`` with no arguments starts the TUI; each subcommand lives in
:mod:`recovery.commands` as a module with ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from recovery import __version__
from recovery.commands import secrets
from recovery.errors import RecoveryError, UsageError

# (name, module under recovery.commands, one-line help)
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("disks", "disks", "list the disks of this machine"),
    ("backup", "backup", "save disks or partitions as an image in a backup location"),
    ("images", "images", "list the images in a backup location"),
    ("verify", "verify", "re-read and check every byte of an image"),
    ("restore", "restore", "write an image onto a disk"),
    ("clone", "clone", "copy a disk, or only its system, straight to another disk"),
    ("remove", "remove", "delete an image and free the space only it used"),
)


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so main() owns every exit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="recovery",
        description="Image, restore and clone disks. With no command, starts the text UI.",
    )
    parser.add_argument("--version", action="version", version=f"recovery {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module, help_text in COMMANDS:
        mod = _command_module(module)
        if mod is None:
            continue
        p = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:])
        mod.add_arguments(p)
        if name in secrets.TAKES_LOCATION:
            secrets.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def _command_module(module: str):  # type: ignore[no-untyped-def]
    try:
        return importlib.import_module(f"recovery.commands.{module}")
    except ModuleNotFoundError as e:
        if e.name == f"recovery.commands.{module}":
            return None
        raise


def _start_tui(parser: argparse.ArgumentParser) -> int:
    try:
        from recovery.tui.app import run_app
    except ModuleNotFoundError:
        parser.print_help()
        return 0
    return run_app()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            return _start_tui(parser)
        secrets.install(args)
        result: int = args._run(args)
        return result
    except RecoveryError as e:
        print(f"recovery: {e.message}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("recovery: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into a program that stopped reading (e.g. `| head`).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
