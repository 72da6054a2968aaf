"""``recovery images REPO``."""

from __future__ import annotations

import argparse

from recovery.commands.reporting import print_json
from recovery.core.units import human_size


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("repo", metavar="REPO", help="backup location (a folder)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    from recovery.commands import peer_images  # the whole engine: only when a command runs

    images = peer_images.list_images(args.repo)
    if args.json:
        print_json({"images": [i.to_json() for i in images]})
        return 0
    if not images:
        print(f"No images in {args.repo}.")
        return 0
    print(f"{'IMAGE':<32} {'CREATED':<20} {'SOURCE':<14} {'DATA':>10} {'STORED':>10}  STATUS")
    for i in images:
        status = i.status if i.status != "verified" else f"verified {i.verified_at}"
        print(
            f"{i.name:<32} {i.created:<20} {i.source_path:<14} "
            f"{human_size(i.data_size):>10} {human_size(i.stored_size):>10}  {status}"
        )
        if i.kind == "files":
            print(f"    files: {i.files} file(s), {human_size(i.data_size)}")
        for p in i.partitions:
            print(
                f"    partition {p.number}: {p.fstype or 'unknown'} {p.label or ''} "
                f"{human_size(p.size)}, {human_size(p.stored)} stored"
            )
    return 0
