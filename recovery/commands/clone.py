"""``recovery clone SOURCE TARGET``."""

from __future__ import annotations

import argparse

from recovery.commands.reporting import overwrite, terminal_question
from recovery.core.units import human_duration, human_size


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SOURCE", help="the disk to copy (/dev/sda)")
    p.add_argument("target", metavar="TARGET", help="the disk to overwrite (/dev/sdb)")
    p.add_argument(
        "--system",
        action="store_true",
        help="copy only what the system needs to boot (EFI, BIOS boot, MSR, Windows and its "
        "recovery, Linux root and /boot); data partitions stay behind",
    )
    p.add_argument(
        "--new-ids",
        action="store_true",
        help="give the target new disk and partition GUIDs (MBR: a new disk signature) so both "
        "disks can stay attached. Boot entries that name a partition GUID (UEFI boot entries, "
        "Windows BCD on GPT, root=PARTUUID= kernel lines) must then be updated; entries that "
        "use file system UUIDs or labels keep working",
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="copy every used cell, even when the target already holds an earlier clone of "
        "this disk (by default only the cells that differ are written)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="copy partitions that are mounted read-write too (refused otherwise: the copy may "
        "be inconsistent; the plan and the result say so)",
    )
    p.add_argument(
        "--no-boot-entry",
        action="store_true",
        help="on a UEFI machine, do not add a firmware boot entry for the target's EFI system "
        "partition (added by default when no entry points at it)",
    )
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true", help="JSON progress events and result")


def run(args: argparse.Namespace) -> int:
    from recovery.engine import api  # the whole engine: only when a command runs

    plan = api.clone_plan(
        args.source,
        args.target,
        system=args.system,
        new_ids=args.new_ids,
        full=args.full,
        force=args.force,
        boot_entry=not args.no_boot_entry,
    )
    return overwrite(
        args,
        plan,
        lambda progress: api.clone_run(plan, progress, ask=terminal_question(args.yes)),
        lambda r: (
            f"Cloned {args.source} to {args.target}: {human_size(r.copied_bytes)} copied "
            f"and checked in {human_duration(r.seconds)}"
        ),
    )
