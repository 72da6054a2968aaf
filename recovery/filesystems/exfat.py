"""exFAT: no used-block reader yet (imaged every byte); offered as a backup location.

Registered with :mod:`recovery.filesystems.base` so the location picker can mount it (USB
drives formatted for cameras and Windows often are exFAT).
"""

from __future__ import annotations

from recovery.filesystems.base import Kind, register_kind


class ExfatKind(Kind):
    mount_type = "exfat"


register_kind(ExfatKind("exfat"))
