"""Naming an image on the command line: ``REPO::IMAGE``."""

from __future__ import annotations

from recovery.errors import UsageError


def split_ref(ref: str) -> tuple[str, str]:
    """``REPO::IMAGE`` -> (REPO, IMAGE)."""
    repo, sep, image = ref.rpartition("::")
    if not sep or not repo or not image:
        raise UsageError(f"'{ref}' does not name an image: write REPO::IMAGE, e.g. /mnt/usb::sda-1")
    return repo, image
