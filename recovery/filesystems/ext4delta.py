"""ext2/3/4: which blocks of an image's file system a target holding the same file system may
differ in, read from the inodes instead of from the data (rapid delta restore, issue 15).

Called by :mod:`recovery.engine.restore` while it plans a delta restore of an ext partition
onto a target that already holds a state of the same file system. :func:`blocks_to_compare`
returns the byte ranges of the blocks that the plan must still read and
compare; every other block the image uses is the data of a regular file whose inode is the
same, byte for byte, on both sides, so the target already holds it. ``None`` when the rule does
not apply, and the plan then compares every cell as before.

The rule, and why it holds. A regular file's data changes only through writes, truncation,
fallocate or a change of its block map, and each of those sets the inode's ctime (and its
block map, size or flags) in the same journal transaction as the change. So when a file's
inode bytes -- ctime (to the nanosecond in 256-byte inodes), generation, block map, size; all
but the access time, which reading sets, and the checksum over it -- are the same on the
target as in the image, and the target's metadata is what the kernel last committed, the
target holds the same data in the same blocks. (A clock set back to the very second, or
nanosecond, of an earlier change could defeat it; nothing else that writes through the file
system can.) What that needs, checked here:

- both sides open as ext2/3/4 whose superblock checksum is right, with the same UUID, creation
  time, geometry, features and group descriptor locations (one file system, never resized
  since);
- both cleanly unmounted: state valid, no errors, no journal to replay, no orphans pending.
  A crashed target is compared cell by cell: an ``fdatasync`` can put a file's new data on
  disk while the transaction with its new ctime was not yet committed;
- no bigalloc (blocks and clusters differ) and no block-mapped (ext3-style) file whose blocks
  would have to be followed through indirect blocks: then ``None``.

Compared anyway (returned), whatever the inodes say: the superblocks and descriptors and their
reserved blocks, the bitmaps and inode tables, the MMP block; every block of an inode that is
not a plain regular file (directories, symbolic links, the journal, quota and orphan files,
every inode below ``s_first_ino``, extended-attribute inodes), or whose inode differs or is new;
extended-attribute blocks (shared between inodes, counted in place); the extent tree blocks
below every inode's root, and all the data of a file whose deeper tree blocks differ on the
target. Inodes are treated as in use whenever their mode is not zero, which
can only add blocks to compare.

Writes cut short are the one thing the inodes cannot show: a restore interrupted half way leaves
inode tables of one image beside data of another. So every restore and clone that writes an ext
partition first overwrites its primary superblock and writes the cell holding it last
(engine/restore.py, engine/clone.py); a target left so has no superblock, and this returns
``None``. Malformed input of any kind (both sides are read from disks and images that may be
damaged) also gives ``None``, never an exception.
"""

from __future__ import annotations

import struct
from array import array
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from recovery.core.extents import merge
from recovery.errors import RecoveryError
from recovery.filesystems import ext4
from recovery.filesystems.base import BlockSource

_INCOMPAT_MMP = 0x0100
_RO_COMPAT_ORPHAN_PRESENT = 0x10000
_INLINE_DATA_FL = 0x10000000
_EA_INODE_FL = 0x200000
_HUGE_FILE_FL = 0x40000
_RESIZE_INODE = 7
_INODE_UNINIT = 0x0001
_DIND = 0x28 + 13 * 4
_REGULAR = 0x8
_AHEAD = 6
"""Inode tables read ahead of the one being looked at (each of a few MiB at most)."""
_THREADS = 4
"""Threads reading them: an image's tables are decompressed, two at once on two cores."""

_INODE = struct.Struct("<H26xII68xI10xH")
"""i_mode; i_blocks_lo at 0x1C, i_flags at 0x20, i_file_acl_lo at 0x68, l_i_file_acl_high at
0x76."""
_HEADER = struct.Struct("<HHHH")
_LEAF = struct.Struct("<IHHI")
_INDEX = struct.Struct("<IIH")

# The high byte of i_mode with a file type other than none (0) or regular (8).
_NOT_PLAIN = bytes(0 if b >> 4 in (0, _REGULAR) else 1 for b in range(256))


_IN_USE = bytes(1 if b else 0 for b in range(256))
_NO_EXTENTS = bytes(0 if b & (ext4.EXTENTS_FL >> 16) else 1 for b in range(256))
_NO_INLINE = bytes(0 if b & (_INLINE_DATA_FL >> 24) else 1 for b in range(256))
_EA_INODE = bytes(1 if b & (_EA_INODE_FL >> 16) else 0 for b in range(256))


class _Unsupported(Exception):
    """The rule cannot be applied; compare every cell."""


def blocks_to_compare(
    image: BlockSource,
    target: BlockSource,
    found: Callable[[list[tuple[int, int]]], None] | None = None,
) -> list[tuple[int, int]] | None:
    """The byte ranges ``(offset, length)``, sorted and merged, of the blocks of ``image``'s
    file system whose bytes on ``target`` may differ, or ``None`` when every block must be
    compared (see the module's docstring).

    ``found``: called, as the inode tables are read group by group, with the ranges found so
    far beyond :func:`metadata_ranges` (unsorted, possibly overlapping), so a caller can start
    comparing them before the last table is read. Every range it gets is in the answer, unless
    the answer is ``None``."""
    try:
        return _blocks_to_compare(image, target, found)
    except (_Unsupported, RecoveryError, struct.error, ValueError, IndexError, OSError):
        return None


def _open(source: BlockSource) -> tuple[ext4.Ext4, bytes]:
    fs = ext4.Ext4.open(source)
    raw = source.pread(ext4.SUPERBLOCK_OFFSET, ext4.SUPERBLOCK_SIZE)
    sb = fs._layout.sb
    if fs.geometry.notes or sb.rev_level < 1 or sb.state & ext4.STATE_ERROR:
        raise _Unsupported("not cleanly unmounted")
    if sb.feature_incompat & ext4.INCOMPAT_RECOVER:
        raise _Unsupported("journal to replay")
    if sb.feature_ro_compat & (ext4.RO_COMPAT_BIGALLOC | _RO_COMPAT_ORPHAN_PRESENT):
        raise _Unsupported("bigalloc or orphans")
    if int.from_bytes(raw[0xE8:0xEC], "little"):  # s_last_orphan
        raise _Unsupported("orphans")
    return fs, raw


def _same_file_system(a: ext4.Ext4, raw_a: bytes, b: ext4.Ext4, raw_b: bytes) -> bool:
    la, lb = a._layout, b._layout
    fields = ("blocks_count", "block_size", "groups", "inode_size", "itable_blocks")
    if any(getattr(la, f) != getattr(lb, f) for f in fields):
        return False
    sa, sb = la.sb, lb.sb
    if (sa.inodes_count, sa.inodes_per_group, sa.uuid) != (
        sb.inodes_count,
        sb.inodes_per_group,
        sb.uuid,
    ):
        return False
    if (sa.feature_compat, sa.feature_incompat, sa.feature_ro_compat) != (
        sb.feature_compat,
        sb.feature_incompat,
        sb.feature_ro_compat,
    ):
        return False
    if raw_a[0x108:0x10C] != raw_b[0x108:0x10C]:  # s_mkfs_time
        return False
    da, db = a._desc, b._desc
    return (da.block_bitmap, da.inode_bitmap, da.inode_table) == (
        db.block_bitmap,
        db.inode_bitmap,
        db.inode_table,
    )


def metadata_ranges(image: BlockSource) -> list[tuple[int, int]] | None:
    """The byte ranges, sorted and merged, of the blocks :func:`blocks_to_compare` always
    returns for ``image`` (superblocks, descriptors, bitmaps, inode tables): known before any
    inode is read, so a caller can start comparing them at once. ``None`` when it would
    return ``None`` for any target."""
    try:
        fs, raw = _open(image)
        bs = fs._layout.block_size
        return [(f * bs, n * bs) for f, n in merge(sorted(_fixed(fs, raw)))]
    except (_Unsupported, RecoveryError, struct.error, ValueError, IndexError, OSError):
        return None


def _fixed(fs: ext4.Ext4, raw: bytes) -> list[tuple[int, int]]:
    lay, desc = fs._layout, fs._desc
    end = ext4.SUPERBLOCK_OFFSET + ext4.SUPERBLOCK_SIZE
    out: list[tuple[int, int]] = [(0, max(1, end // lay.block_size))]
    for g in range(lay.groups):
        out += lay.super_and_descriptors(g)
        out.append((desc.block_bitmap[g], 1))
        out.append((desc.inode_bitmap[g], 1))
        out.append((desc.inode_table[g], lay.itable_blocks))
    if lay.sb.feature_incompat & _INCOMPAT_MMP:
        out.append((int.from_bytes(raw[0x168:0x170], "little"), 1))
    return [(f, n) for f, n in out if n > 0]


def _blocks_to_compare(
    image: BlockSource,
    target: BlockSource,
    found: Callable[[list[tuple[int, int]]], None] | None,
) -> list[tuple[int, int]]:
    fs, raw = _open(image)
    other, other_raw = _open(target)
    if not _same_file_system(fs, raw, other, other_raw):
        raise _Unsupported("another file system")
    lay, desc = fs._layout, fs._desc
    sb, bs, isz = lay.sb, lay.block_size, lay.inode_size
    out = _fixed(fs, raw)
    told = len(out)
    first_ino = int.from_bytes(raw[0x54:0x58], "little")
    if not 1 <= first_ino <= sb.inodes_per_group:
        raise _Unsupported("s_first_ino")
    special = {int.from_bytes(raw[0xE0:0xE4], "little")} - {0}  # s_journal_inum
    for at in (0x240, 0x244, 0x26C, 0x280):  # quota inodes, s_orphan_file_inum
        special.add(int.from_bytes(raw[at : at + 4], "little"))
    special.discard(0)
    ipg = sb.inodes_per_group
    used = _used_inodes(image, lay)
    for g, b_tab, t_tab in _tables(image, target, lay, desc.inode_table, used):
        # The reserved inodes and the journal, quota and orphan files are always looked at.
        always = {
            n - 1 - g * ipg
            for n in special | set(range(1, first_ino))
            if g * ipg < n <= g * ipg + used[g]
        }
        for i in _candidates(b_tab, t_tab, used[g], isz, bs, always):
            ino = g * ipg + i + 1
            o = i * isz
            mode, i_blocks, flags, acl_lo, acl_hi = _INODE.unpack_from(b_tab, o)
            if mode == 0:
                continue
            acl = acl_lo | acl_hi << 32
            if acl:
                out.append((acl, 1))
            if flags & _INLINE_DATA_FL:
                continue
            if flags & ext4.EXTENTS_FL:
                plain = (
                    mode >> 12 == _REGULAR
                    and ino >= first_ino
                    and ino not in special
                    and not flags & _EA_INODE_FL
                    and _same_inode(b_tab[o : o + isz], t_tab[o : o + isz])
                )
                magic, entries, _most, depth = _HEADER.unpack_from(b_tab, o + 0x28)
                if depth == 0 and not plain and magic == ext4.EXTENT_MAGIC and entries <= 4:
                    # The usual folder or changed file: its extents in the inode itself.
                    for k in range(entries):
                        out.append(_leaf(b_tab, o + 0x34 + 12 * k, lay.blocks_count))
                else:
                    out += _extent_blocks(image, target, lay, b_tab[o + 0x28 : o + 0x64], plain)
            elif ino == _RESIZE_INODE:
                out.append((int.from_bytes(b_tab[o + _DIND : o + _DIND + 4], "little"), 1))
            elif flags & _HUGE_FILE_FL or i_blocks != (bs // 512 if acl else 0):
                # i_blocks counts 512-byte sectors, the attribute block's too: anything more
                # is data mapped through indirect blocks (ext3 style), not followed here.
                raise _Unsupported("a block-mapped file")
        if found is not None and len(out) > told:
            found([(f * bs, n * bs) for f, n in out[told:] if n > 0])
            told = len(out)
    out.sort()
    merged = list(merge(out))  # merge drops empty extents
    if merged and merged[-1][0] + merged[-1][1] > lay.blocks_count:
        raise _Unsupported("a block past the end")  # an attribute block, MMP or DIND block
    return [(first * bs, count * bs) for first, count in merged]


def _used_inodes(image: BlockSource, lay: ext4._Layout) -> list[int]:
    """Per group, how many inodes from the table's start may be in use: the group descriptor's
    ``bg_itable_unused`` (0 with ``INODE_UNINIT``), which the kernel keeps exact when a
    checksum feature is on (the descriptors' checksums were verified on opening); every inode
    otherwise."""
    ipg = lay.sb.inodes_per_group
    if not (lay.metadata_csum or lay.gdt_csum):
        return [ipg] * lay.groups
    out: list[int] = []
    for _first, table in ext4._Descriptors._table_pieces(lay, image):
        for at in range(0, len(table), lay.desc_size):
            flags, unused = struct.unpack_from("<HxxxxxxxxH", table, at + 0x12)
            if lay.desc_size >= 64:
                unused |= struct.unpack_from("<H", table, at + 0x32)[0] << 16
            out.append(0 if flags & _INODE_UNINIT else max(0, ipg - unused))
    if len(out) != lay.groups:
        raise _Unsupported("group descriptors")
    return out


def _masked(table: bytes, isz: int) -> bytearray:
    """An inode table (or one inode) with i_atime, l_i_checksum_lo, i_checksum_hi and
    i_atime_extra set to zero in every inode, by strided slices (reading sets the access time
    of thousands of inodes)."""
    out = bytearray(table)
    n = len(out) // isz
    words, halves = memoryview(out).cast("I"), memoryview(out).cast("H")
    zero_words, zero_halves = array("I", bytes(4 * n)), array("H", bytes(2 * n))
    words[0x08 // 4 :: isz // 4] = zero_words
    halves[0x7C // 2 :: isz // 2] = zero_halves
    if isz >= 0x90:
        halves[0x82 // 2 :: isz // 2] = zero_halves
        words[0x8C // 4 :: isz // 4] = zero_words
    return out


def _same_inode(a: bytes, b: bytes) -> bool:
    """Whether two inodes are the same but for their access time (``relatime`` sets it when a
    file is read) and the checksum, which covers that time too."""
    return a == b or _masked(a, len(a)) == _masked(b, len(b))


def _tables(
    image: BlockSource,
    target: BlockSource,
    lay: ext4._Layout,
    starts: Sequence[int],
    used: list[int],
) -> Iterator[tuple[int, bytes, bytes]]:
    """``(group, the used part of its inode table in the image, the same bytes on the
    target)``, whole blocks. Both sides are read on two threads, a few groups ahead: an
    image's tables are decompressed and a target's read from the device, neither holding
    the GIL."""
    bs, isz = lay.block_size, lay.inode_size
    wanted = [
        (g, start * bs, -(-used[g] * isz // bs) * bs) for g, start in enumerate(starts) if used[g]
    ]
    ahead: deque[tuple[int, int, Future[bytes], Future[bytes]]] = deque()

    def take() -> tuple[int, bytes, bytes]:
        g, length, a, b = ahead.popleft()
        got_a, got_b = a.result(), b.result()
        if len(got_a) != length or len(got_b) != length:
            raise _Unsupported("an inode table past the end")
        return g, got_a, got_b

    with ThreadPoolExecutor(_THREADS, thread_name_prefix="inodes") as pool:
        try:
            for g, at, length in wanted:
                a = pool.submit(image.pread, at, length)
                ahead.append((g, length, a, pool.submit(target.pread, at, length)))
                if len(ahead) > _AHEAD:
                    yield take()
            while ahead:
                yield take()
        finally:
            for _, _, a, b in ahead:
                a.cancel()
                b.cancel()


def _candidates(
    image: bytes, target: bytes, count: int, isz: int, bs: int, always: set[int]
) -> Iterator[int]:
    """Indexes of the inodes of one table that need a closer look: every one that is not a
    regular file or none, has an extended-attribute block or an extent tree deeper than its
    root, or differs from the target's (:func:`_same_inode`). The rest are regular files the
    same on both sides whose blocks all lie in their root: nothing to compare. Done with
    slices, not per inode: a table of 8192 inodes costs well under a millisecond when it is
    the same on both sides."""
    found = set(always)
    kinds = image[1 : count * isz : isz].translate(_NOT_PLAIN)
    at = kinds.find(1)
    while at >= 0:
        found.add(at)
        at = kinds.find(1, at + 1)
    words = memoryview(image).cast("I")
    for field in (0x68, 0x74):  # i_file_acl_lo; l_i_blocks_high and l_i_file_acl_high
        column = words[field // 4 : count * isz // 4 : isz // 4]
        if any(column):
            found.update(i for i, v in enumerate(column) if v and (field != 0x74 or v >> 16))
    halves = memoryview(image).cast("H")
    depth = halves[0x2E // 2 : count * isz // 2 : isz // 2]  # eh_depth of an extent root
    if any(depth):
        found.update(i for i, v in enumerate(depth) if v)
    # An inode in use without an extent tree or inline data (block-mapped, or holding no
    # blocks), found bytewise: its mode, and the i_flags bytes holding those two flags.
    end = count * isz
    in_use = int.from_bytes(image[1:end:isz].translate(_IN_USE), "big")
    flags = image[0x22:end:isz]
    mapped = (
        in_use
        & int.from_bytes(flags.translate(_NO_EXTENTS), "big")
        & int.from_bytes(image[0x23:end:isz].translate(_NO_INLINE), "big")
    )
    # Extended-attribute inodes (EA_INODE_FL, bit 5 of i_flags' third byte): always compared.
    mapped |= in_use & int.from_bytes(flags.translate(_EA_INODE), "big")
    if mapped:
        marks = mapped.to_bytes(count, "big")
        at = marks.find(1)
        while at >= 0:
            found.add(at)
            at = marks.find(1, at + 1)
    if image != target and (a := _masked(image, isz)) != (b := _masked(target, isz)):
        for k in range(0, count * isz, bs):
            if a[k : k + bs] != b[k : k + bs]:
                found.update(
                    i
                    for i in range(k // isz, min(count, (k + bs) // isz))
                    if a[i * isz : (i + 1) * isz] != b[i * isz : (i + 1) * isz]
                )
    return iter(sorted(found))


def _leaf(node: bytes, at: int, blocks_count: int) -> tuple[int, int]:
    """``(first block, count)`` of the leaf extent at ``at`` in ``node`` (a count over 32768
    marks an unwritten extent)."""
    _first, count, hi, lo = _LEAF.unpack_from(node, at)
    start, count = hi << 32 | lo, count - 32768 if count > 32768 else count
    if start + count > blocks_count:
        raise _Unsupported("an extent past the end")
    return start, count


def _extent_blocks(
    image: BlockSource, target: BlockSource, lay: ext4._Layout, root: bytes, plain: bool
) -> list[tuple[int, int]]:
    """The blocks of an extent tree to compare: its deeper nodes always, and its data too
    unless ``plain`` (a regular file the same on both sides) and every deeper node is the same
    on the target: moving a file's extents (``EXT4_IOC_MOVE_EXT``, e4defrag) rewrites the
    nodes below the inode without touching the inode itself."""
    out: list[tuple[int, int]] = []
    todo = [(root, ext4.MAX_EXTENT_DEPTH + 1)]
    seen = 0
    while todo:
        node, left = todo.pop()
        magic, entries, most, depth = _HEADER.unpack_from(node, 0)
        if magic != ext4.EXTENT_MAGIC or entries > most or 12 + 12 * entries > len(node):
            raise _Unsupported("an extent header")
        if depth >= left:
            raise _Unsupported("an extent tree too deep")
        for k in range(entries):
            e = 12 + 12 * k
            if depth == 0:
                if plain:
                    continue
                out.append(_leaf(node, e, lay.blocks_count))
            else:
                _first, lo, hi = _INDEX.unpack_from(node, e)
                child = hi << 32 | lo
                if not 0 < child < lay.blocks_count:
                    raise _Unsupported("an extent index past the end")
                out.append((child, 1))
                seen += 1
                if seen > lay.blocks_count:
                    raise _Unsupported("an extent tree that loops")
                at = child * lay.block_size
                block = image.pread(at, lay.block_size)
                if plain and block != target.pread(at, lay.block_size):
                    return _extent_blocks(image, target, lay, root, plain=False)
                todo.append((block, depth))
    return out
