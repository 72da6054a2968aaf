"""``recovery restore REPO::IMAGE TARGET``."""

from __future__ import annotations

import argparse

from recovery.commands.reporting import overwrite
from recovery.core.refs import split_ref
from recovery.core.units import human_duration, human_size
from recovery.errors import UsageError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", metavar="REPO::IMAGE", help="the image to restore")
    p.add_argument("target", metavar="TARGET", help="the whole disk to write (/dev/sdc)")
    p.add_argument(
        "--partitions",
        metavar="N,...",
        help="restore only these partitions into the target's existing table",
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="write every cell, even when the target already holds an earlier state of the "
        "same disk (by default only the cells that differ are written)",
    )
    p.add_argument(
        "--no-boot-entry",
        action="store_true",
        help="on a UEFI machine, do not add a firmware boot entry for the target's EFI system "
        "partition (added by default when no entry points at it)",
    )
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true", help="JSON progress events and result")


def parse_numbers(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        numbers = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise UsageError(f"--partitions takes numbers separated by commas, not '{text}'") from None
    if not numbers or min(numbers) < 1:
        raise UsageError("--partitions takes partition numbers from 1 up, e.g. --partitions 2,3")
    return numbers


def run(args: argparse.Namespace) -> int:
    from recovery.commands import peer_images
    from recovery.engine import api  # the whole engine: only when a command runs

    repo, image = split_ref(args.ref)
    if peer_images.is_clonezilla(repo, image):
        return peer_images.restore(args, repo, image)
    plan = api.restore_plan(
        repo,
        image,
        args.target,
        parse_numbers(args.partitions),
        full=args.full,
        boot_entry=not args.no_boot_entry,
    )
    assert isinstance(plan, api.RestorePlan)  # a Clonezilla image went to peer_images above
    return overwrite(
        args,
        plan,
        lambda progress: api.restore_run(plan, progress),
        lambda r: (
            f"Restored '{image}' to {args.target}: {human_size(r.written_bytes)} written "
            + (f"({human_size(r.matched_bytes)} already matched) " if r.matched_bytes else "")
            + f"in {human_duration(r.seconds)}"
        ),
    )
