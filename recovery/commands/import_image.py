"""``recovery import DIR::IMAGEFOLDER --to REPO``: a Clonezilla image into one of ours."""

from __future__ import annotations

import argparse

from recovery.commands.reporting import print_json, progress_for
from recovery.core.refs import split_ref
from recovery.core.units import human_duration, human_size


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", metavar="DIR::IMAGE", help="a Clonezilla image folder in DIR")
    p.add_argument("--to", required=True, metavar="REPO", help="backup location to import into")
    p.add_argument("--name", help="image name (default: the Clonezilla folder's name)")
    p.add_argument("--level", type=int, default=3, help="zstd level, 1 (fast) to 19 (small)")
    p.add_argument("--json", action="store_true", help="JSON progress events and result")


def run(args: argparse.Namespace) -> int:
    from recovery.engine import clonezilla_import  # the whole engine: only when a command runs
    from recovery.engine.progress import CancelToken

    location, image = split_ref(args.ref)
    plan = clonezilla_import.plan_import(location, image, args.to, args.name, args.level)
    progress = progress_for(args.json)
    if not args.json:
        for line in plan.describe():
            print(line)
    try:
        result = clonezilla_import.run_import(plan, progress, CancelToken())
    finally:
        progress.close()
    if args.json:
        print_json(
            {
                "event": "result",
                "image": result.image.to_json(),
                "new_bytes": result.new_bytes,
                "seconds": round(result.seconds, 3),
            }
        )
    else:
        print(
            f"Imported '{image}' into {args.to} as '{result.image.name}': "
            f"{human_size(result.image.data_size)} of data, "
            f"{human_size(result.new_bytes)} added to the location, "
            f"in {human_duration(result.seconds)}."
        )
    return 0
