"""The command line: argparse and ``main()``, the only place errors become exit codes.

``recovery`` with no arguments starts the TUI; each subcommand lives in
:mod:`recovery.commands` as a module with ``add_arguments(parser)`` and ``run(args) -> int``,
and optionally ``early(args)``: what it starts as soon as its arguments are parsed, before the
secrets provider and the engine load (a file backup's read-ahead).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from types import ModuleType

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
    ("passphrase", "passphrase", "change the passphrase of an encrypted backup location"),
    ("import", "import_image", "turn a Clonezilla image into an image of a backup location"),
    ("export", "export", "write an image as a virtual disk file (raw, qcow2, vhdx, vmdk, vdi)"),
    ("open", "open", "show an image as read-only files in a folder, until 'close'"),
    ("close", "close", "close an image opened with 'open'"),
    ("extract", "extract", "copy files and folders out of an image"),
)


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so main() owns every exit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or with ``only`` one command's (its module alone is imported:
    a command's start-up counts, an unchanged file backup's most of all)."""
    parser = _Parser(
        prog="recovery",
        description="Image, restore and clone disks. With no command, starts the text UI.",
    )
    parser.add_argument("--version", action="version", version=f"recovery {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module, help_text in COMMANDS:
        if only is not None and name != only:
            continue
        mod = _command_module(name, module)
        p = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:])
        mod.add_arguments(p)
        if name in secrets.TAKES_LOCATION:
            secrets.add_arguments(p)
        p.set_defaults(_run=mod.run, _early=getattr(mod, "early", None))
    return parser


class IncompleteBuild(RecoveryError):
    """A part of the program is missing from this build: a packaging fault, not the input's."""


def _command_module(name: str, module: str) -> ModuleType:
    """The module behind a subcommand. Every command in COMMANDS ships: a missing one means a
    broken build, said plainly rather than the command silently vanishing from --help."""
    try:
        return importlib.import_module(f"recovery.commands.{module}")
    except ModuleNotFoundError as e:
        if e.name == f"recovery.commands.{module}":
            raise IncompleteBuild(
                f"this build lacks the '{name}' command (module {e.name} is missing): "
                "reinstall recovery or rebuild it"
            ) from e
        raise


def _start_tui() -> int:
    try:
        from recovery.tui.app import run_app
    except ModuleNotFoundError as e:
        if e.name is not None and (e.name == "textual" or e.name.startswith("recovery.tui")):
            raise IncompleteBuild(
                f"the text UI cannot start: {e.name} is missing from this build; use the "
                "commands instead (see 'recovery --help')"
            ) from e
        raise
    return run_app()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        words = list(sys.argv[1:] if argv is None else argv)
        named = words[0] if words and words[0] in {c[0] for c in COMMANDS} else None
        args = build_parser(named).parse_args(words)
        from recovery.devices.memory import tune_allocator

        tune_allocator()  # before any worker thread starts
        if args.command is None:
            return _start_tui()
        if args._early is not None:
            args._early(args)  # before anything else loads: see the command's ``early``
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
