"""Btrfs: no used-block reader yet (imaged every byte); offered as a backup location.

Registered with :mod:`recovery.filesystems.base` so the location picker can mount it read-only
without replaying its log tree (``nologreplay``: replaying writes even with ``ro``).
"""

from __future__ import annotations

from recovery.filesystems.base import Kind, register_kind


class BtrfsKind(Kind):
    mount_type = "btrfs"
    read_only_options = "ro,nologreplay"


register_kind(BtrfsKind("btrfs"))
