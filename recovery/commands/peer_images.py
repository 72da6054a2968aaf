"""The Clonezilla side of ``images``, ``restore`` and ``verify`` (not a command itself).

A location may hold our repository, Clonezilla image folders, or both (a folder with a
``recovery-repo`` file next to Clonezilla's image folders). The commands call here when
``REPO::IMAGE`` names a Clonezilla image folder, so the engine's own paths stay as they are.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, cast

from recovery.commands.reporting import overwrite
from recovery.core.units import human_duration, human_size
from recovery.errors import ImageNotFound
from recovery.peers.clonezilla import image_folders, is_clonezilla_ref
from recovery.repository.store import is_repository

if TYPE_CHECKING:
    from recovery.engine.plans import ImageInfo, VerifyResult
    from recovery.engine.progress import Progress


def is_clonezilla(location: str, image: str) -> bool:
    """Whether ``location::image`` is a Clonezilla image; ImageNotFound when ``location`` holds
    only Clonezilla images and none is called ``image``."""
    if is_clonezilla_ref(location, image):
        return True
    if "://" in location or is_repository(location):
        return False
    names = [p.name for p in image_folders(Path(location))]
    if names:
        raise ImageNotFound(
            f"no image '{image}' in {location} (Clonezilla images here: {', '.join(names)})"
        )
    return False


def list_images(location: str) -> list[ImageInfo]:
    """Our images and the Clonezilla images at ``location``; ours first."""
    from recovery.engine import api

    return api.list_images(location)


def verify(location: str, image: str, progress: Progress) -> VerifyResult:
    from recovery.engine import clonezilla
    from recovery.engine.progress import CancelToken

    return clonezilla.verify_image(location, image, progress, CancelToken())


def restore(args: argparse.Namespace, location: str, image: str) -> int:
    if args.partitions is not None:
        from recovery.errors import UsageError

        raise UsageError("--partitions is not available for Clonezilla images: restore the disk")
    from recovery.engine import clonezilla
    from recovery.engine.plans import RestorePlan
    from recovery.engine.progress import CancelToken

    plan = clonezilla.plan_restore(location, image, args.target)
    return overwrite(
        args,
        # overwrite() only shows describe() of the plan; a Clonezilla plan has the same.
        cast(RestorePlan, plan),
        lambda progress: clonezilla.run_restore(plan, progress, CancelToken()),
        lambda r: (
            f"Restored Clonezilla image '{image}' to {args.target}: "
            f"{human_size(r.written_bytes)} written in {human_duration(r.seconds)}"
        ),
    )
