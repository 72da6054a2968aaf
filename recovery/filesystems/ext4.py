"""ext2, ext3 and ext4: the used blocks, read from the block bitmaps.

Called through the registry of :mod:`recovery.filesystems.base` by the imaging engine. It
promises the byte ranges, relative to the partition start, that a restore must write for the
file system to come back whole: every block the bitmaps mark in use (data, directories, the
journal, inode tables, bitmaps, superblock and descriptor backups), plus the first 2 KiB (boot
area and primary superblock). Everything else is free space.

What it handles, as e2fsprogs does:

- 1 KiB to 64 KiB blocks; bigalloc (one bit per cluster); 32- and 64-byte group descriptors
  (``64bit``); ``meta_bg`` descriptor placement; ``sparse_super`` and ``sparse_super2`` backups.
- ``flex_bg``: a group's bitmaps and inode table may live in another group; each group's bitmap
  is read where its descriptor says. Consecutive bitmaps are read together.
- Groups flagged ``BLOCK_UNINIT`` (only honoured with ``uninit_bg``/``metadata_csum``, like the
  kernel): their bitmap block was never written, so their used blocks are computed: the
  superblock and descriptor backups the group holds, and every block bitmap, inode bitmap and
  inode table (of any group) that lies in it.
- The last group may be short; bitmap padding past the end of the file system is ignored.

A clean internal journal (no recovery needed, its own superblock saying it is empty) holds only
transactions that were already written in place: no reader of the file system uses its blocks
again until the kernel writes new ones. :meth:`Ext4.zeroed_extents` names them (all but the
journal's first block, its superblock), and the engine images them as zeros without reading
them (docs/FORMAT.md, "A clean ext4 journal"). They are found through inode 8's extent tree,
whose root must agree with the copy the superblock keeps of it (``s_jnl_blocks``), whose deeper
blocks (a journal of more than four extents) are followed only when their metadata_csum
checksums are right, and which must cover exactly the journal's size inside the file system;
anything else, and nothing is zeroed.

Safety over size: when the bitmaps cannot be trusted -- the journal needs recovery (its
transactions may allocate blocks the on-disk bitmaps do not show yet), the kernel recorded
errors, or the file system was not cleanly unmounted -- every block is reported used, with a
note saying why. The superblock and group descriptor checksums are verified (metadata_csum,
uninit_bg); a mismatch, or any field out of range, raises :class:`DamagedFileSystem` naming the
field. Reads are bounded by the partition size, and the group count by :data:`MAX_GROUPS`.
Bitmap block checksums are not verified (crc32c over every bitmap is too slow in Python).

The home of ext2/3/4 for the rest of the engine too (:class:`ExtKind`): grown with ``resize2fs``
(after ``e2fsck -f -p``, which it insists on), checked with ``e2fsck -f -n``, mounted read-only
with ``noload`` (no journal replay), looked into with ``debugfs``.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import struct
import sys
import uuid
from array import array
from collections.abc import Generator, Iterator
from typing import NamedTuple

from recovery.core.bitmap import set_runs
from recovery.core.extents import Extent, merge
from recovery.core.units import human_size
from recovery.devices import blockio, tools
from recovery.devices.tools import Need
from recovery.errors import DamagedFileSystem, DeviceError, NotThisFileSystem, Refused
from recovery.filesystems.base import (
    BlockSource,
    FileSystem,
    Geometry,
    Kind,
    Step,
    register,
    register_kind,
    result_line,
)

SUPERBLOCK_OFFSET = 1024
SUPERBLOCK_SIZE = 1024
SB_CHECKSUM_OFFSET = 0x3FC
MAGIC = 0xEF53

# s_state
STATE_VALID = 0x0001
STATE_ERROR = 0x0002

# Feature flags this reader looks at.
COMPAT_SPARSE_SUPER2 = 0x0200
INCOMPAT_RECOVER = 0x0004
INCOMPAT_JOURNAL_DEV = 0x0008
INCOMPAT_META_BG = 0x0010
INCOMPAT_64BIT = 0x0080
INCOMPAT_FLEX_BG = 0x0200
INCOMPAT_CSUM_SEED = 0x2000
RO_COMPAT_SPARSE_SUPER = 0x0001
RO_COMPAT_GDT_CSUM = 0x0010
RO_COMPAT_BIGALLOC = 0x0200
RO_COMPAT_METADATA_CSUM = 0x0400

# Incompatible features whose on-disk block allocation this reader understands: filetype,
# recover, meta_bg, extents, 64bit, mmp, flex_bg, ea_inode, dirdata, csum_seed, largedir,
# inline_data, encrypt, casefold. Anything else changes the layout in ways we cannot know.
KNOWN_INCOMPAT = (
    0x0002 | 0x0004 | 0x0010 | 0x0040 | 0x0080 | 0x0100 | 0x0200 | 0x0400 | 0x1000 | 0x2000
) | (0x4000 | 0x8000 | 0x10000 | 0x20000)

BG_BLOCK_UNINIT = 0x0002

COMPAT_HAS_JOURNAL = 0x0004
JOURNAL_INODE = 8
INODE_FLAGS, INODE_BLOCK, INODE_SIZE_HIGH = 0x20, 0x28, 0x6C
EXTENTS_FL = 0x80000
EXTENT_MAGIC = 0xF30A
MAX_EXTENT_DEPTH = 2
"""Deeper journal extent trees are not followed (mke2fs makes depth 0 or 1)."""
JBD2_MAGIC = 0xC03B3998
JNL_BACKUP_BLOCKS = 1

# How many bytes of consecutive block bitmaps, or of group descriptors, one read may fetch.
_MAX_BITMAP_READ = 4 << 20
_MAX_DESCRIPTOR_READ = 4 << 20

MAX_GROUPS = 1 << 20
"""More block groups than this (128 TiB with 4 KiB blocks) are refused: the per-group arrays
and the Python work per group must stay bounded whatever a damaged superblock claims."""


class Superblock(NamedTuple):
    """The fields of ``struct ext4_super_block`` this reader uses (offsets in _SUPERBLOCK)."""

    inodes_count: int
    blocks_count_lo: int
    first_data_block: int
    log_block_size: int
    log_cluster_size: int
    blocks_per_group: int
    clusters_per_group: int
    inodes_per_group: int
    magic: int
    state: int
    rev_level: int
    inode_size: int
    feature_compat: int
    feature_incompat: int
    feature_ro_compat: int
    uuid: bytes
    volume_name: bytes
    reserved_gdt_blocks: int
    desc_size: int
    first_meta_bg: int
    blocks_count_hi: int
    backup_bg0: int
    backup_bg1: int
    checksum_seed: int


_SUPERBLOCK = struct.Struct(
    "<"
    "I"  # 0x000 s_inodes_count
    "I"  # 0x004 s_blocks_count_lo
    "12x"  # 0x008 s_r_blocks_count_lo, s_free_blocks_count_lo, s_free_inodes_count
    "I"  # 0x014 s_first_data_block
    "I"  # 0x018 s_log_block_size
    "I"  # 0x01C s_log_cluster_size
    "I"  # 0x020 s_blocks_per_group
    "I"  # 0x024 s_clusters_per_group
    "I"  # 0x028 s_inodes_per_group
    "12x"  # 0x02C s_mtime, s_wtime, s_mnt_count, s_max_mnt_count
    "H"  # 0x038 s_magic
    "H"  # 0x03A s_state
    "16x"  # 0x03C s_errors, s_minor_rev_level, s_lastcheck, s_checkinterval, s_creator_os
    "I"  # 0x04C s_rev_level
    "8x"  # 0x050 s_def_resuid, s_def_resgid, s_first_ino
    "H"  # 0x058 s_inode_size
    "2x"  # 0x05A s_block_group_nr
    "I"  # 0x05C s_feature_compat
    "I"  # 0x060 s_feature_incompat
    "I"  # 0x064 s_feature_ro_compat
    "16s"  # 0x068 s_uuid
    "16s"  # 0x078 s_volume_name
    "70x"  # 0x088 s_last_mounted, s_algorithm_usage_bitmap, s_prealloc_*
    "H"  # 0x0CE s_reserved_gdt_blocks
    "46x"  # 0x0D0 s_journal_uuid .. s_jnl_backup_type
    "H"  # 0x0FE s_desc_size
    "4x"  # 0x100 s_default_mount_opts
    "I"  # 0x104 s_first_meta_bg
    "72x"  # 0x108 s_mkfs_time, s_jnl_blocks
    "I"  # 0x150 s_blocks_count_hi
    "248x"  # 0x154 .. s_overhead_clusters
    "I"  # 0x24C s_backup_bgs[0]
    "I"  # 0x250 s_backup_bgs[1]
    "28x"  # 0x254 s_encrypt_algos .. s_lpf_ino, s_prj_quota_inum
    "I"  # 0x270 s_checksum_seed
)


def _crc_table(poly: int) -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


def _next_slice(table: tuple[int, ...], base: tuple[int, ...]) -> tuple[int, ...]:
    return tuple((table[n] >> 8) ^ base[table[n] & 0xFF] for n in range(256))


_CRC32C_TABLE = _crc_table(0x82F63B78)
_CRC32C_T1 = _next_slice(_CRC32C_TABLE, _CRC32C_TABLE)
_CRC32C_T2 = _next_slice(_CRC32C_T1, _CRC32C_TABLE)
_CRC32C_T3 = _next_slice(_CRC32C_T2, _CRC32C_TABLE)
_CRC16_TABLE = _crc_table(0xA001)


def _crc32c(crc: int, data: bytes) -> int:
    """The kernel's ``crc32c(seed, data)``: reflected Castagnoli, no final inversion.

    Four bytes a step ("slicing by 4"): every group descriptor of a 2 TB file system is
    checked in a fraction of a second without a compiled extension.
    """
    t0, t1, t2, t3 = _CRC32C_TABLE, _CRC32C_T1, _CRC32C_T2, _CRC32C_T3
    words = len(data) // 4
    for w in struct.unpack_from(f"<{words}I", data):
        crc ^= w
        crc = t3[crc & 0xFF] ^ t2[(crc >> 8) & 0xFF] ^ t1[(crc >> 16) & 0xFF] ^ t0[crc >> 24]
    for b in data[4 * words :]:
        crc = t0[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc


def _crc16(crc: int, data: bytes) -> int:
    """The kernel's ``crc16(seed, data)`` (CRC-16/ARC polynomial, no final inversion)."""
    table = _CRC16_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc


def _damaged(what: str) -> DamagedFileSystem:
    return DamagedFileSystem(
        f"ext2/3/4 metadata is damaged: {what}. Run `e2fsck -f` on the partition, or image it "
        "whole (every block) instead."
    )


class _Layout:
    """The validated numbers of one file system, and where its metadata lives."""

    def __init__(self, sb: Superblock, source_size: int) -> None:
        self.sb = sb
        incompat = sb.feature_incompat
        ro_compat = sb.feature_ro_compat
        if incompat & INCOMPAT_JOURNAL_DEV:
            raise NotThisFileSystem("an external ext3/ext4 journal device, not a file system")
        unknown = incompat & ~KNOWN_INCOMPAT
        if unknown:
            raise _damaged(
                f"s_feature_incompat has flags {unknown:#x} this reader does not know "
                "(a newer ext4 feature, or a damaged superblock)"
            )
        if sb.log_block_size > 6:
            raise _damaged(f"s_log_block_size is {sb.log_block_size} (block size above 64 KiB)")
        self.block_size = bs = 1024 << sb.log_block_size
        self.is_64bit = bool(incompat & INCOMPAT_64BIT)
        self.flex_bg = bool(incompat & INCOMPAT_FLEX_BG)
        self.meta_bg = bool(incompat & INCOMPAT_META_BG)
        self.metadata_csum = bool(ro_compat & RO_COMPAT_METADATA_CSUM)
        self.gdt_csum = bool(ro_compat & RO_COMPAT_GDT_CSUM) and not self.metadata_csum
        self.sparse_super = bool(ro_compat & RO_COMPAT_SPARSE_SUPER)
        self.sparse_super2 = bool(sb.feature_compat & COMPAT_SPARSE_SUPER2)

        if ro_compat & RO_COMPAT_BIGALLOC:
            if not sb.log_block_size <= sb.log_cluster_size <= sb.log_block_size + 16:
                raise _damaged(
                    f"s_log_cluster_size is {sb.log_cluster_size} with s_log_block_size "
                    f"{sb.log_block_size} (bigalloc clusters are 1 to 65536 blocks)"
                )
        elif sb.log_cluster_size != sb.log_block_size:
            raise _damaged(
                f"s_log_cluster_size is {sb.log_cluster_size}, not the block size's "
                f"{sb.log_block_size}, without bigalloc"
            )
        self.cluster_ratio = ratio = 1 << (sb.log_cluster_size - sb.log_block_size)
        self.cluster_size = bs * ratio

        self.blocks_count = sb.blocks_count_lo
        if self.is_64bit:
            self.blocks_count |= sb.blocks_count_hi << 32
        expected_first = 1 if bs == 1024 and ratio == 1 else 0
        if sb.first_data_block != expected_first:
            raise _damaged(
                f"s_first_data_block is {sb.first_data_block}, expected {expected_first} for "
                f"{bs}-byte blocks"
            )
        self.first_data_block = fdb = sb.first_data_block
        if self.blocks_count <= fdb + 1:
            raise _damaged(f"s_blocks_count is {self.blocks_count}")
        self.fs_size = self.blocks_count * bs
        if self.fs_size > source_size:
            raise _damaged(
                f"the superblock says the file system holds {self.fs_size} bytes "
                f"({self.blocks_count} blocks of {bs}), but the partition has only "
                f"{source_size} (truncated copy, or a partition made smaller)"
            )

        bits_per_bitmap = 8 * bs
        cpg, bpg = sb.clusters_per_group, sb.blocks_per_group
        if not 8 <= cpg <= bits_per_bitmap or cpg % 8:
            raise _damaged(f"s_clusters_per_group is {cpg} (must be 8..{bits_per_bitmap})")
        if bpg != cpg * ratio:
            raise _damaged(
                f"s_blocks_per_group is {bpg}, but s_clusters_per_group {cpg} x {ratio} "
                f"blocks per cluster is {cpg * ratio}"
            )
        self.blocks_per_group = bpg
        self.clusters_per_group = cpg
        self.groups = groups = -(-(self.blocks_count - fdb) // bpg)
        if groups > MAX_GROUPS:
            raise _damaged(
                f"s_blocks_count {self.blocks_count} with s_blocks_per_group {bpg} makes {groups} "
                f"block groups, more than this reader handles ({MAX_GROUPS})"
            )

        if sb.rev_level == 0:
            self.inode_size = 128
        else:
            isz = sb.inode_size
            if not 128 <= isz <= bs or isz & (isz - 1):
                raise _damaged(f"s_inode_size is {isz} (a power of two, 128..{bs})")
            self.inode_size = isz
        ipg = sb.inodes_per_group
        if not 1 <= ipg <= bits_per_bitmap:
            raise _damaged(f"s_inodes_per_group is {ipg} (must be 1..{bits_per_bitmap})")
        if sb.inodes_count != ipg * groups:
            raise _damaged(
                f"s_inodes_count is {sb.inodes_count}, but {groups} groups of "
                f"{ipg} inodes make {ipg * groups}"
            )
        self.itable_blocks = -(-ipg * self.inode_size // bs)
        if self.itable_blocks > bpg:
            raise _damaged(
                f"an inode table of {self.itable_blocks} blocks (s_inodes_per_group {ipg}, "
                f"s_inode_size {self.inode_size}) does not fit a group of {bpg} blocks"
            )

        if self.is_64bit:
            dsz = sb.desc_size
            if not 64 <= dsz <= min(1024, bs) or dsz & (dsz - 1):
                raise _damaged(f"s_desc_size is {dsz} (64bit needs a power of two, 64..1024)")
            self.desc_size = dsz
        else:
            self.desc_size = 32
        self.descs_per_block = bs // self.desc_size
        self.desc_blocks = -(-groups // self.descs_per_block)

        if sb.reserved_gdt_blocks > bs // 4:
            raise _damaged(f"s_reserved_gdt_blocks is {sb.reserved_gdt_blocks} (at most {bs // 4})")
        if self.meta_bg:
            if sb.first_meta_bg > self.desc_blocks:
                raise _damaged(
                    f"s_first_meta_bg is {sb.first_meta_bg}, beyond the {self.desc_blocks} "
                    "descriptor blocks"
                )
            self.old_desc_blocks = sb.first_meta_bg
        else:
            self.old_desc_blocks = self.desc_blocks + sb.reserved_gdt_blocks
            if 2 + self.old_desc_blocks > min(bpg, self.blocks_count - fdb):
                raise _damaged(
                    f"{self.desc_blocks} descriptor blocks and s_reserved_gdt_blocks "
                    f"{sb.reserved_gdt_blocks} do not fit in group 0"
                )

        # Descriptor checksums are only verified and BLOCK_UNINIT only honoured with one of the
        # checksum features, as the kernel does.
        self.csum_seed = 0
        if self.metadata_csum:
            if incompat & INCOMPAT_CSUM_SEED:
                self.csum_seed = sb.checksum_seed
            else:
                self.csum_seed = _crc32c(0xFFFFFFFF, sb.uuid)
        elif self.gdt_csum:
            self.csum_seed = _crc16(0xFFFF, sb.uuid)

    # Where things are (block numbers), following e2fsprogs' ext2fs_super_and_bgd_loc2.

    def group_first_block(self, group: int) -> int:
        return self.first_data_block + group * self.blocks_per_group

    def group_block_count(self, group: int) -> int:
        return min(self.blocks_per_group, self.blocks_count - self.group_first_block(group))

    def has_super(self, group: int) -> bool:
        """Whether ``group`` holds a superblock copy (and, without meta_bg, descriptors)."""
        if group == 0:
            return True
        if self.sparse_super2:
            return group in (self.sb.backup_bg0, self.sb.backup_bg1)
        if not self.sparse_super:
            return True
        return group in self._sparse_backups

    @functools.cached_property
    def _sparse_backups(self) -> frozenset[int]:
        """Groups 1 and the powers of 3, 5 and 7 below the group count (sparse_super)."""
        out = {1}
        for base in (3, 5, 7):
            n = base
            while n < self.groups:
                out.add(n)
                n *= base
        return frozenset(out)

    def _super_block_of(self, group: int) -> int:
        first = self.group_first_block(group)
        # 1 KiB blocks with bigalloc: group 0 starts at block 0 but the superblock is block 1.
        return 1 if first == 0 and self.block_size == 1024 else first

    def descriptor_block(self, index: int) -> int:
        """Block holding descriptor block ``index`` (the primary copy)."""
        start = self._super_block_of(0) + 1
        if not self.meta_bg or index < self.sb.first_meta_bg:
            return start + index
        group = index * self.descs_per_block
        return self._super_block_of(group) + (1 if self.has_super(group) else 0)

    def super_and_descriptors(self, group: int) -> list[tuple[int, int]]:
        """(first block, count) of the superblock copy and descriptor blocks in ``group``."""
        out: list[tuple[int, int]] = []
        has_super = self.has_super(group)
        first = self._super_block_of(group)
        if has_super:
            out.append((first, 1))
        meta_group = group // self.descs_per_block
        if not self.meta_bg or meta_group < self.sb.first_meta_bg:
            if has_super and self.old_desc_blocks:
                count = min(self.old_desc_blocks, self.blocks_count - (first + 1))
                out.append((first + 1, count))
        elif group % self.descs_per_block in (0, 1, self.descs_per_block - 1):
            out.append((first + (1 if has_super else 0), 1))
        return out


class _Descriptors:
    """The per-group locations and flags, validated, in compact arrays.

    The descriptor table is decoded with array slicing (one pass per field, not per group),
    so the 16384 descriptors of a 2 TB file system cost milliseconds, plus the checksums.
    """

    def __init__(self, layout: _Layout, source: BlockSource) -> None:
        lay = layout
        per_word, per_half = lay.desc_size // 4, lay.desc_size // 2
        self.block_bitmap = array("Q")
        self.inode_bitmap = array("Q")
        self.inode_table = array("Q")
        flags = array("H")
        for first, table in self._table_pieces(lay, source):
            words = _le_array("I", table)
            halves = _le_array("H", table)
            stored = halves[15::per_half]  # bg_checksum at 0x1E
            if lay.metadata_csum:
                self._verify_crc32c(lay, first, table, stored)
            elif lay.gdt_csum:
                self._verify_crc16(lay, first, table, stored)
            for field, low_at, high_at in (
                (self.block_bitmap, 0, 8),
                (self.inode_bitmap, 1, 9),
                (self.inode_table, 2, 10),
            ):
                low = words[low_at::per_word]
                if lay.is_64bit:
                    high = words[high_at::per_word]
                    field.extend(
                        lo | hi << 32 if hi else lo for lo, hi in zip(low, high, strict=True)
                    )
                else:
                    field.extend(low.tolist())
            flags.extend(halves[9::per_half])  # bg_flags at 0x12
        self._check_locations(lay)
        # BLOCK_UNINIT is only honoured with one of the checksum features, as the kernel does.
        if lay.metadata_csum or lay.gdt_csum:
            self.block_uninit = bytearray(1 if f & BG_BLOCK_UNINIT else 0 for f in flags)
        else:
            self.block_uninit = bytearray(lay.groups)

    @staticmethod
    def _table_pieces(lay: _Layout, source: BlockSource) -> Iterator[tuple[int, bytes]]:
        """(first group, its descriptors and the next ones) in group order, at most
        _MAX_DESCRIPTOR_READ bytes at a time; adjacent descriptor blocks are read together."""
        limit = max(1, _MAX_DESCRIPTOR_READ // lay.block_size)
        index = 0
        while index < lay.desc_blocks:
            block = lay.descriptor_block(index)
            n = 1
            while (
                index + n < lay.desc_blocks
                and n < limit
                and lay.descriptor_block(index + n) == block + n
            ):
                n += 1
            if not lay.first_data_block <= block <= lay.blocks_count - n:
                raise _damaged(f"descriptor block {index} would be at block {block}")
            first = index * lay.descs_per_block
            groups = min(n * lay.descs_per_block, lay.groups - first)
            yield (
                first,
                _read(source, block * lay.block_size, groups * lay.desc_size, "group descriptors"),
            )
            index += n

    @staticmethod
    def _verify_crc32c(lay: _Layout, first: int, table: bytes, stored: array[int]) -> None:
        """metadata_csum: crc32c(seed, le32 group, descriptor with bg_checksum zeroed) & 0xFFFF."""
        dsz = lay.desc_size
        count = len(table) // dsz
        zeroed = bytearray(table)
        zeroed[0x1E::dsz] = bytes(count)
        zeroed[0x1F::dsz] = bytes(count)
        words = _le_array("I", bytes(zeroed))
        per = dsz // 4
        t0, t1, t2, t3 = _CRC32C_TABLE, _CRC32C_T1, _CRC32C_T2, _CRC32C_T3
        seed = lay.csum_seed
        for k in range(count):
            crc = seed ^ (first + k)
            crc = t3[crc & 0xFF] ^ t2[(crc >> 8) & 0xFF] ^ t1[(crc >> 16) & 0xFF] ^ t0[crc >> 24]
            for w in words[k * per : (k + 1) * per]:
                crc ^= w
                crc = (
                    t3[crc & 0xFF] ^ t2[(crc >> 8) & 0xFF] ^ t1[(crc >> 16) & 0xFF] ^ t0[crc >> 24]
                )
            if crc & 0xFFFF != stored[k]:
                raise _damaged(
                    f"group descriptor {first + k} has checksum {stored[k]:#06x}, expected "
                    f"{crc & 0xFFFF:#06x}"
                )

    @staticmethod
    def _verify_crc16(lay: _Layout, first: int, table: bytes, stored: array[int]) -> None:
        """uninit_bg (gdt_csum): crc16 over uuid, le32 group and the descriptor without
        bg_checksum."""
        dsz = lay.desc_size
        for k in range(len(table) // dsz):
            desc = table[k * dsz : (k + 1) * dsz]
            crc = _crc16(lay.csum_seed, (first + k).to_bytes(4, "little"))
            crc = _crc16(crc, desc[:0x1E])
            if lay.is_64bit:
                crc = _crc16(crc, desc[0x20:])
            if crc != stored[k]:
                raise _damaged(
                    f"group descriptor {first + k} has checksum {stored[k]:#06x}, expected "
                    f"{crc:#06x}"
                )

    def _check_locations(self, lay: _Layout) -> None:
        """Bitmaps and inode tables inside the file system; without flex_bg, inside their
        own group (as the kernel requires)."""
        itb = lay.itable_blocks
        fields = (
            ("bg_block_bitmap", self.block_bitmap, 1),
            ("bg_inode_bitmap", self.inode_bitmap, 1),
            ("bg_inode_table", self.inode_table, itb),
        )
        if lay.flex_bg:
            low, high = lay.first_data_block, lay.blocks_count
            for name, values, count in fields:
                if min(values) < low or max(values) > high - count:
                    g = next(g for g, v in enumerate(values) if not low <= v <= high - count)
                    raise _damaged(
                        f"group descriptor {g}: {name} is block {values[g]}, outside the file "
                        f"system (blocks {low}..{high - 1})"
                    )
            return
        for name, values, count in fields:
            for g, v in enumerate(values):
                low = lay.group_first_block(g)
                high = low + lay.group_block_count(g)
                if not low <= v <= high - count:
                    raise _damaged(
                        f"group descriptor {g}: {name} is block {v}, outside group {g} "
                        f"(blocks {low}..{high - 1})"
                    )


def _le_array(typecode: str, data: bytes) -> array[int]:
    """``data`` as little-endian unsigned integers of the array type ``typecode``."""
    out = array(typecode)
    out.frombytes(data)
    if sys.byteorder == "big":
        out.byteswap()
    return out


def _read(source: BlockSource, offset: int, length: int, what: str) -> bytes:
    try:
        data = source.pread(offset, length)
    except OSError as e:
        raise DeviceError(f"cannot read the ext2/3/4 {what} at byte {offset}: {e}") from e
    if len(data) != length:
        raise _damaged(f"the {what} at byte {offset} lie beyond the end of the partition")
    return data


def _label(raw: bytes) -> str | None:
    text = raw.split(b"\0", 1)[0].decode("utf-8", "replace")
    return text or None


@register
class Ext4(FileSystem):
    """An ext2/3/4 file system opened for reading its allocation."""

    name = "ext4"
    fstypes = ("ext2", "ext3", "ext4")

    def __init__(
        self,
        source: BlockSource,
        geometry: Geometry,
        layout: _Layout,
        descriptors: _Descriptors,
        trust_bitmaps: bool,
    ) -> None:
        super().__init__(source, geometry)
        self._layout = layout
        self._desc = descriptors
        self._trust_bitmaps = trust_bitmaps
        self._zeroed: list[tuple[int, int]] = []

    @classmethod
    def open(cls, source: BlockSource) -> Ext4:
        raw = b""
        if source.size >= SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE:
            raw = _read(source, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, "superblock")
        if len(raw) < _SUPERBLOCK.size:
            raise NotThisFileSystem("too small to hold an ext2/3/4 superblock")
        sb = Superblock(*_SUPERBLOCK.unpack_from(raw))
        if sb.magic != MAGIC:
            raise NotThisFileSystem("no ext2/3/4 superblock (magic 0xEF53) at byte 1024")
        if sb.feature_ro_compat & RO_COMPAT_METADATA_CSUM:
            stored = int.from_bytes(raw[SB_CHECKSUM_OFFSET:SUPERBLOCK_SIZE], "little")
            computed = _crc32c(0xFFFFFFFF, raw[:SB_CHECKSUM_OFFSET])
            if stored != computed:
                raise _damaged(
                    f"the superblock checksum s_checksum is {stored:#010x}, expected "
                    f"{computed:#010x}"
                )
        layout = _Layout(sb, source.size)
        descriptors = _Descriptors(layout, source)

        notes: list[str] = []
        if sb.feature_incompat & INCOMPAT_RECOVER:
            notes.append(
                "the ext4 journal needs recovery (the system was not shut down cleanly): "
                "every block is imaged, since the bitmaps on disk may be out of date"
            )
        if sb.state & STATE_ERROR:
            notes.append(
                "the kernel recorded errors on this file system: every block is imaged; "
                "run `e2fsck -f` on it"
            )
        elif not sb.state & STATE_VALID:
            notes.append(
                "the file system was not cleanly unmounted: every block is imaged, since "
                "the bitmaps on disk may be out of date"
            )
        geometry = Geometry(
            block_size=layout.cluster_size,
            fs_size=layout.fs_size,
            label=_label(sb.volume_name),
            uuid=str(uuid.UUID(bytes=sb.uuid)),
            notes=tuple(notes),
        )
        fs = cls(source, geometry, layout, descriptors, trust_bitmaps=not notes)
        fs.journal_needs_recovery = bool(
            sb.feature_incompat & INCOMPAT_RECOVER and not sb.state & STATE_ERROR
        )
        if not notes:
            fs._zeroed = _clean_journal(source, layout, descriptors, raw)
        return fs

    def zeroed_extents(self) -> list[tuple[int, int]]:
        return list(self._zeroed)

    def used_extents(self) -> Iterator[Extent]:
        return merge(self._extents())

    def _extents(self) -> Iterator[tuple[int, int]]:
        """Sorted, possibly touching extents: the boot area, then group after group."""
        lay = self._layout
        yield 0, SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE
        if not self._trust_bitmaps:
            yield 0, lay.fs_size
            return
        uninit = self._desc.block_uninit
        metadata = self._metadata_by_group() if any(uninit) else {}
        dpb = lay.descs_per_block
        group = 0
        while group < lay.groups:
            if not uninit[group]:
                group = yield from self._bitmap_groups(group)
                continue
            # Most uninitialised groups of a big file system hold nothing at all.
            if (
                group in metadata
                or lay.has_super(group)
                or (lay.meta_bg and group % dpb in (0, 1, dpb - 1))
            ):
                yield from self._uninit_group(group, metadata.get(group, []))
            group += 1

    def _bitmap_groups(self, group: int) -> Generator[tuple[int, int], None, int]:
        """Used extents of ``group`` and the following groups whose bitmaps are adjacent on disk
        (flex_bg lays them out so), read at once. Returns the next group to look at."""
        lay, desc = self._layout, self._desc
        bs = lay.block_size
        first = desc.block_bitmap[group]
        n = 1
        limit = max(1, _MAX_BITMAP_READ // bs)
        while (
            group + n < lay.groups
            and n < limit
            and not desc.block_uninit[group + n]
            and desc.block_bitmap[group + n] == first + n
        ):
            n += 1
        data = _read(self.source, first * bs, n * bs, f"block bitmap of group {group}")
        unit = lay.cluster_size
        cpg = lay.clusters_per_group
        # When each bitmap fills its block exactly, adjacent bitmaps are one bit stream.
        one_stream = cpg == 8 * bs
        pieces = [(group, 0, n)] if one_stream else [(group + k, k * bs, 1) for k in range(n)]
        for g, offset, count in pieces:
            last = g + count - 1
            units_last = -(-lay.group_block_count(last) // lay.cluster_ratio)
            nbits = (count - 1) * cpg + units_last
            base = lay.group_first_block(g) * bs
            end = (lay.group_first_block(last) + lay.group_block_count(last)) * bs
            stream = data if one_stream else data[offset : offset + bs]
            for start, length in set_runs(stream, nbits):
                lo = base + start * unit
                yield lo, min(length * unit, end - lo)
        return group + n

    def _metadata_by_group(self) -> dict[int, list[tuple[int, int]]]:
        """The bitmaps and inode tables (of any group) lying in uninitialised groups, as block
        ranges filed under the group they lie in (with flex_bg, mostly not their own)."""
        lay, desc = self._layout, self._desc
        uninit = desc.block_uninit
        fdb, bpg, itb = lay.first_data_block, lay.blocks_per_group, lay.itable_blocks
        out: dict[int, list[tuple[int, int]]] = {}
        pieces = itertools.chain(
            ((b, 1) for b in desc.block_bitmap),
            ((b, 1) for b in desc.inode_bitmap),
            ((b, itb) for b in desc.inode_table),
        )
        for block, count in pieces:
            while count > 0:
                home = (block - fdb) // bpg
                take = min(count, fdb + (home + 1) * bpg - block)
                if uninit[home]:
                    out.setdefault(home, []).append((block, take))
                block += take
                count -= take
        return out

    def _uninit_group(
        self, group: int, metadata: list[tuple[int, int]]
    ) -> Iterator[tuple[int, int]]:
        lay = self._layout
        # With bigalloc a cluster holding any metadata block is allocated whole.
        unit = lay.cluster_size
        end = (lay.group_first_block(group) + lay.group_block_count(group)) * lay.block_size
        ranges = lay.super_and_descriptors(group) + metadata
        if len(ranges) > 1:
            ranges.sort()
        for block, count in ranges:
            lo = block * lay.block_size // unit * unit
            hi = -(-(block + count) * lay.block_size // unit) * unit
            yield lo, min(hi, end) - lo


def _clean_journal(
    source: BlockSource, lay: _Layout, desc: _Descriptors, raw_sb: bytes
) -> list[tuple[int, int]]:
    """Byte ranges of a clean internal journal after its first block (see the module's
    docstring), merged; empty when there is none, it is not clean, or anything disagrees."""
    try:
        return _journal_ranges(source, lay, desc, raw_sb)
    except (OSError, DamagedFileSystem, DeviceError, struct.error, ValueError):
        return []


def _journal_ranges(
    source: BlockSource, lay: _Layout, desc: _Descriptors, raw_sb: bytes
) -> list[tuple[int, int]]:
    sb, bs = lay.sb, lay.block_size
    inum, jdev = struct.unpack_from("<II", raw_sb, 0xE0)
    backup_type = raw_sb[0xFD]
    if not sb.feature_compat & COMPAT_HAS_JOURNAL or inum != JOURNAL_INODE or jdev != 0:
        return []
    if sb.feature_incompat & INCOMPAT_RECOVER or backup_type != JNL_BACKUP_BLOCKS:
        return []
    inode_size = sb.inode_size if sb.rev_level >= 1 else 128
    if inode_size < 128 or sb.inodes_per_group < JOURNAL_INODE:
        return []
    at = desc.inode_table[0] * bs + (JOURNAL_INODE - 1) * inode_size
    inode = _read(source, at, 128, "journal inode")
    size_lo = struct.unpack_from("<I", inode, 4)[0]
    size = size_lo | struct.unpack_from("<I", inode, INODE_SIZE_HIGH)[0] << 32
    flags = struct.unpack_from("<I", inode, INODE_FLAGS)[0]
    root = inode[INODE_BLOCK : INODE_BLOCK + 60]
    # s_jnl_blocks: the superblock's copy of i_block[15], i_size_high and i_size.
    copy = raw_sb[0x10C : 0x10C + 68]
    if copy != root + inode[INODE_SIZE_HIGH : INODE_SIZE_HIGH + 4] + inode[4:8]:
        return []
    if not flags & EXTENTS_FL or size <= 0 or size % bs:
        return []
    blocks = size // bs
    # A deeper block's checksum seed: the file system's, then the inode number and generation.
    generation = inode[0x64:0x68]
    seed = _crc32c(_crc32c(lay.csum_seed, JOURNAL_INODE.to_bytes(4, "little")), generation)
    depth = MAX_EXTENT_DEPTH if lay.metadata_csum else 0
    extents = sorted(_extent_leaves(source, lay, root, depth, seed))
    logical = 0
    for first, _, count in extents:
        if first != logical:
            return []  # a hole, or overlapping extents
        logical += count
    if logical != blocks or blocks < 2:
        return []
    # The journal's own superblock (big-endian): magic, a v1/v2 superblock type, its size, and
    # s_start 0 (nothing to replay).
    jsb = _read(source, extents[0][1] * bs, 1024, "journal superblock")
    magic, kind = struct.unpack_from(">II", jsb, 0)
    jbs, maxlen, _first, _sequence, start = struct.unpack_from(">IIIII", jsb, 12)
    if magic != JBD2_MAGIC or kind not in (3, 4) or jbs != bs or maxlen > blocks or start:
        return []
    ranges = [(phys * bs, count * bs) for _, phys, count in extents]
    phys0, count0 = extents[0][1], extents[0][2]
    ranges[0] = ((phys0 + 1) * bs, (count0 - 1) * bs)
    return [tuple(e) for e in merge(sorted(r for r in ranges if r[1] > 0))]  # type: ignore[misc]


def _extent_leaves(
    source: BlockSource, lay: _Layout, node: bytes, depth_left: int, seed: int
) -> list[tuple[int, int, int]]:
    """``(logical block, physical block, count)`` of every leaf under an extent tree node;
    ValueError for anything malformed (the caller then zeroes nothing)."""
    magic, entries, most, depth = struct.unpack_from("<HHHH", node, 0)
    if magic != EXTENT_MAGIC or entries > most or 12 + 12 * most > len(node):
        raise ValueError("extent header")
    if depth > depth_left:
        raise ValueError("extent tree too deep")
    out: list[tuple[int, int, int]] = []
    for i in range(entries):
        e = 12 + 12 * i
        if depth == 0:
            first, count, hi, lo = struct.unpack_from("<IHHI", node, e)
            if count > 32768:
                raise ValueError("uninitialised extent in the journal")
            phys = hi << 32 | lo
            if count == 0 or phys < 1 or phys + count > lay.blocks_count:
                raise ValueError("extent outside the file system")
            out.append((first, phys, count))
        else:
            _first, lo, hi = struct.unpack_from("<IIH", node, e)
            child = hi << 32 | lo
            if not 0 < child < lay.blocks_count:
                raise ValueError("index outside the file system")
            block = _read(source, child * lay.block_size, lay.block_size, "journal extent block")
            tail = 12 + 12 * struct.unpack_from("<H", block, 4)[0]  # after eh_max entries
            if tail + 4 > len(block) or _crc32c(seed, block[:tail]) != int.from_bytes(
                block[tail : tail + 4], "little"
            ):
                raise ValueError("extent block checksum")
            out += _extent_leaves(source, lay, block, depth - 1, seed)
            if len(out) > lay.blocks_count:
                raise ValueError("extent tree loops")
    return out


class ExtKind(Kind):
    """ext2, ext3 and ext4 for the engine: grow, check, mount read-only, look inside."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.mount_type = name
        # ext3/ext4 replay their journal even when mounted ``ro``; ext2 has none.
        self.read_only_options = "ro" if name == "ext2" else "ro,noload"

    @property
    def can_grow(self) -> bool:
        return True

    def grow_needs(self) -> list[Need]:
        why = f"to grow {self.name} on the target"
        return [Need("e2fsck", why), Need("resize2fs", why)]

    def grow(self, node: str, step: Step) -> list[str]:
        step(f"growing {self.name} on {node}")
        # resize2fs refuses a file system that was not checked since it was last written.
        tools.run(["e2fsck", "-f", "-p", node])
        code, out = tools.run(["resize2fs", node])
        return [] if code == 0 else [result_line(node, "resize2fs", code, out)]

    @property
    def can_shrink(self) -> bool:
        return True

    def shrink_needs(self) -> list[Need]:
        why = f"to shrink {self.name} onto a smaller target"
        return [Need("e2fsck", why), Need("resize2fs", why)]

    def minimum_size(self, path: str) -> int:
        """The smaller of resize2fs's own estimate (``-P``, read-only) and ours.

        resize2fs 1.47.0 overestimates badly on a flex_bg file system whose files are spread
        out (measured: 96 % of a 2 GB ext4 that was 51 % used, which then shrank to 52 % with
        ``-f``). Ours: the blocks in use, plus 5 % and 32 MiB for the metadata and extent-tree
        growth a shrink needs, and never fewer groups than the inodes in use need. :meth:`shrink`
        passes ``-f`` so resize2fs takes a size below its own estimate; a size that is really
        too small makes it stop with "No space left" before it changes anything.
        """
        code, out = tools.run(["resize2fs", "-P", path], timeout=600)
        found = re.search(r"minimum size of the filesystem: (\d+)", out)
        if code != 0 or found is None:
            last = out.splitlines()[-1] if out else f"exit code {code}"
            raise Refused(f"resize2fs cannot tell how small {self.name} can get: {last}")
        counts = _shrink_counts(path, self.name)
        estimate = counts.used * 105 // 100 + (32 << 20)
        groups_for_inodes = -(-counts.used_inodes // max(1, counts.inodes_per_group))
        estimate = max(estimate, groups_for_inodes * counts.group_bytes)
        return min(int(found.group(1)) * counts.block_size, estimate)

    def shrink(self, path: str, new_size: int, step: Step) -> list[str]:
        step(f"checking {self.name} before shrinking it")
        # resize2fs refuses a file system not checked since it was last mounted; -p fixes only
        # what is safe without asking (0: clean, 1: fixed, 2: fixed, reboot; more: errors).
        code, out = tools.run(["e2fsck", "-f", "-p", path], timeout=3600)
        if code > 2:
            return [result_line(path, "e2fsck", code, out)]
        step(f"shrinking {self.name} to {human_size(new_size)}")
        code, out = tools.run(["resize2fs", "-f", path, f"{new_size // 1024}K"], timeout=None)
        return [result_line(path, f"{self.name} shrunk to {human_size(new_size)}", code, out)]

    def check_needs(self) -> list[Need]:
        return [Need("e2fsck", f"to check {self.name} on the target")]

    def check(self, node: str, step: Step) -> list[str]:
        step(f"checking {self.name} on {node}")
        code, out = tools.run(["e2fsck", "-f", "-n", node])
        return [result_line(node, "e2fsck clean", code, out)]

    def inspect_needs(self) -> list[Need]:
        return [Need("debugfs", f"to look inside {self.name} for an operating system")]

    def root_names(self, node: str) -> set[str]:
        out = tools.output(["debugfs", "-R", "ls -p /", node])
        # ``ls -p`` lines: /inode/mode/uid/gid/name/size/
        return {line.split("/")[5] for line in out.splitlines() if line.count("/") >= 6}

    def has_path(self, node: str, path: str) -> bool:
        return bool(tools.output(["debugfs", "-R", f"stat {path}", node]).strip())

    def replay_journal_needs(self) -> list[Need]:
        return [Need("e2fsck", f"to replay the {self.name} journal into the image")]

    def replay_journal(self, path: str) -> str | None:
        # journal_only: replay the committed transactions and stop (no check, no repair), as
        # the kernel does at mount time; -p answers nothing is asked.
        code, out = tools.run(["e2fsck", "-E", "journal_only", "-p", path], timeout=600)
        if code in (0, 1):
            return None
        last = out.splitlines()[-1] if out else f"exit code {code}"
        return f"e2fsck -E journal_only failed: {last}"

    def files_in(self, node: str, block_size: int, ranges: list[tuple[int, int]]) -> list[str]:
        """The files whose blocks lie in ``ranges`` (debugfs icheck, then ncheck)."""
        blocks: list[int] = []
        for off, length in ranges:
            first, last = off // block_size, (off + length - 1) // block_size
            blocks.extend(range(first, min(last, first + 4096) + 1))
            if len(blocks) > 20000:
                break
        if not blocks or not blockio.is_block_device(node):
            return []
        inodes: set[str] = set()
        for i in range(0, len(blocks), 1000):
            out = _debugfs(node, "icheck " + " ".join(map(str, blocks[i : i + 1000])))
            for line in out.splitlines()[1:]:
                parts = line.split()
                if len(parts) == 2 and parts[1].isdigit():
                    inodes.add(parts[1])
        if not inodes:
            return []
        out = _debugfs(node, "ncheck " + " ".join(sorted(inodes, key=int)))
        paths = []
        for line in out.splitlines()[1:]:
            parts = line.split(None, 1)
            if len(parts) == 2:
                paths.append(parts[1].strip())
        return sorted(set(paths))


class _ShrinkCounts(NamedTuple):
    block_size: int
    used: int
    """Bytes in blocks that are in use."""
    used_inodes: int
    inodes_per_group: int
    group_bytes: int


def _shrink_counts(path: str, name: str) -> _ShrinkCounts:
    """The superblock's counters a shrink estimate needs (accurate on an unmounted volume)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            sb = os.pread(fd, 1024, SUPERBLOCK_OFFSET)
        finally:
            os.close(fd)
        inodes, blocks_lo, free_lo, free_inodes = struct.unpack_from("<II4xII", sb, 0)
        log_block, blocks_per_group, inodes_per_group = struct.unpack_from("<I4xI4xI", sb, 0x18)
        magic = struct.unpack_from("<H", sb, 0x38)[0]
        incompat = struct.unpack_from("<I", sb, 0x60)[0]
        blocks_hi = struct.unpack_from("<I", sb, 0x150)[0]
        free_hi = struct.unpack_from("<I", sb, 0x158)[0]
    except (OSError, struct.error) as e:
        raise Refused(f"cannot read the {name} superblock: {e}") from e
    if magic != MAGIC or log_block > 6:
        raise Refused(f"the {name} superblock is damaged")
    block = 1024 << log_block
    wide = bool(incompat & INCOMPAT_64BIT)
    blocks = blocks_lo | (blocks_hi << 32 if wide else 0)
    free = free_lo | (free_hi << 32 if wide else 0)
    return _ShrinkCounts(
        block,
        max(0, blocks - free) * block,
        max(0, inodes - free_inodes),
        inodes_per_group,
        blocks_per_group * block,
    )


def _debugfs(node: str, request: str) -> str:
    """debugfs's answer to ``request``, whatever its exit status (it exits 0 on most errors and
    prints what it found before a failure)."""
    return tools.output(["debugfs", "-R", request, node], timeout=120, any_status=True)


for _name in ("ext2", "ext3", "ext4"):
    register_kind(ExtKind(_name))
