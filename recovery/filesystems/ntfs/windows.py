"""What Windows keeps on an NTFS system volume that an image need not: pagefile.sys,
hiberfil.sys, swapfile.sys in the root directory, and whether Windows is hibernated.

Part of the NTFS home (:mod:`recovery.filesystems.ntfs`); the reader leaves these files'
clusters out unless asked to keep them (see the package docstring for the exceptions).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from recovery.core.extents import Extent
from recovery.filesystems.ntfs.layout import (
    AT_BITMAP,
    AT_DATA,
    AT_FILE_NAME,
    AT_INDEX_ALLOCATION,
    AT_INDEX_ROOT,
    FIXUP_STRIDE,
    HIBERFIL_HEADER,
    I30,
    INDEX_ENTRY,
    INDEX_ENTRY_END,
    INDEX_HEADER,
    INDEX_ROOT,
    MAX_RECORD,
    MAX_ROOT_INDEX,
    RECORD_IN_USE,
    RECORD_IS_DIRECTORY,
    RECORD_ROOT,
    REF_MASK,
    SYSTEM_FILES,
    Damage,
    Record,
    apply_fixup,
    file_names,
)
from recovery.filesystems.ntfs.volume import Volume

# --- root directory: finding pagefile.sys, hiberfil.sys, swapfile.sys ---------------------------


def _index_entries(buf: bytes, start: int, end: int, what: str) -> Iterator[tuple[int, int, str]]:
    """(MFT reference, parent record, name) of the $FILE_NAME keys in ``buf[start:end]``."""
    pos = start
    while pos + INDEX_ENTRY.size <= end:
        ref, length, key_len, flags = INDEX_ENTRY.unpack_from(buf, pos)
        if flags & INDEX_ENTRY_END:
            return
        if length < INDEX_ENTRY.size or length & 7 or pos + length > end:
            raise Damage(f"{what} has an index entry of length {length} at byte {pos}")
        key = pos + 0x10
        if 0x42 <= key_len <= length - 0x10:
            n = buf[key + 0x40]
            if 0x42 + 2 * n <= key_len:
                parent = int.from_bytes(buf[key : key + 8], "little") & REF_MASK
                name = buf[key + 0x42 : key + 0x42 + 2 * n].decode("utf-16-le", "replace")
                yield ref, parent, name
        pos += length
    raise Damage(f"{what} has no end entry")


def _root_index_names(vol: Volume, root: Record) -> Iterator[tuple[int, int, str]]:
    """Every $FILE_NAME key of the root directory's index ($I30), in no particular order.

    The index B-tree is read block by block rather than walked: it is small, and this needs no
    collation (the upcase table) and cannot loop.
    """
    index_root = vol.stream(root, AT_INDEX_ROOT, I30, "the root directory's index root")
    if index_root is None or index_root.resident_value is None:
        raise Damage("the root directory has no index root")
    value = index_root.resident_value
    if len(value) < 0x20:
        raise Damage("the root directory's index root is too short")
    indexed_type, _collation, block_size, _cpb = INDEX_ROOT.unpack_from(value)
    if indexed_type != AT_FILE_NAME:
        raise Damage("the root directory's index is not a file name index")
    entries_off, index_len, _alloc = INDEX_HEADER.unpack_from(value, 0x10)
    if 0x10 + index_len > len(value) or entries_off > index_len:
        raise Damage("the root directory's index root is malformed")
    yield from _index_entries(value, 0x10 + entries_off, 0x10 + index_len, "the root index")

    allocation = vol.stream(root, AT_INDEX_ALLOCATION, I30, "the root directory index")
    if allocation is None:
        return
    if block_size != vol.boot.index_block_size and (
        block_size & (block_size - 1) or not FIXUP_STRIDE <= block_size <= MAX_RECORD
    ):
        raise Damage(f"the root directory uses index blocks of {block_size} bytes")
    if allocation.data_size > MAX_ROOT_INDEX:
        raise Damage(f"the root directory's index claims {allocation.data_size} bytes")
    bitmap = vol.stream(root, AT_BITMAP, I30, "the root directory index bitmap")
    in_use = b""
    if bitmap is not None:
        in_use = vol.read_stream(bitmap, 0, min(bitmap.data_size, MAX_ROOT_INDEX // 512 // 8))
    for i in range(allocation.data_size // block_size):
        if bitmap is not None and not (i // 8 < len(in_use) and in_use[i // 8] >> (i % 8) & 1):
            continue
        what = f"root directory index block {i}"
        buf = bytearray(vol.read_stream(allocation, i * block_size, block_size))
        if buf[:4] != b"INDX":
            raise Damage(f"{what} does not start with INDX")
        apply_fixup(buf, what)
        entries_off, index_len, _alloc = INDEX_HEADER.unpack_from(buf, 0x18)
        if 0x18 + index_len > block_size or entries_off > index_len:
            raise Damage(f"{what} has a malformed header")
        yield from _index_entries(bytes(buf), 0x18 + entries_off, 0x18 + index_len, what)


@dataclass(frozen=True)
class SystemFile:
    name: str
    record: int
    size: int
    clusters: tuple[tuple[int, int], ...]
    """(lcn, count) of its data, in file order."""
    first_lcn: int | None
    """The cluster holding the file's first bytes (None when they are sparse or resident)."""
    header: bytes
    """The first bytes of its data (hiberfil.sys: the hibernation signature)."""


def find_system_files(vol: Volume) -> list[SystemFile]:
    """pagefile.sys, hiberfil.sys and swapfile.sys in the root directory, verified in the MFT."""
    root = vol.system_record(RECORD_ROOT, ".")
    if not root.flags & RECORD_IS_DIRECTORY:
        raise Damage("MFT record 5 (the root directory) is not a directory")
    candidates: dict[str, list[int]] = {}
    for ref, parent, name in _root_index_names(vol, root):
        key = name.lower()
        if parent == RECORD_ROOT and key in SYSTEM_FILES and ref not in candidates.get(key, ()):
            candidates.setdefault(key, []).append(ref)
    found = []
    for key, refs in sorted(candidates.items()):
        for ref in refs:
            number, sequence = ref & REF_MASK, ref >> 48
            rec = vol.record(number)
            if not rec.flags & RECORD_IN_USE or rec.flags & RECORD_IS_DIRECTORY:
                continue
            if rec.base_reference != 0 or (sequence and rec.sequence != sequence):
                continue  # a stale index entry: the record now holds something else
            names = file_names(vol.all_attributes(rec, AT_FILE_NAME))
            if not any(p == RECORD_ROOT and n.lower() == key for p, n in names):
                continue
            data = vol.stream(rec, AT_DATA, "", key)
            if data is None:
                break
            header = b""
            if data.initialized_size > 0:
                header = vol.read_stream(data, 0, min(HIBERFIL_HEADER, data.data_size))
            first = data.runs[0].lcn if data.runs else None
            found.append(
                SystemFile(key, number, data.data_size, tuple(data.clusters()), first, header)
            )
            break
    return found


_SHUT_DOWN_FULLY = (
    "For an image that starts cleanly: start Windows, shut it down fully (hold Shift while "
    "choosing Shut down, or run 'shutdown /s /t 0'), then make the image again"
)


def hibernation_note(header: bytes) -> str | None:
    """What to tell a person about hiberfil.sys's signature, or None if it is not in use."""
    signature = header[:4].lower()
    if signature in (b"hibr", b"rstr"):
        return (
            "Windows on this volume is hibernated or was shut down with Fast Startup. It is "
            "imaged as it is, without changing it, and hiberfil.sys is stored whole so that the "
            "restored disk can resume that session; changes Windows had not yet written to the "
            "disk exist only in that session. " + _SHUT_DOWN_FULLY
        )
    if signature == b"wake":
        return (
            "Windows on this volume tried to resume from hibernation and did not finish; at its "
            "next start it will offer to resume or to delete the restoration data. hiberfil.sys "
            "is stored whole so that this choice stays the same on the restored disk. "
            + _SHUT_DOWN_FULLY
        )
    return None


def subtract_holes(
    runs: Iterable[tuple[int, int]], holes: list[tuple[int, int]]
) -> Iterator[Extent]:
    """``runs`` minus ``holes``; both sorted by start, ``holes`` non-overlapping."""
    i = 0
    for start, length in runs:
        end = start + length
        while i < len(holes) and holes[i][0] + holes[i][1] <= start:
            i += 1
        j = i
        while start < end and j < len(holes) and holes[j][0] < end:
            h_start, h_end = holes[j][0], holes[j][0] + holes[j][1]
            if h_start > start:
                yield Extent(start, h_start - start)
            start = max(start, h_end)
            j += 1
        if start < end:
            yield Extent(start, end - start)


def overlaps(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> bool:
    """Whether two sorted, merged run lists share a cluster."""
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i][0] + a[i][1] <= b[j][0]:
            i += 1
        elif b[j][0] + b[j][1] <= a[i][0]:
            j += 1
        else:
            return True
    return False
