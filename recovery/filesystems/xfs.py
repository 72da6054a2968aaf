"""XFS: no used-block reader yet (imaged every byte); offered as a backup location.

Registered with :mod:`recovery.filesystems.base` so the location picker can mount it read-only
without log recovery (``norecovery``: replaying the log writes even with ``ro``).
"""

from __future__ import annotations

from recovery.filesystems.base import Kind, register_kind


class XfsKind(Kind):
    mount_type = "xfs"
    read_only_options = "ro,norecovery"


register_kind(XfsKind("xfs"))
