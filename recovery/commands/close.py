"""``recovery close DIR``: end what ``recovery open`` started there."""

from __future__ import annotations

import argparse

from recovery.engine import api


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="the folder an image was opened in")


def run(args: argparse.Namespace) -> int:
    problems = api.close_image(args.dir)
    for line in problems:
        print(f"recovery: {line}")
    if problems:
        return 4
    print(f"Closed {args.dir}.")
    return 0
