"""What an LVM2 physical volume holds, for ``recovery disks`` and the TUI: plain data.

Read with the reader of :mod:`recovery.filesystems.lvm` (the PV label and the volume group's
metadata, then each linear volume's file system), so it works with nothing activated. A volume
is *active* when a device-mapper device of its name exists (``/sys/block/dm-*/dm/name``): it is
in use, like a mounted partition.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recovery.errors import FileSystemError
from recovery.filesystems.base import FileSource, open_filesystem
from recovery.filesystems.lvm import Lvm2


@dataclass(frozen=True)
class LogicalVolumeInfo:
    name: str
    size: int
    kind: str
    """LVM's segment type ("striped" for linear and striped volumes, "thin-pool", ...)."""
    fstype: str | None
    label: str | None
    uuid: str | None
    active: bool

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class VolumeGroupInfo:
    name: str
    extent_size: int
    volumes: tuple[LogicalVolumeInfo, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "extent_size": self.extent_size,
            "volumes": [v.to_json() for v in self.volumes],
        }


def _active_mappings() -> set[str]:
    names = set()
    for dm in Path("/sys/block").glob("dm-*"):
        with contextlib.suppress(OSError):
            names.add((dm / "dm" / "name").read_text().strip())
    return names


def _mapping_name(vg: str, lv: str) -> str:
    return f"{vg.replace('-', '--')}-{lv.replace('-', '--')}"


def volume_group(path: str, size: int) -> VolumeGroupInfo | None:
    """The volume group on the PV at ``path`` (``size`` bytes), or None when it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        pv = open_filesystem(FileSource(fd, 0, size), "LVM2_member")
        if not isinstance(pv, Lvm2):
            return None
        active = _active_mappings()
        volumes = []
        for lv in pv.vg.volumes:
            fs = pv.volume_filesystem(lv)
            volumes.append(
                LogicalVolumeInfo(
                    name=lv.name,
                    size=lv.size,
                    kind=lv.kind,
                    fstype=fs.name if fs is not None else None,
                    label=fs.geometry.label if fs is not None else None,
                    uuid=fs.geometry.uuid if fs is not None else None,
                    active=_mapping_name(pv.vg.name, lv.name) in active,
                )
            )
        return VolumeGroupInfo(pv.vg.name, pv.vg.extent_size, tuple(volumes))
    except FileSystemError:
        return None
    finally:
        os.close(fd)
