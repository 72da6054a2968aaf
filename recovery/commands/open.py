"""``recovery open REPO::IMAGE DIR``: the image as read-only files, until ``recovery close``."""

from __future__ import annotations

import argparse

from recovery.commands.reporting import print_json
from recovery.core.refs import split_ref
from recovery.engine import api


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", metavar="REPO::IMAGE", help="the image to open")
    p.add_argument("dir", metavar="DIR", help="an empty folder to show it in")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    repo, image = split_ref(args.ref)
    result = api.open_image(repo, image, args.dir)
    if args.json:
        print_json({"event": "result", **result.to_json()})
        return 0
    print(f"Image '{image}' is open at {result.dir} (read-only):")
    for name in result.files:
        print(f"  {result.dir}/{name}")
    for p in result.partitions:
        if p["mounted"]:
            print(f"  {p['mounted']}/  ({p['fstype']})")
        else:
            print(f"  p{p['number']}: not mounted: {p['reason']}")
    print(f"Close it with: recovery close {result.dir}")
    return 0
