"""``recovery backup SOURCE... --to REPO``."""

from __future__ import annotations

import argparse
import os
import sys

from recovery.commands.reporting import print_json, progress_for, terminal_question
from recovery.core.excludes import Excludes
from recovery.core.units import human_duration, human_size
from recovery.devices import readahead
from recovery.devices.readahead import ReadAhead


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="a whole disk (/dev/sdb) or partitions of one disk (/dev/sdb1 /dev/sdb3); with "
        "--files: a partition (/dev/sda3), a folder in one (/dev/sda3:/Users/alice) or a folder "
        "of this system",
    )
    p.add_argument(
        "--files",
        action="store_true",
        help="save files and folders (a file image), not partitions",
    )
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="with --files: leave out what matches (*.tmp, node_modules/, /Users/*/AppData); "
        "repeat for more",
    )
    p.add_argument(
        "--preset",
        choices=["user-data"],
        help="with --files: the usual user folders of a Windows or Linux system, without caches",
    )
    p.add_argument(
        "--to",
        required=True,
        metavar="REPO",
        help="backup location: a folder (made into one when missing or empty)",
    )
    p.add_argument("--name", help="image name (default: the disk's name and the date)")
    p.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="when another recovery is writing to the location (another machine backing up to "
        "the same share or bucket), wait up to SECONDS for it instead of refusing at once",
    )
    p.add_argument(
        "--system",
        action="store_true",
        help="only the partitions the system needs to boot (EFI, Windows, Linux root)",
    )
    p.add_argument("--level", type=int, default=3, help="zstd level, 1 (fast) to 19 (small)")
    p.add_argument(
        "--keep-system-files",
        action="store_true",
        help="also store the contents of Windows' pagefile.sys, swapfile.sys and hiberfil.sys "
        "(left out by default: Windows recreates them)",
    )
    p.add_argument(
        "--encrypt",
        action="store_true",
        help="create the new location encrypted (passphrase from RECOVERY_PASSPHRASE or asked)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="image partitions that are mounted read-write too (refused otherwise: files being "
        "written may be inconsistent in the image; the plan and the image say so)",
    )
    p.add_argument("--yes", action="store_true", help="do not ask (backup never writes to SOURCE)")
    p.add_argument("--json", action="store_true", help="JSON progress events and result")


def _wait_for_writers(args: argparse.Namespace) -> None:
    from recovery.engine import api

    if args.wait > 0:
        api.wait_for_writers(args.wait, lambda line: print(line, file=sys.stderr, flush=True))


def run(args: argparse.Namespace) -> int:
    if args.files:
        return _run_files(args)
    _wait_for_writers(args)

    if args.exclude or args.preset:
        from recovery.errors import UsageError

        raise UsageError("--exclude and --preset go with --files (a backup of files)")

    from recovery.engine import vdisk  # ctypes: not for a file backup, whose start-up counts

    if len(args.sources) == 1 and vdisk.is_virtual_disk(args.sources[0]):
        # A virtual disk file: back up the disk inside it, through a read-only loop device.
        file = args.sources[0]
        with vdisk.attached(file) as dev:
            return _run(args, [dev], file)
    return _run(args, args.sources)


def _run(args: argparse.Namespace, sources: list[str], vdisk_file: str | None = None) -> int:
    from recovery.engine import api, vdisk  # the whole engine: only when a command runs

    name = args.name
    if name is None and vdisk_file is not None:
        name = vdisk.default_name(vdisk_file)
    plan = api.backup_plan(
        sources,
        args.to,
        name=name,
        level=args.level,
        system=args.system,
        keep_system_files=args.keep_system_files,
        encrypt=args.encrypt,
        force=args.force,
    )
    if vdisk_file is not None:
        plan.source.identity["model"] = f"virtual disk {os.path.basename(vdisk_file)}"
    progress = progress_for(args.json)
    if not args.json:
        for line in plan.describe():
            print(line)
    try:
        result = api.backup_run(plan, progress, ask=terminal_question(args.yes))
    finally:
        progress.close()
    if args.json:
        print_json(
            {
                "event": "result",
                "image": result.image.to_json(),
                "new_bytes": result.new_bytes,
                "seconds": round(result.seconds, 3),
                "notes": list(result.notes),
                "unreadable": list(result.unreadable),
            }
        )
    else:
        print(
            f"Saved image '{result.image.name}' in {args.to}: "
            f"{human_size(result.image.data_size)} of data, "
            f"{human_size(result.new_bytes)} added to the location, "
            f"in {human_duration(result.seconds)}."
        )
    return 0


def _read_ahead(args: argparse.Namespace) -> ReadAhead:
    """Start reading the chosen folders' metadata while the engine loads (devices/readahead):
    folders of this machine only (a partition is mounted by the plan first), and not with a
    preset, which chooses folders inside them."""
    folders = [os.path.abspath(s) for s in args.sources if os.path.isdir(s)]
    if args.preset or len(folders) != len(args.sources):
        return readahead.start([])
    excludes = Excludes(args.exclude or [], case_insensitive=False)
    location = os.path.abspath(args.to) if "://" not in args.to else None

    def excluded(path: str, is_folder: bool) -> bool:
        if location is not None and (path == location or path.startswith(location + "/")):
            return True
        return excludes.excluded(path, is_folder)

    return readahead.start(folders, excluded)


def early(args: argparse.Namespace) -> None:
    """Called by cli.main as soon as the arguments are parsed: a file backup starts reading its
    folders' metadata ahead while everything else loads."""
    if args.files:
        args.read_ahead = _read_ahead(args)


def _run_files(args: argparse.Namespace) -> int:
    ahead: ReadAhead = getattr(args, "read_ahead", None) or _read_ahead(args)
    try:
        if args.system or args.keep_system_files:
            from recovery.errors import UsageError

            raise UsageError("--system and --keep-system-files are for disk images, not --files")
        _wait_for_writers(args)
        from recovery.engine import api

        plan = api.file_backup_plan(
            args.sources,
            args.to,
            name=args.name,
            excludes=args.exclude,
            preset=args.preset,
            level=args.level,
            encrypt=args.encrypt,
        )
    finally:
        ahead.stop()
    progress = progress_for(args.json)
    if not args.json:
        for line in plan.describe():
            print(line)
    try:
        result = api.file_backup_run(plan, progress)
    finally:
        progress.close()
    if args.json:
        print_json({"event": "result", **result.to_json(), "seconds": round(result.seconds, 3)})
    else:
        for line in result.skipped:
            print(f"not saved: {line}")
        print(
            f"Saved file image '{result.image.name}' in {args.to}: {result.files} file(s), "
            f"{human_size(result.total_bytes)} ({result.reused_files} unchanged, "
            f"{human_size(result.read_bytes)} read), {human_size(result.new_bytes)} added to "
            f"the location, in {human_duration(result.seconds)}"
            + (f"; {len(result.skipped)} could not be read (see above)." if result.skipped else ".")
        )
    return 7 if result.skipped else 0
