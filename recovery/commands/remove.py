"""``recovery remove REPO::IMAGE``."""

from __future__ import annotations

import argparse

from recovery.commands.reporting import confirm, print_json
from recovery.core.refs import split_ref
from recovery.core.units import human_size


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", metavar="REPO::IMAGE", help="the image to delete")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true", help="machine-readable result")


def run(args: argparse.Namespace) -> int:
    from recovery.engine import api  # the whole engine: only when a command runs

    repo, image = split_ref(args.ref)
    infos = {i.name: i for i in api.list_images(repo)}
    lines = [f"Remove image '{image}' from {repo}"]
    if image in infos:
        i = infos[image]
        lines.append(f"  taken {i.created} from {i.source_path}, {human_size(i.data_size)} of data")
    confirm(lines, "The image will be deleted.", args.yes, args.json)
    result = api.remove(repo, image)
    if args.json:
        print_json({"event": "result", "image": result.image, "freed_bytes": result.freed_bytes})
    else:
        print(f"Removed '{image}': {human_size(result.freed_bytes)} freed.")
    return 0
