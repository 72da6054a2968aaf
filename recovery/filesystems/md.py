"""Linux md RAID members: recognised and described, imaged whole (issue 16, part 6).

Called through the registry of :mod:`recovery.filesystems.base` for a partition blkid calls
``linux_raid_member``. The reader finds the member's superblock (version 1.1 at the start, 1.2
at 4 KiB, 1.0 and 0.90 near the end), checks its magic and version, and reports the array: its
name or UUID, RAID level, number of devices. A member is stored whole (every byte, less its
all-zero areas) with a note naming the array: restoring it gives back that member, and the
array rebuilds the others from it.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from recovery.core.extents import Extent
from recovery.errors import DamagedFileSystem, NotThisFileSystem
from recovery.filesystems.base import (
    BlockSource,
    FileSystem,
    Geometry,
    Kind,
    register,
    register_kind,
)

MAGIC = 0xA92B4EFC
LEVELS = {-4: "multipath", -1: "linear", 0: "raid0", 1: "raid1", 4: "raid4", 5: "raid5"}
LEVELS |= {6: "raid6", 10: "raid10"}


@dataclass(frozen=True)
class Array:
    version: str
    uuid: str
    name: str | None
    level: str
    raid_disks: int


def _v1(data: bytes, version: str) -> Array:
    level, _, _, _, raid_disks = struct.unpack_from("<iIQII", data, 72)
    if not 0 < raid_disks <= 4096:
        raise DamagedFileSystem(f"md superblock {version}: {raid_disks} devices")
    name = data[32:64].split(b"\0", 1)[0].decode("utf-8", "replace") or None
    return Array(version, str(uuid.UUID(bytes=data[16:32])), name, _level(level), raid_disks)


def _v090(data: bytes) -> Array:
    uuid0, _, level, _, _, raid_disks = struct.unpack_from("<IIiIII", data, 20)
    if not 0 < raid_disks <= 27:
        raise DamagedFileSystem(f"md superblock 0.90: {raid_disks} devices")
    rest = struct.unpack_from("<III", data, 52)  # set_uuid1..3 (words 13-15)
    u = uuid.UUID(bytes=struct.pack("<IIII", uuid0, *rest))
    return Array("0.90", str(u), None, _level(level), raid_disks)


def _level(level: int) -> str:
    return LEVELS.get(level, f"level {level}")


def find_array(source: BlockSource) -> Array:
    """The array a member belongs to, from whichever superblock version it carries."""
    size = source.size
    places = [(0, "1.1"), (4096, "1.2")]
    if size >= 8192:
        places.append(((size - 8192) & ~4095, "1.0"))
    if size >= 65536:
        places.append((((size & ~65535) - 65536), "0.90"))
    for offset, version in places:
        data = source.pread(offset, 256)
        if len(data) < 256 or int.from_bytes(data[:4], "little") != MAGIC:
            continue
        major = int.from_bytes(data[4:8], "little")
        if version == "0.90" and major == 0:
            return _v090(data)
        if version != "0.90" and major == 1:
            return _v1(data, version)
    raise NotThisFileSystem("no md superblock")


@register
class MdMember(FileSystem):
    name = "linux_raid_member"

    def __init__(self, source: BlockSource, geometry: Geometry, array: Array) -> None:
        super().__init__(source, geometry)
        self.array = array

    @classmethod
    def open(cls, source: BlockSource) -> MdMember:
        array = find_array(source)
        what = array.name or array.uuid
        note = (
            f"member of md array {what} ({array.level}, {array.raid_disks} devices, superblock "
            f"{array.version}): imaged whole; the array rebuilds its other members from it"
        )
        geometry = Geometry(
            block_size=4096, fs_size=source.size, label=array.name, uuid=array.uuid, notes=(note,)
        )
        return cls(source, geometry, array)

    def used_extents(self) -> Iterator[Extent]:
        return iter([Extent(0, self.source.size)])


register_kind(Kind("linux_raid_member"))
