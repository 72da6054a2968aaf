"""Btrfs: the used blocks, read from the chunk tree and the extent tree (one device).

Called through the registry of :mod:`recovery.filesystems.base` by the imaging engine. It
promises the byte ranges, relative to the partition start, that a restore must write for the
file system to come back whole:

- the first MiB (boot loader area and the primary superblock at 64 KiB) and the superblock
  mirrors at 64 MiB and 256 GiB that lie inside the device;
- for every chunk (the chunk tree maps logical addresses to device ranges, "stripes"), the
  device bytes of every allocated extent that the extent tree lists inside it: data extents
  (``EXTENT_ITEM``) and tree blocks (``METADATA_ITEM``, or ``EXTENT_ITEM`` without the
  skinny-metadata feature). A chunk's space that holds no extent is unused, however large.

Profiles ``single`` and ``DUP`` (both copies) map extent by extent. Any other profile on this
device, a file system that was not unmounted cleanly (a log tree waiting to be replayed: its
blocks and the data they name are not in the extent tree yet) and the extent tree version 2
fall back to whole chunks, with a note. A file system spread over several devices is imaged
whole, with a note: its chunks are not all on this partition.

Trees are walked from the root down; every block read must carry its own address, this file
system's id, the level its parent promised, and keys in order; item data must stay inside its
block. Extents come out in device order, chunk stripe by chunk stripe, with one tree path in
memory at a time. Anything inconsistent raises :class:`DamagedFileSystem` naming the field;
something that is not a btrfs superblock raises :class:`NotThisFileSystem`. Checksums are not
verified (structure is); ``btrfs check`` is the tool for that.

The home of btrfs for the rest of the engine too (:class:`BtrfsKind`): checked with
``btrfs check --readonly``, mounted read-only without replaying its log (``nologreplay``), grown
with ``btrfs filesystem resize max`` while mounted on a private folder.
"""

from __future__ import annotations

import heapq
import itertools
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from recovery.core.extents import Extent, merge
from recovery.devices import tools
from recovery.devices.tools import Need
from recovery.errors import DamagedFileSystem, NotThisFileSystem
from recovery.filesystems.base import (
    BlockSource,
    FileSystem,
    Geometry,
    MountedKind,
    Step,
    damaged,
    power_of_two,
    read_exact,
    register,
    register_kind,
    result_line,
)

MiB = 1 << 20
SUPER_OFFSET = 0x10000
SUPER_SIZE = 4096
MIRRORS = (SUPER_OFFSET, 64 * MiB, 256 << 30)
MAGIC = b"_BHRfS_M"
HEADER = 101
LEAF_ITEM = 25
KEY_PTR = 33
MAX_LEVEL = 8

CHUNK_ITEM = 228
ROOT_ITEM = 132
EXTENT_ITEM = 168
METADATA_ITEM = 169
EXTENT_TREE_OBJECTID = 2

PROFILE_RAID0 = 1 << 3
PROFILE_RAID1 = 1 << 4
PROFILE_DUP = 1 << 5
PROFILE_RAID10 = 1 << 6
PROFILE_RAID5 = 1 << 7
PROFILE_RAID6 = 1 << 8
PROFILE_RAID1C3 = 1 << 9
PROFILE_RAID1C4 = 1 << 10
PROFILES = (
    PROFILE_RAID0
    | PROFILE_RAID1
    | PROFILE_DUP
    | PROFILE_RAID10
    | PROFILE_RAID5
    | PROFILE_RAID6
    | PROFILE_RAID1C3
    | PROFILE_RAID1C4
)

INCOMPAT_METADATA_UUID = 1 << 10
INCOMPAT_EXTENT_TREE_V2 = 1 << 13

_KEY = struct.Struct("<QBQ")
_ITEM = struct.Struct("<QBQII")  # key, data offset, data size
_KEY_PTR = struct.Struct("<QBQQQ")  # key, block pointer, generation
_NODE_HEADER = struct.Struct("<32x16sQ8x16sQQIB")  # fsid, bytenr, tree uuid, gen, owner, n, level
_CHUNK = struct.Struct("<QQQQIIIHH")
_STRIPE = struct.Struct("<QQ16s")


class Superblock(NamedTuple):
    fsid: bytes
    bytenr: int
    generation: int
    root: int
    chunk_root: int
    log_root: int
    total_bytes: int
    bytes_used: int
    num_devices: int
    sector_size: int
    node_size: int
    sys_chunk_array_size: int
    incompat: int
    root_level: int
    chunk_root_level: int
    devid: int
    dev_total_bytes: int
    dev_uuid: bytes
    label: bytes
    metadata_uuid: bytes


_SB = struct.Struct(
    "<"
    "32x"  # 0x00 csum
    "16s"  # 0x20 fsid
    "Q"  # 0x30 bytenr
    "8x"  # 0x38 flags
    "8x"  # 0x40 magic (checked before)
    "Q"  # 0x48 generation
    "Q"  # 0x50 root
    "Q"  # 0x58 chunk_root
    "Q"  # 0x60 log_root
    "8x"  # 0x68 log_root_transid
    "Q"  # 0x70 total_bytes
    "Q"  # 0x78 bytes_used
    "8x"  # 0x80 root_dir_objectid
    "Q"  # 0x88 num_devices
    "I"  # 0x90 sectorsize
    "I"  # 0x94 nodesize
    "4x"  # 0x98 leafsize
    "4x"  # 0x9c stripesize
    "I"  # 0xa0 sys_chunk_array_size
    "8x"  # 0xa4 chunk_root_generation
    "8x"  # 0xac compat_flags
    "8x"  # 0xb4 compat_ro_flags
    "Q"  # 0xbc incompat_flags
    "2x"  # 0xc4 csum_type
    "B"  # 0xc6 root_level
    "B"  # 0xc7 chunk_root_level
    "x"  # 0xc8 log_root_level
    # 0xc9 dev_item
    "Q"  # devid
    "Q"  # total_bytes
    "8x"  # bytes_used
    "12x"  # io_align, io_width, sector_size
    "8x"  # type
    "8x"  # generation
    "8x"  # start_offset
    "4x"  # dev_group
    "2x"  # seek_speed, bandwidth
    "16s"  # uuid
    "16x"  # fsid
    "256s"  # 0x12b label
    "8x"  # 0x22b cache_generation
    "8x"  # 0x233 uuid_tree_generation
    "16s"  # 0x23b metadata_uuid
)
SYS_CHUNK_ARRAY = 0x32B
SYS_CHUNK_ARRAY_MAX = 2048


@dataclass(frozen=True)
class Chunk:
    logical: int
    length: int
    flags: int
    stripes: tuple[tuple[int, int], ...]
    """(devid, device offset) of each stripe."""

    @property
    def stripe_length(self) -> int:
        """Device bytes each stripe of the chunk covers."""
        n = len(self.stripes)
        if self.flags & PROFILE_RAID0:
            return self.length // n
        if self.flags & PROFILE_RAID10:
            return self.length // max(1, n // 2)
        if self.flags & PROFILE_RAID5:
            return self.length // max(1, n - 1)
        if self.flags & PROFILE_RAID6:
            return self.length // max(1, n - 2)
        return self.length

    @property
    def maps_directly(self) -> bool:
        """Each stripe is a full copy (single, DUP, RAID1*): logical offset = stripe offset."""
        return not self.flags & (PROFILE_RAID0 | PROFILE_RAID10 | PROFILE_RAID5 | PROFILE_RAID6)


def _damaged(what: str) -> DamagedFileSystem:
    return damaged("btrfs", what, "btrfs check --readonly")


def _read(source: BlockSource, offset: int, length: int, what: str) -> bytes:
    return read_exact(source, offset, length, what, "btrfs", "btrfs check --readonly")


def parse_chunk(logical: int, data: bytes, where: str) -> Chunk:
    """One chunk item's data (the sys_chunk_array and the chunk tree share the format)."""
    if len(data) < _CHUNK.size:
        raise _damaged(f"{where}: chunk item of {len(data)} bytes")
    length, _owner, _stripe_len, flags, _, _, _, num_stripes, _ = _CHUNK.unpack_from(data)
    if num_stripes == 0 or len(data) < _CHUNK.size + num_stripes * _STRIPE.size:
        raise _damaged(f"{where}: chunk at {logical} with {num_stripes} stripes")
    if length == 0 or logical + length > 1 << 64:
        raise _damaged(f"{where}: chunk at {logical} of {length} bytes")
    stripes = tuple(
        _STRIPE.unpack_from(data, _CHUNK.size + i * _STRIPE.size)[:2] for i in range(num_stripes)
    )
    return Chunk(logical, length, flags, stripes)


@register
class Btrfs(FileSystem):
    name = "btrfs"

    def __init__(self, source: BlockSource, geometry: Geometry, sb: Superblock) -> None:
        super().__init__(source, geometry)
        self.sb = sb
        self.chunks: list[Chunk] = []
        self.fallback: str | None = None
        """Why extents cannot be mapped one by one (then whole chunks are used)."""

    @classmethod
    def open(cls, source: BlockSource) -> Btrfs:
        raw = source.pread(SUPER_OFFSET, SUPER_SIZE)
        if len(raw) < SUPER_SIZE or raw[0x40:0x48] != MAGIC:
            raise NotThisFileSystem("no btrfs superblock")
        sb = Superblock(*_SB.unpack_from(raw))
        if sb.bytenr != SUPER_OFFSET:
            raise _damaged(f"the superblock says it lies at byte {sb.bytenr}")
        if not power_of_two(sb.sector_size, 4096, 65536):
            raise _damaged(f"sector size {sb.sector_size}")
        if not power_of_two(sb.node_size, sb.sector_size, 65536):
            raise _damaged(f"node size {sb.node_size}")
        if not 0 < sb.sys_chunk_array_size <= SYS_CHUNK_ARRAY_MAX:
            raise _damaged(f"system chunk array of {sb.sys_chunk_array_size} bytes")
        if sb.num_devices == 0:
            raise _damaged("zero devices")
        if sb.root_level > MAX_LEVEL or sb.chunk_root_level > MAX_LEVEL:
            raise _damaged(f"tree levels {sb.root_level}, {sb.chunk_root_level}")
        if not SUPER_OFFSET + SUPER_SIZE <= sb.dev_total_bytes <= sb.total_bytes:
            raise _damaged(f"device size {sb.dev_total_bytes} in {sb.total_bytes}")
        if sb.dev_total_bytes > source.size:
            raise _damaged(
                f"the file system spans {sb.dev_total_bytes} bytes, the partition only "
                f"{source.size}"
            )
        notes: list[str] = []
        if sb.num_devices > 1:
            notes.append(
                f"btrfs spans {sb.num_devices} devices: this partition is imaged whole, and "
                "the others must be imaged too"
            )
        label = sb.label.split(b"\0", 1)[0].decode("utf-8", "replace") or None
        geometry = Geometry(
            block_size=sb.sector_size,
            fs_size=sb.dev_total_bytes,
            label=label,
            uuid=str(uuid.UUID(bytes=sb.fsid)),
            notes=tuple(notes),
        )
        fs = cls(source, geometry, sb)
        if sb.num_devices == 1:
            fs._read_chunks(raw)
        return fs

    # -- chunks ---------------------------------------------------------------------------

    def _read_chunks(self, superblock: bytes) -> None:
        array = superblock[SYS_CHUNK_ARRAY : SYS_CHUNK_ARRAY + self.sb.sys_chunk_array_size]
        at = 0
        system: list[Chunk] = []
        while at < len(array):
            if at + _KEY.size + _CHUNK.size > len(array):
                raise _damaged("the system chunk array ends inside an item")
            _, key_type, logical = _KEY.unpack_from(array, at)
            if key_type != CHUNK_ITEM:
                raise _damaged(f"the system chunk array holds an item of type {key_type}")
            data = array[at + _KEY.size :]
            num_stripes = _CHUNK.unpack_from(data)[7]
            chunk = parse_chunk(logical, data, "system chunk array")
            system.append(chunk)
            at += _KEY.size + _CHUNK.size + num_stripes * _STRIPE.size
        self.chunks = sorted(system, key=lambda c: c.logical)
        found: list[Chunk] = []
        for item in self._leaf_items(self.sb.chunk_root, self.sb.chunk_root_level, "chunk tree"):
            key_type, logical, data = item[1], item[2], item[3]
            if key_type == CHUNK_ITEM:
                found.append(parse_chunk(logical, data, "chunk tree"))
        chunks = sorted(found, key=lambda c: c.logical)
        for a, b in itertools.pairwise(chunks):
            if a.logical + a.length > b.logical:
                raise _damaged(f"chunks at {a.logical} and {b.logical} overlap")
        self.chunks = chunks
        ranges = sorted(
            (offset, c.stripe_length)
            for c in chunks
            for devid, offset in c.stripes
            if devid == self.sb.devid
        )
        for (start, length), (following, _) in itertools.pairwise(ranges):
            if start + length > following:
                raise _damaged(f"chunk stripes at device bytes {start} and {following} overlap")
        if ranges and ranges[-1][0] + ranges[-1][1] > self.sb.dev_total_bytes:
            raise _damaged(f"a chunk stripe at byte {ranges[-1][0]} ends past the device")

    def chunk_at(self, logical: int) -> Chunk:
        lo, hi = 0, len(self.chunks)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.chunks[mid].logical + self.chunks[mid].length <= logical:
                lo = mid + 1
            else:
                hi = mid
        if lo < len(self.chunks) and self.chunks[lo].logical <= logical:
            return self.chunks[lo]
        raise _damaged(f"logical address {logical} lies in no chunk")

    def physical(self, logical: int) -> int:
        chunk = self.chunk_at(logical)
        for devid, offset in chunk.stripes:
            if devid == self.sb.devid and chunk.maps_directly:
                return offset + logical - chunk.logical
        raise _damaged(f"logical address {logical} is not on this device in a direct copy")

    # -- trees ----------------------------------------------------------------------------

    def _node(self, logical: int, level: int, what: str) -> tuple[bytes, int]:
        """A tree block by logical address, validated; its data and item count."""
        data = _read(self.source, self.physical(logical), self.sb.node_size, f"{what} block")
        fsid, bytenr, _, _, _, nritems, got_level = _NODE_HEADER.unpack_from(data)
        expected_fsid = (
            self.sb.metadata_uuid if self.sb.incompat & INCOMPAT_METADATA_UUID else self.sb.fsid
        )
        if fsid != expected_fsid:
            raise _damaged(f"{what} block at {logical} belongs to another file system")
        if bytenr != logical:
            raise _damaged(f"{what} block at {logical} says it lies at {bytenr}")
        if got_level != level:
            raise _damaged(f"{what} block at {logical} has level {got_level}, expected {level}")
        size = LEAF_ITEM if level == 0 else KEY_PTR
        if HEADER + nritems * size > self.sb.node_size:
            raise _damaged(f"{what} block at {logical} holds {nritems} items")
        return data, nritems

    def _leaf_items(
        self,
        logical: int,
        level: int,
        what: str,
        start: tuple[int, int, int] = (0, 0, 0),
    ) -> Iterator[tuple[int, int, int, bytes]]:
        """Items (objectid, type, offset, data) of a tree from the first key >= ``start``."""
        if level > MAX_LEVEL:
            raise _damaged(f"{what} of {level} levels")
        data, n = self._node(logical, level, what)
        previous: tuple[int, int, int] | None = None
        if level == 0:
            for i in range(n):
                objectid, key_type, offset, data_at, size = _ITEM.unpack_from(
                    data, HEADER + i * LEAF_ITEM
                )
                key = (objectid, key_type, offset)
                if previous is not None and key <= previous:
                    raise _damaged(f"{what} block at {logical}: keys out of order")
                previous = key
                if HEADER + data_at + size > self.sb.node_size or data_at < n * LEAF_ITEM:
                    raise _damaged(f"{what} block at {logical}: item data outside the block")
                if key >= start:
                    yield (
                        objectid,
                        key_type,
                        offset,
                        data[HEADER + data_at : HEADER + data_at + size],
                    )
            return
        pointers = [_KEY_PTR.unpack_from(data, HEADER + i * KEY_PTR) for i in range(n)]
        keys = [p[:3] for p in pointers]
        for a, b in itertools.pairwise(keys):
            if b <= a:
                raise _damaged(f"{what} block at {logical}: keys out of order")
        first = 0
        for i, key in enumerate(keys):
            if key <= start:
                first = i
        for ptr in pointers[first:]:
            yield from self._leaf_items(ptr[3], level - 1, what, start)

    def _extent_root(self) -> tuple[int, int] | None:
        """(logical address, level) of the extent tree, from its root item in the root tree."""
        for objectid, key_type, _, data in self._leaf_items(
            self.sb.root, self.sb.root_level, "root tree", (EXTENT_TREE_OBJECTID, ROOT_ITEM, 0)
        ):
            if (objectid, key_type) != (EXTENT_TREE_OBJECTID, ROOT_ITEM):
                return None
            if len(data) < 239:
                raise _damaged(f"extent tree root item of {len(data)} bytes")
            return int.from_bytes(data[176:184], "little"), data[238]
        return None

    # -- used ranges ----------------------------------------------------------------------

    def used_extents(self) -> Iterator[Extent]:
        size = self.sb.dev_total_bytes
        if self.sb.num_devices > 1:
            return iter([Extent(0, size)])
        fixed = [(0, MiB)] + [(m, SUPER_SIZE) for m in MIRRORS if m + SUPER_SIZE <= size]
        root = None
        if self.sb.log_root:
            self.fallback = "its log tree was not replayed (not unmounted cleanly)"
        elif self.sb.incompat & INCOMPAT_EXTENT_TREE_V2:
            self.fallback = "it uses the extent tree version 2"
        else:
            root = self._extent_root()
            if root is None:
                raise _damaged("the root tree has no extent tree")
        streams: list[Iterator[tuple[int, int]]] = [iter(fixed)]
        stripes = sorted(
            (offset, chunk)
            for chunk in self.chunks
            for devid, offset in chunk.stripes
            if devid == self.sb.devid
        )
        for offset, chunk in stripes:
            if root is None or not chunk.maps_directly:
                streams.append(iter([(offset, chunk.stripe_length)]))
            else:
                streams.append(self._chunk_extents(root, chunk, offset))
        return merge(heapq.merge(*streams))

    def _chunk_extents(
        self, root: tuple[int, int], chunk: Chunk, offset: int
    ) -> Iterator[tuple[int, int]]:
        end = chunk.logical + chunk.length
        last = chunk.logical
        for objectid, key_type, key_offset, _ in self._leaf_items(
            root[0], root[1], "extent tree", (chunk.logical, 0, 0)
        ):
            if objectid >= end:
                return
            if key_type == EXTENT_ITEM:
                length = key_offset
            elif key_type == METADATA_ITEM:
                length = self.sb.node_size
            else:
                continue
            if objectid < last or objectid + length > end or length == 0:
                raise _damaged(f"extent of {length} bytes at {objectid} in chunk {chunk.logical}")
            last = objectid + length
            yield offset + objectid - chunk.logical, length


class BtrfsKind(MountedKind):
    mount_type = "btrfs"
    read_only_options = "ro,nologreplay"

    look_options = "ro,rescue=nologreplay"
    grow_argv = ("btrfs", "filesystem", "resize", "max")

    def check_needs(self) -> list[Need]:
        return [Need("btrfs", "to check btrfs on the target")]

    def check(self, node: str, step: Step) -> list[str]:
        step(f"checking btrfs on {node}")
        code, out = tools.run(["btrfs", "check", "--readonly", node])
        return [result_line(node, "btrfs check clean", code, out)]


register_kind(BtrfsKind("btrfs"))
