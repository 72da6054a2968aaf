"""``recovery verify REPO::IMAGE``."""

from __future__ import annotations

import argparse

from recovery.commands.reporting import print_json, progress_for
from recovery.core.refs import split_ref
from recovery.core.units import human_size


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", metavar="REPO::IMAGE", help="the image to check")
    p.add_argument("--json", action="store_true", help="JSON progress events and result")


def run(args: argparse.Namespace) -> int:
    from recovery.engine import api  # the whole engine: only when a command runs

    repo, image = split_ref(args.ref)
    progress = progress_for(args.json)
    try:
        result = api.verify(repo, image, progress)
    finally:
        progress.close()
    if args.json:
        print_json(
            {
                "event": "result",
                "image": result.image,
                "ok": result.ok,
                "checked_bytes": result.checked_bytes,
                "problems": list(result.problems),
            }
        )
    elif result.ok:
        print(f"Image '{image}' is intact: {human_size(result.checked_bytes)} checked.")
    else:
        for p in result.problems:
            print(f"damaged: {p}")
        print(
            f"Image '{image}' is damaged in {len(result.problems)} place(s); restoring it "
            "would stop at the first. Use another image, or take a new backup."
        )
    return 0 if result.ok else 7
