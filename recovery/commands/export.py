"""``recovery export REPO::IMAGE FILE [--format raw|qcow2|vhdx|vmdk|vdi]``."""

from __future__ import annotations

import argparse

from recovery.commands.reporting import print_json, progress_for
from recovery.core.refs import split_ref
from recovery.core.units import human_duration, human_size

FORMATS = ("raw", "qcow2", "vhdx", "vmdk", "vdi")
"""engine.vdisk.FORMATS, repeated so that --help does not load the engine."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", metavar="REPO::IMAGE", help="the image to export")
    p.add_argument("file", metavar="FILE", help="the virtual disk file to write (new)")
    p.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="file format (default: from FILE's extension, else qcow2)",
    )
    p.add_argument("--json", action="store_true", help="JSON progress events and result")


def run(args: argparse.Namespace) -> int:
    from recovery.engine import vdisk  # the whole engine: only when a command runs
    from recovery.engine.progress import CancelToken

    repo, image = split_ref(args.ref)
    fmt = args.format
    if fmt is None:
        ext = args.file.rpartition(".")[2].lower()
        fmt = ext if ext in FORMATS else "raw" if ext == "img" else "qcow2"
    progress = progress_for(args.json)
    try:
        r = vdisk.export_image(repo, image, args.file, fmt, progress, CancelToken())
    finally:
        progress.close()
    if args.json:
        print_json({"event": "result", **r.to_json()})
    else:
        print(
            f"Exported '{image}' to {args.file} ({fmt}): a {human_size(r.disk_size)} disk, "
            f"{human_size(r.file_bytes)} on disk, in {human_duration(r.seconds)}."
        )
    return 0
