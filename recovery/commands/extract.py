"""``recovery extract REPO::IMAGE PATH... --to DIR``: files and folders out of an image."""

from __future__ import annotations

import argparse

from recovery.commands.reporting import print_json, progress_for
from recovery.core.refs import split_ref
from recovery.core.units import human_duration, human_size
from recovery.engine import api


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", metavar="REPO::IMAGE", help="the image to copy from")
    p.add_argument(
        "paths", metavar="PATH", nargs="+", help="what to copy: pN:/path (p2:/home/alice)"
    )
    p.add_argument("--to", required=True, metavar="DIR", help="the folder to copy into")
    p.add_argument(
        "--overwrite", action="store_true", help="replace files that already exist in DIR"
    )
    p.add_argument("--json", action="store_true", help="JSON progress events and result")


def run(args: argparse.Namespace) -> int:
    repo, image = split_ref(args.ref)
    plan = api.extract_plan(repo, image, args.paths, args.to, overwrite=args.overwrite)
    progress = progress_for(args.json)
    try:
        result = api.extract_run(plan, progress)
    finally:
        progress.close()
    if args.json:
        print_json({"event": "result", **result.to_json()})
    else:
        for line in result.copied:
            print(f"copied {line}")
        for note in result.notes:
            print(f"note: {note}")
        for problem in result.problems:
            print(f"not copied: {problem}")
        print(
            f"Copied {result.files} file(s), {result.folders} folder(s) and {result.links} "
            f"link(s), {human_size(result.bytes)}, in {human_duration(result.seconds)}"
            + ("." if result.ok else f"; {len(result.problems)} could not be read (see above).")
        )
    return 0 if result.ok else 7
