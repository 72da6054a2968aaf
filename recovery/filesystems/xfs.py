"""XFS: the used blocks, read from each allocation group's free-space B+tree.

Called through the registry of :mod:`recovery.filesystems.base` by the imaging engine. It
promises the byte ranges, relative to the partition start, that a restore must write for the
file system to come back whole: every block of every allocation group (AG) that the AG's
by-block-number free-space B+tree (the "bnobt", rooted in the AG's free-space header, the AGF)
does not list as free. That includes all metadata (superblocks, AG headers, inode chunks, every
B+tree block, the free-list blocks, which are reserved and so not in the tree) and the internal
log, which is allocated space too. Bytes past the last AG are free.

Both on-disk versions are read: version 4 (short B+tree block headers, magic ``ABTB``) and
version 5 (headers with CRC, owner and UUID, magic ``AB3B``). The tree is entered at its root,
followed down its leftmost pointers to the first leaf, then along the leaves' right-sibling
links; each leaf's records must be sorted, disjoint and inside the AG, each leaf's left link
must name the previous leaf, and the free blocks counted must equal the AGF's own count. A
realtime section lives on another device (only noted) and an external log too (noted: the
image holds the data device only).

Anything inconsistent raises :class:`DamagedFileSystem` naming the field (then the partition
can be imaged whole, or repaired with ``xfs_repair``); something that is not an XFS superblock
raises :class:`NotThisFileSystem`. Memory stays bounded: one B+tree block at a time.

The home of XFS for the rest of the engine too (:class:`XfsKind`): checked with
``xfs_repair -n``, mounted read-only without log recovery (``norecovery``: replaying the log
writes even with ``ro``), grown with ``xfs_growfs`` while mounted on a private folder. XFS cannot
shrink.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator
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

MAGIC = b"XFSB"
AGF_MAGIC = b"XAGF"
BNOBT_MAGIC_V4 = b"ABTB"
BNOBT_MAGIC_V5 = b"AB3B"
NULL_AGBLOCK = 0xFFFFFFFF
INCOMPAT_META_UUID = 0x4
MAX_BTREE_LEVELS = 9
SHORT_HEADER_V4 = 16  # magic, level, numrecs, leftsib, rightsib
SHORT_HEADER_V5 = 56  # + blkno, lsn, uuid, owner, crc
RECORD = struct.Struct(">II")  # (startblock, blockcount), also the node key


class Superblock(NamedTuple):
    block_size: int
    data_blocks: int
    realtime_blocks: int
    uuid: bytes
    log_start: int
    ag_blocks: int
    ag_count: int
    log_blocks: int
    version: int
    sector_size: int
    label: bytes
    block_log: int
    sector_log: int
    ag_block_log: int
    in_progress: int


_SB = struct.Struct(
    ">"
    "4x"  # 0   sb_magicnum (checked before)
    "I"  # 4   sb_blocksize
    "Q"  # 8   sb_dblocks
    "Q"  # 16  sb_rblocks
    "8x"  # 24  sb_rextents
    "16s"  # 32  sb_uuid
    "Q"  # 48  sb_logstart
    "24x"  # 56  sb_rootino, sb_rbmino, sb_rsumino
    "4x"  # 80  sb_rextsize
    "I"  # 84  sb_agblocks
    "I"  # 88  sb_agcount
    "4x"  # 92  sb_rbmblocks
    "I"  # 96  sb_logblocks
    "H"  # 100 sb_versionnum
    "H"  # 102 sb_sectsize
    "4x"  # 104 sb_inodesize, sb_inopblock
    "12s"  # 108 sb_fname
    "B"  # 120 sb_blocklog
    "B"  # 121 sb_sectlog
    "x"  # 122 sb_inodelog
    "x"  # 123 sb_inopblog
    "B"  # 124 sb_agblklog
    "x"  # 125 sb_rextslog
    "B"  # 126 sb_inprogress
)


class AgfHeader(NamedTuple):
    version: int
    seqno: int
    length: int
    bno_root: int
    bno_level: int
    free_blocks: int


_AGF = struct.Struct(
    ">"
    "4x"  # 0  agf_magicnum (checked before)
    "I"  # 4  agf_versionnum
    "I"  # 8  agf_seqno
    "I"  # 12 agf_length
    "I"  # 16 agf_roots[BNO]
    "4x"  # 20 agf_roots[CNT]
    "4x"  # 24 agf_rmap_root
    "I"  # 28 agf_levels[BNO]
    "8x"  # 32 agf_levels[CNT], agf_rmap_level
    "12x"  # 40 agf_flfirst, agf_fllast, agf_flcount
    "I"  # 52 agf_freeblks
)

_BLOCK_HEADER = struct.Struct(">4sHHII")  # magic, level, numrecs, leftsib, rightsib


def _damaged(what: str) -> DamagedFileSystem:
    return damaged("XFS", what, "xfs_repair -n")


def _read(source: BlockSource, offset: int, length: int, what: str) -> bytes:
    return read_exact(source, offset, length, what, "XFS", "xfs_repair -n")


def _log2(value: int) -> int:
    return value.bit_length() - 1


@register
class Xfs(FileSystem):
    name = "xfs"

    def __init__(self, source: BlockSource, geometry: Geometry, sb: Superblock) -> None:
        super().__init__(source, geometry)
        self.sb = sb
        self.v5 = sb.version == 5
        self.block_uuid = sb.uuid
        """What v5 metadata blocks carry: the UUID mkfs gave, which the superblock keeps in
        sb_meta_uuid when the UUID was changed later (the META_UUID feature)."""
        self.header_size = SHORT_HEADER_V5 if self.v5 else SHORT_HEADER_V4
        self.leaf_max = (sb.block_size - self.header_size) // RECORD.size
        self.node_max = (sb.block_size - self.header_size) // (RECORD.size + 4)

    @classmethod
    def open(cls, source: BlockSource) -> Xfs:
        head = source.pread(0, 512)
        if len(head) < 512 or head[:4] != MAGIC:
            raise NotThisFileSystem("no XFS superblock")
        sb = Superblock(*_SB.unpack_from(head))
        version = sb.version & 0xF
        if version not in (4, 5):
            raise _damaged(f"superblock version {version} (only 4 and 5 exist)")
        if not power_of_two(sb.block_size, 512, 65536) or sb.block_log != _log2(sb.block_size):
            raise _damaged(f"block size {sb.block_size} (log {sb.block_log})")
        if not power_of_two(sb.sector_size, 512, 32768) or sb.sector_size > sb.block_size:
            raise _damaged(f"sector size {sb.sector_size}")
        if sb.sector_log != _log2(sb.sector_size):
            raise _damaged(f"sector log {sb.sector_log} for sector size {sb.sector_size}")
        if sb.ag_count == 0 or sb.ag_blocks < 2:
            raise _damaged(f"{sb.ag_count} allocation groups of {sb.ag_blocks} blocks")
        if sb.ag_block_log != (sb.ag_blocks - 1).bit_length():
            raise _damaged(f"AG block log {sb.ag_block_log} for {sb.ag_blocks} blocks per AG")
        last_ag = sb.data_blocks - (sb.ag_count - 1) * sb.ag_blocks
        if not 0 < last_ag <= sb.ag_blocks:
            raise _damaged(
                f"{sb.data_blocks} data blocks do not fill {sb.ag_count} AGs of {sb.ag_blocks}"
            )
        if sb.in_progress:
            raise _damaged("mkfs.xfs did not finish (sb_inprogress is set)")
        if sb.log_start and not sb.log_start >> sb.ag_block_log < sb.ag_count:
            raise _damaged(f"log start block {sb.log_start} outside the AGs")
        fs_size = sb.data_blocks * sb.block_size
        if fs_size > source.size:
            raise _damaged(
                f"the file system spans {fs_size} bytes, the partition only {source.size}"
            )
        notes: list[str] = []
        if sb.log_start == 0:
            notes.append("its log is on another device, which this image does not hold")
        if sb.realtime_blocks:
            notes.append(
                "its realtime section is on another device, which this image does not hold"
            )
        label = sb.label.rstrip(b"\0").decode("utf-8", "replace") or None
        geometry = Geometry(
            block_size=sb.block_size,
            fs_size=fs_size,
            label=label,
            uuid=str(uuid.UUID(bytes=sb.uuid)),
            notes=tuple(notes),
        )
        fs = cls(source, geometry, sb._replace(version=version))
        if version == 5 and int.from_bytes(head[216:220], "big") & INCOMPAT_META_UUID:
            fs.block_uuid = head[248:264]
        return fs

    def ag_length(self, agno: int) -> int:
        if agno < self.sb.ag_count - 1:
            return self.sb.ag_blocks
        return self.sb.data_blocks - agno * self.sb.ag_blocks

    def used_extents(self) -> Iterator[Extent]:
        return merge(self._used())

    def _used(self) -> Iterator[tuple[int, int]]:
        bs = self.sb.block_size
        for agno in range(self.sb.ag_count):
            base = agno * self.sb.ag_blocks
            cursor = 0
            for start, count in self.free_extents(agno):
                if start > cursor:
                    yield (base + cursor) * bs, (start - cursor) * bs
                cursor = start + count
            length = self.ag_length(agno)
            if cursor < length:
                yield (base + cursor) * bs, (length - cursor) * bs

    def agf(self, agno: int) -> AgfHeader:
        offset = agno * self.sb.ag_blocks * self.sb.block_size + self.sb.sector_size
        raw = _read(self.source, offset, _AGF.size, f"AG {agno} free-space header")
        if raw[:4] != AGF_MAGIC:
            raise _damaged(f"AG {agno}: free-space header magic {raw[:4]!r}")
        agf = AgfHeader(*_AGF.unpack(raw))
        length = self.ag_length(agno)
        if agf.version != 1:
            raise _damaged(f"AG {agno}: free-space header version {agf.version}")
        if agf.seqno != agno:
            raise _damaged(f"AG {agno}: free-space header says it is AG {agf.seqno}")
        if agf.length != length:
            raise _damaged(f"AG {agno}: length {agf.length}, the superblock says {length}")
        if not 0 < agf.bno_root < length:
            raise _damaged(f"AG {agno}: free-space tree root at block {agf.bno_root}")
        if not 1 <= agf.bno_level <= MAX_BTREE_LEVELS:
            raise _damaged(f"AG {agno}: free-space tree of {agf.bno_level} levels")
        if agf.free_blocks > length:
            raise _damaged(f"AG {agno}: {agf.free_blocks} free blocks in {length}")
        return agf

    def _block(self, agno: int, agbno: int, level: int) -> tuple[bytes, int, int, int]:
        """The records area, record count, left and right sibling of one bnobt block."""
        where = f"AG {agno} free-space tree block {agbno}"
        offset = (agno * self.sb.ag_blocks + agbno) * self.sb.block_size
        raw = _read(self.source, offset, self.sb.block_size, where)
        magic, got_level, numrecs, left, right = _BLOCK_HEADER.unpack_from(raw)
        expected = BNOBT_MAGIC_V5 if self.v5 else BNOBT_MAGIC_V4
        if magic != expected:
            raise _damaged(f"{where}: magic {magic!r}")
        if got_level != level:
            raise _damaged(f"{where}: level {got_level}, expected {level}")
        limit = self.leaf_max if level == 0 else self.node_max
        if numrecs > limit or (level and numrecs == 0):
            raise _damaged(f"{where}: {numrecs} records")
        if self.v5 and raw[32:48] != self.block_uuid:
            raise _damaged(f"{where}: belongs to another file system")
        return raw, numrecs, left, right

    def free_extents(self, agno: int) -> Iterator[tuple[int, int]]:
        """The AG's free extents (AG-relative block, count), sorted, disjoint, validated."""
        agf = self.agf(agno)
        length = self.ag_length(agno)
        agbno = agf.bno_root
        for level in range(agf.bno_level - 1, 0, -1):
            raw, _, _, _ = self._block(agno, agbno, level)
            pointer_at = self.header_size + self.node_max * RECORD.size
            agbno = int.from_bytes(raw[pointer_at : pointer_at + 4], "big")
            if not 0 < agbno < length:
                raise _damaged(f"AG {agno}: free-space tree pointer to block {agbno}")
        previous = NULL_AGBLOCK
        end = 0
        counted = 0
        leaves = 0
        while agbno != NULL_AGBLOCK:
            leaves += 1
            if leaves > length:
                raise _damaged(f"AG {agno}: the free-space tree's leaves form a loop")
            raw, numrecs, left, right = self._block(agno, agbno, 0)
            if left != previous:
                raise _damaged(f"AG {agno}: free-space leaf {agbno} has left sibling {left}")
            for i in range(numrecs):
                start, count = RECORD.unpack_from(raw, self.header_size + i * RECORD.size)
                if count == 0 or start < end or start + count > length:
                    raise _damaged(f"AG {agno}: free extent of {count} blocks at {start}")
                end = start + count
                counted += count
                yield start, count
            if right != NULL_AGBLOCK and not 0 < right < length:
                raise _damaged(f"AG {agno}: free-space leaf {agbno} has right sibling {right}")
            previous, agbno = agbno, right
        if counted != agf.free_blocks:
            raise _damaged(
                f"AG {agno}: the free-space tree holds {counted} blocks, its header says "
                f"{agf.free_blocks}"
            )


class XfsKind(MountedKind):
    mount_type = "xfs"
    read_only_options = "ro,norecovery"

    look_options = "ro,norecovery,nouuid"
    grow_argv = ("xfs_growfs",)

    def check_needs(self) -> list[Need]:
        return [Need("xfs_repair", "to check xfs on the target")]

    def check(self, node: str, step: Step) -> list[str]:
        step(f"checking xfs on {node}")
        code, out = tools.run(["xfs_repair", "-n", node])
        return [result_line(node, "xfs_repair -n clean", code, out)]


register_kind(XfsKind("xfs"))
