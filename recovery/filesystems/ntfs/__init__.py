"""NTFS: geometry and used clusters, read from the volume's own cluster bitmap ($Bitmap).

Called through the registry in :mod:`recovery.filesystems.base` (``open_filesystem``) by backup
and clone; ``detect_encrypted`` is for callers that must say why a volume (BitLocker, LUKS) is
imaged sector by sector. Promises:

- ``Ntfs.open`` reads the boot sector, MFT records 0 ($MFT), 3 ($Volume), 5 (the root directory)
  and 6 ($Bitmap), their extension records when an attribute list points there, and the root
  directory's index. Every field is checked before it is used, so damaged or hostile metadata
  raises :class:`DamagedFileSystem` naming what is wrong (never IndexError, struct.error, a huge
  allocation or an endless loop); every read is bounded by the volume, by Windows' own limits or
  by a fixed cap. ``used_extents`` reads the bitmap in 1 MiB pieces, so memory stays flat.
- ``used_extents`` yields byte ranges relative to the partition start, sorted and merged: every
  cluster the bitmap marks in use (cluster 0 holds the boot sector), and the backup boot sector
  (the sector after the last one NTFS counts, normally the partition's last sector).
- Unless ``keep_system_files`` is set, the clusters of the unnamed data of ``pagefile.sys``,
  ``hiberfil.sys`` and ``swapfile.sys`` in the root directory are left out: Windows recreates
  them, and they are often the largest files on a system volume. Two exceptions keep a restore
  from resuming the wrong session: a hiberfil.sys that holds a hibernated session is stored
  whole, and of an unused one the first cluster (its header, "not hibernated") is stored, so a
  restore overwrites whatever header the target disk has there. Clusters these files would share
  with the file system's own metadata are never left out.
- ``geometry.notes`` tells a person, in plain words, about a hibernated Windows or one shut down
  with Fast Startup (hiberfil.sys header), a volume marked dirty, and what was left out.

Why the root directory index and not a scan of the whole MFT: the three files live in the root
directory, whose index is a few blocks long, so finding them costs a handful of reads whatever
the number of files; a scan of the MFT would read every record (gigabytes on a large volume).
Index entries are checked against the MFT record they point to (in use, parent is the root,
same name, same sequence number), so a stale entry cannot make us drop a live file's clusters.
A damaged root directory only costs the exclusion (a note says so); it is not an error.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property

from recovery.core.bitmap import set_runs
from recovery.core.extents import Extent, merge
from recovery.core.units import human_size
from recovery.errors import DamagedFileSystem, NotThisFileSystem
from recovery.filesystems.base import BlockSource, FileSystem, Geometry, register
from recovery.filesystems.encrypted import detect_encrypted as detect_encrypted

NTFS_OEM = b"NTFS    "

SYSTEM_FILES = ("pagefile.sys", "hiberfil.sys", "swapfile.sys")

# The update sequence (fixup) stride is 512 bytes whatever the sector size.
_FIXUP_STRIDE = 512
_MAX_CLUSTER = 2 << 20  # Windows' largest cluster size
_MAX_RECORD = 64 << 10
_BITMAP_PIECE = 1 << 20  # bytes of $Bitmap read at a time (8 Mi clusters)
_UNIFORM_BLOCK = 64 << 10  # all-zero / all-one stretches of the bitmap skipped at memcmp speed
_ZERO_BLOCK = bytes(_UNIFORM_BLOCK)
_FULL_BLOCK = b"\xff" * _UNIFORM_BLOCK
# The root directory index is small on any real volume; past this size it is treated as damaged
# rather than read. Windows caps an attribute list at 256 KiB (Microsoft, "The four stages of
# NTFS file growth, part 2").
_MAX_ROOT_INDEX = 64 << 20
_MAX_ATTRIBUTE_LIST = 256 << 10
_HIBERFIL_HEADER = 4096
# Records kept after reading: the system files and their first extension records. A hostile
# attribute list can point at tens of thousands of records; those are read, not kept.
_CACHED_RECORDS = 64

_MFT, _VOLUME, _ROOT, _BITMAP = 0, 3, 5, 6
_REF_MASK = (1 << 48) - 1

# Attribute types.
_AT_ATTRIBUTE_LIST = 0x20
_AT_FILE_NAME = 0x30
_AT_VOLUME_NAME = 0x60
_AT_VOLUME_INFORMATION = 0x70
_AT_DATA = 0x80
_AT_INDEX_ROOT = 0x90
_AT_INDEX_ALLOCATION = 0xA0
_AT_BITMAP = 0xB0
_AT_END = 0xFFFFFFFF

_VOLUME_IS_DIRTY = 0x0001
_RECORD_IN_USE = 0x0001
_RECORD_IS_DIRECTORY = 0x0002
_INDEX_ENTRY_END = 0x0002
_I30 = "$I30"

# Boot sector fields up to the checksum (offsets 0..83).
_BOOT = struct.Struct("<3s8sHBHBHHBHHHII4xQQQb3xb3xQI")
_RECORD_HEADER = struct.Struct("<4sHHQHHHHIIQH")  # FILE record, offsets 0..0x29
_ATTR_HEADER = struct.Struct("<IIBBHHH")  # type, length, non_resident, name_len, name_off, ...
_RESIDENT = struct.Struct("<IH")  # value length, value offset (at 0x10)
_NONRESIDENT = struct.Struct("<qqH6xqqq")  # lowest/highest VCN, runs offset, sizes (at 0x10)
_ATTR_LIST_ENTRY = struct.Struct("<IHBBQQH")
_INDEX_ENTRY = struct.Struct("<QHHH")
_INDEX_HEADER = struct.Struct("<III")  # entries offset, index length, allocated size
_INDEX_ROOT = struct.Struct("<IIIB")  # indexed type, collation, block size, clusters per block


class _Damage(DamagedFileSystem):
    """NTFS metadata is damaged; ``detail`` names what, without the advice."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            f"NTFS metadata is damaged: {detail}. "
            "Repair the volume (chkdsk /f in Windows) and try again"
        )
        self.detail = detail


@dataclass(frozen=True)
class BootSector:
    bytes_per_sector: int
    cluster_size: int
    total_sectors: int
    mft_lcn: int
    mftmirr_lcn: int
    record_size: int
    index_block_size: int
    serial: int

    @property
    def total_clusters(self) -> int:
        return self.total_sectors * self.bytes_per_sector // self.cluster_size


def _size_from_clusters_per(value: int, cluster_size: int, what: str) -> int:
    """Decode the signed byte for MFT record / index block size (negative: 2**-value bytes)."""
    if value > 0:
        size = value * cluster_size
    elif -31 <= value < 0:
        size = 1 << -value
    else:
        raise _Damage(f"the boot sector's {what} size code {value} is invalid")
    if size & (size - 1) or not _FIXUP_STRIDE <= size <= _MAX_RECORD:
        raise _Damage(f"the boot sector gives {what}s of {size} bytes (expected 512..64 KiB)")
    return size


def parse_boot_sector(data: bytes, volume_bytes: int) -> BootSector:
    """Check every field of an NTFS boot sector; ``volume_bytes`` is the partition's size."""
    if len(data) < 512 or data[3:11] != NTFS_OEM:
        raise NotThisFileSystem("no NTFS boot sector")
    (_jump, _oem, bps, spc_code, reserved, fats, root_entries, sectors16, _media, fat_sectors,
     _spt, _heads, _hidden, sectors32, total_sectors, mft_lcn, mftmirr_lcn, mft_code,
     index_code, serial, _checksum) = _BOOT.unpack_from(data)  # fmt: skip
    if bps & (bps - 1) or not 256 <= bps <= 4096:
        raise _Damage(f"the boot sector gives {bps} bytes per sector (expected 256..4096)")
    if spc_code <= 0x80:
        spc = spc_code
    elif 256 - spc_code <= 31:
        spc = 1 << (256 - spc_code)  # large clusters: a negative exponent
    else:
        spc = 0
    cluster_size = spc * bps
    if spc == 0 or spc & (spc - 1) or cluster_size > _MAX_CLUSTER:
        raise _Damage(f"the boot sector's sectors-per-cluster code {spc_code:#x} is invalid")
    if reserved or fats or root_entries or sectors16 or fat_sectors or sectors32:
        raise _Damage("the boot sector has FAT fields set that NTFS keeps at zero")
    if total_sectors <= 0:
        raise _Damage("the boot sector says the volume has no sectors")
    if total_sectors * bps > volume_bytes:
        raise _Damage(
            f"the boot sector says the volume is {total_sectors * bps} bytes but the partition "
            f"holds only {volume_bytes} (was the partition shrunk?)"
        )
    total_clusters = total_sectors * bps // cluster_size
    if total_clusters < 16:
        raise _Damage(f"the volume has only {total_clusters} clusters")
    for name, lcn in (("MFT", mft_lcn), ("MFT mirror", mftmirr_lcn)):
        if not 0 < lcn < total_clusters:
            raise _Damage(f"the {name} starts at cluster {lcn}, outside the volume")
    return BootSector(
        bytes_per_sector=bps,
        cluster_size=cluster_size,
        total_sectors=total_sectors,
        mft_lcn=mft_lcn,
        mftmirr_lcn=mftmirr_lcn,
        record_size=_size_from_clusters_per(mft_code, cluster_size, "MFT record"),
        index_block_size=_size_from_clusters_per(index_code, cluster_size, "index block"),
        serial=serial,
    )


# --- MFT records ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    vcn: int
    lcn: int | None
    """None for a sparse run (no clusters behind it)."""
    length: int


@dataclass(frozen=True)
class Attribute:
    type: int
    name: str
    flags: int
    resident: bool
    value: bytes = b""
    """Resident attributes only."""
    lowest_vcn: int = 0
    highest_vcn: int = -1
    runs: tuple[Run, ...] = ()
    allocated_size: int = 0
    data_size: int = 0
    initialized_size: int = 0


@dataclass(frozen=True)
class Record:
    number: int
    flags: int
    sequence: int
    base_reference: int
    attributes: tuple[Attribute, ...]

    def find(self, type_: int, name: str = "") -> Attribute | None:
        for a in self.attributes:
            if a.type == type_ and a.name == name:
                return a
        return None


def apply_fixup(buf: bytearray, what: str) -> None:
    """Check and undo the update sequence of a multi-sector record, in place."""
    usa_ofs, usa_count = struct.unpack_from("<HH", buf, 4)
    sectors = len(buf) // _FIXUP_STRIDE
    if usa_ofs & 1 or usa_ofs < 8 or usa_count != sectors + 1 or usa_ofs + 2 * usa_count > len(buf):
        raise _Damage(f"{what} has an invalid update sequence array")
    usn = buf[usa_ofs : usa_ofs + 2]
    for i in range(1, usa_count):
        end = i * _FIXUP_STRIDE
        if buf[end - 2 : end] != usn:
            raise _Damage(f"{what} fails its update-sequence check in sector {i - 1} (torn write)")
        buf[end - 2 : end] = buf[usa_ofs + 2 * i : usa_ofs + 2 * i + 2]


def decode_runs(
    data: bytes, pos: int, end: int, lowest_vcn: int, highest_vcn: int, clusters: int, what: str
) -> tuple[Run, ...]:
    """Decode NTFS mapping pairs in ``data[pos:end]``; every run must lie inside the volume."""
    runs: list[Run] = []
    vcn = lowest_vcn
    lcn = 0
    while True:
        if pos >= end:
            raise _Damage(f"the data runs of {what} have no terminator")
        header = data[pos]
        if header == 0:
            break
        len_size, off_size = header & 0x0F, header >> 4
        if not 1 <= len_size <= 8 or off_size > 8 or pos + 1 + len_size + off_size > end:
            raise _Damage(f"the data runs of {what} are malformed at byte {pos}")
        pos += 1
        length = int.from_bytes(data[pos : pos + len_size], "little", signed=True)
        pos += len_size
        if length <= 0:
            raise _Damage(f"a data run of {what} has length {length}")
        if off_size:
            lcn += int.from_bytes(data[pos : pos + off_size], "little", signed=True)
            pos += off_size
            if lcn < 0 or lcn + length > clusters:
                raise _Damage(
                    f"a data run of {what} points at clusters {lcn}..{lcn + length - 1}, "
                    f"outside the volume's {clusters}"
                )
            runs.append(Run(vcn, lcn, length))
        else:
            runs.append(Run(vcn, None, length))
        vcn += length
    if vcn != highest_vcn + 1:
        raise _Damage(
            f"the data runs of {what} cover clusters {lowest_vcn}..{vcn - 1} "
            f"but the attribute says {lowest_vcn}..{highest_vcn}"
        )
    return tuple(runs)


def parse_record(buf: bytearray, number: int, clusters: int) -> Record:
    """Parse one FILE record (fixups applied here); every offset is bounds-checked."""
    what = f"MFT record {number}"
    magic = bytes(buf[:4])
    if magic == b"BAAD":
        raise _Damage(f"{what} is marked bad (BAAD) by a previous check")
    if magic != b"FILE":
        raise _Damage(f"{what} does not start with FILE (found {magic!r})")
    apply_fixup(buf, what)
    (_m, usa_ofs, _usa_count, _lsn, sequence, _links, attrs_offset, flags, in_use_bytes,
     allocated, base_ref, _next_instance) = _RECORD_HEADER.unpack_from(buf)  # fmt: skip
    size = len(buf)
    if allocated != size:
        raise _Damage(f"{what} says it is {allocated} bytes, the boot sector says {size}")
    if not 0x18 <= in_use_bytes <= size or not 0x18 <= attrs_offset < in_use_bytes:
        raise _Damage(f"{what} has an invalid header (bytes in use {in_use_bytes})")
    if usa_ofs >= 0x30:  # NTFS 3.1 records carry their own number
        (own,) = struct.unpack_from("<I", buf, 0x2C)
        if own != number & 0xFFFFFFFF:
            raise _Damage(f"{what} says it is record {own}")
    attributes: list[Attribute] = []
    pos = attrs_offset
    while True:
        if pos + 4 > in_use_bytes:
            raise _Damage(f"{what} has no end-of-attributes marker")
        (type_,) = struct.unpack_from("<I", buf, pos)
        if type_ == _AT_END:
            break
        if pos + _ATTR_HEADER.size > in_use_bytes:
            raise _Damage(f"{what} has a truncated attribute at byte {pos}")
        _t, length, non_resident, name_len, name_off, attr_flags, _inst = _ATTR_HEADER.unpack_from(
            buf, pos
        )
        minimum = 0x40 if non_resident else 0x18
        if length < minimum or length & 7 or pos + length > in_use_bytes:
            raise _Damage(f"{what} has an attribute of type {type_:#x} with length {length}")
        attr = bytes(buf[pos : pos + length])
        name = ""
        if name_len:
            if name_off + 2 * name_len > length:
                raise _Damage(f"{what}: an attribute name lies outside its attribute")
            name = attr[name_off : name_off + 2 * name_len].decode("utf-16-le", "replace")
        attr_what = f"attribute {type_:#x} of {what}"
        if non_resident:
            lowest, highest, runs_off, alloc_size, data_size, init_size = _NONRESIDENT.unpack_from(
                attr, 0x10
            )
            if not 0 <= lowest <= highest + 1 or not runs_off < length:
                raise _Damage(f"{attr_what} has an invalid cluster range")
            if lowest == 0 and not 0 <= init_size <= data_size <= alloc_size:
                raise _Damage(f"{attr_what} has inconsistent sizes")
            runs = decode_runs(attr, runs_off, length, lowest, highest, clusters, attr_what)
            attributes.append(
                Attribute(
                    type_,
                    name,
                    attr_flags,
                    resident=False,
                    lowest_vcn=lowest,
                    highest_vcn=highest,
                    runs=runs,
                    allocated_size=alloc_size,
                    data_size=data_size,
                    initialized_size=init_size,
                )
            )
        else:
            value_len, value_off = _RESIDENT.unpack_from(attr, 0x10)
            if value_off + value_len > length:
                raise _Damage(f"{attr_what} has a value outside its attribute")
            value = attr[value_off : value_off + value_len]
            attributes.append(Attribute(type_, name, attr_flags, True, value))
        pos += length
    return Record(number, flags, sequence, base_ref & _REF_MASK, tuple(attributes))


def _file_names(attributes: Iterable[Attribute]) -> list[tuple[int, str]]:
    """(parent record number, name) of every $FILE_NAME among ``attributes``."""
    out = []
    for a in attributes:
        if a.type == _AT_FILE_NAME and a.resident and len(a.value) >= 0x42:
            n = a.value[0x40]
            if 0x42 + 2 * n <= len(a.value):
                parent = int.from_bytes(a.value[:8], "little") & _REF_MASK
                out.append((parent, a.value[0x42 : 0x42 + 2 * n].decode("utf-16-le", "replace")))
    return out


# --- the volume ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataStream:
    """A non-resident or resident stream gathered from all its attribute segments."""

    what: str
    resident_value: bytes | None
    runs: tuple[Run, ...]
    data_size: int
    initialized_size: int

    @cached_property
    def vcns(self) -> list[int]:
        """The first VCN of each run (for bisection)."""
        return [r.vcn for r in self.runs]

    def clusters(self) -> Iterator[tuple[int, int]]:
        """(lcn, count) of the allocated runs, in VCN order."""
        for r in self.runs:
            if r.lcn is not None:
                yield r.lcn, r.length


class _Volume:
    """Random access to the MFT and to attribute data of one NTFS volume."""

    def __init__(self, source: BlockSource, boot: BootSector) -> None:
        self.source = source
        self.boot = boot
        self.clusters = boot.total_clusters
        self.mft: DataStream | None = None
        self._records: dict[int, Record] = {}
        self._lists: dict[int, bytes] = {}

    def read(self, offset: int, length: int, what: str) -> bytes:
        data = self.source.pread(offset, length)
        if len(data) != length:
            raise _Damage(f"{what} lies beyond the end of the partition")
        return data

    def read_stream(self, stream: DataStream, offset: int, length: int) -> bytes:
        """Bytes of a stream; sparse runs and bytes past the initialized size read as zeros."""
        if stream.resident_value is not None:
            return stream.resident_value[offset : offset + length].ljust(length, b"\0")
        cs = self.boot.cluster_size
        if offset + length > stream.data_size:
            raise _Damage(f"a read of {stream.what} goes past its end")
        out = bytearray()
        vcns = stream.vcns
        pos = offset
        end = offset + length
        while pos < end:
            vcn = pos // cs
            i = bisect.bisect_right(vcns, vcn) - 1
            if i < 0 or vcn >= stream.runs[i].vcn + stream.runs[i].length:
                raise _Damage(f"{stream.what} has no cluster for byte {pos}")
            run = stream.runs[i]
            run_end = (run.vcn + run.length) * cs
            n = min(end, run_end) - pos
            if run.lcn is None or pos >= stream.initialized_size:
                out += bytes(n)
            else:
                out += self.read((run.lcn - run.vcn) * cs + pos, n, stream.what)
            pos += n
        if end > stream.initialized_size:
            keep = max(0, stream.initialized_size - offset)
            out[keep:] = bytes(len(out) - keep)
        return bytes(out)

    def record(self, number: int) -> Record:
        cached = self._records.get(number)
        if cached is not None:
            return cached
        rs = self.boot.record_size
        if self.mft is None:
            raise AssertionError("the MFT is read before any other record")
        if (number + 1) * rs > self.mft.data_size:
            raise _Damage(f"MFT record {number} lies beyond the end of the MFT")
        buf = bytearray(self.read_stream(self.mft, number * rs, rs))
        rec = parse_record(buf, number, self.clusters)
        if number < _CACHED_RECORDS:
            self._records[number] = rec  # the system records, read again and again
        return rec

    def stream(self, base: Record, type_: int, name: str, what: str) -> DataStream | None:
        """The whole attribute ``type_``/``name`` of a file, following $ATTRIBUTE_LIST."""
        segments = self._segments(base, type_, name, what)
        if not segments:
            return None
        first = segments[0]
        if first.resident:
            if len(segments) > 1:
                raise _Damage(f"{what} is both resident and split over records")
            return DataStream(what, first.value, (), len(first.value), len(first.value))
        runs: list[Run] = []
        expect = 0
        for seg in segments:
            if seg.resident or seg.lowest_vcn != expect:
                raise _Damage(f"the pieces of {what} do not follow each other")
            runs.extend(seg.runs)
            expect = seg.highest_vcn + 1
        if first.allocated_size > expect * self.boot.cluster_size:
            raise _Damage(f"{what} has fewer clusters than its allocated size")
        return DataStream(what, None, tuple(runs), first.data_size, first.initialized_size)

    def all_attributes(self, base: Record, type_: int) -> list[Attribute]:
        """Every attribute of ``type_`` of a file, in its base record and extension records."""
        records = [base]
        if base.find(_AT_ATTRIBUTE_LIST) is not None:
            refs = {ref for _lowest, ref in self._list_entries(base, type_, None)}
            records += [self._extension(base, ref) for ref in sorted(refs - {base.number})]
        return [a for r in records for a in r.attributes if a.type == type_]

    def _extension(self, base: Record, ref: int) -> Record:
        rec = self.record(ref)
        if rec.base_reference != base.number or not rec.flags & _RECORD_IN_USE:
            raise _Damage(f"MFT record {ref} does not belong to record {base.number}")
        return rec

    def _segments(self, base: Record, type_: int, name: str, what: str) -> list[Attribute]:
        local = [a for a in base.attributes if a.type == type_ and a.name == name]
        if base.find(_AT_ATTRIBUTE_LIST) is None:
            return sorted(local, key=lambda a: a.lowest_vcn)
        wanted = sorted(self._list_entries(base, type_, name))
        segments: list[Attribute] = []
        for lowest, ref in wanted:
            rec = base if ref == base.number else self._extension(base, ref)
            for a in rec.attributes:
                if a.type == type_ and a.name == name and a.lowest_vcn == lowest:
                    segments.append(a)
                    break
            else:
                raise _Damage(f"{what}: MFT record {ref} lacks the piece the list points at")
            if base.number == _MFT and not a.resident:
                # The MFT maps itself: each piece makes the next extension record reachable.
                self._extend_mft(a)
        return segments

    def _list_entries(self, base: Record, type_: int, name: str | None) -> list[tuple[int, int]]:
        """(lowest VCN, record number) of the attribute list entries for ``type_``/``name``
        (any name when ``name`` is None)."""
        alist = base.find(_AT_ATTRIBUTE_LIST)
        assert alist is not None
        raw = self._lists.get(base.number)
        if raw is not None:
            pass
        elif alist.resident:
            raw = alist.value
        else:
            if alist.data_size > _MAX_ATTRIBUTE_LIST:
                raise _Damage(f"the attribute list of MFT record {base.number} is too large")
            list_stream = DataStream(
                f"the attribute list of MFT record {base.number}",
                None,
                alist.runs,
                alist.data_size,
                alist.initialized_size,
            )
            raw = self.read_stream(list_stream, 0, alist.data_size)
        self._lists[base.number] = raw
        wanted: list[tuple[int, int]] = []
        pos = 0
        while pos + _ATTR_LIST_ENTRY.size <= len(raw):
            t, length, name_len, name_off, lowest, ref, _inst = _ATTR_LIST_ENTRY.unpack_from(
                raw, pos
            )
            if length < _ATTR_LIST_ENTRY.size or pos + length > len(raw):
                raise _Damage(f"the attribute list of MFT record {base.number} is malformed")
            entry_name = ""
            if name_len:
                if name_off + 2 * name_len > length:
                    raise _Damage(f"an attribute list entry of MFT record {base.number} is bad")
                entry_name = raw[pos + name_off : pos + name_off + 2 * name_len].decode(
                    "utf-16-le", "replace"
                )
            if t == type_ and (name is None or entry_name == name):
                wanted.append((lowest, ref & _REF_MASK))
            pos += length
        return wanted

    def _extend_mft(self, seg: Attribute) -> None:
        assert self.mft is not None
        if seg.lowest_vcn == 0:
            return  # the piece in record 0 is already mapped
        last = self.mft.runs[-1] if self.mft.runs else None
        if last is not None and seg.lowest_vcn == last.vcn + last.length:
            self.mft = DataStream(
                self.mft.what,
                None,
                self.mft.runs + seg.runs,
                self.mft.data_size,
                self.mft.initialized_size,
            )

    def open_mft(self) -> DataStream:
        """Read record 0 straight from the boot sector's MFT cluster, then map the whole MFT."""
        rs = self.boot.record_size
        buf = bytearray(self.read(self.boot.mft_lcn * self.boot.cluster_size, rs, "MFT record 0"))
        base = parse_record(buf, _MFT, self.clusters)
        if not base.flags & _RECORD_IN_USE:
            raise _Damage("MFT record 0 ($MFT) is not in use")
        first = base.find(_AT_DATA)
        if first is None or first.resident or first.lowest_vcn != 0:
            raise _Damage("MFT record 0 ($MFT) has no usable data attribute")
        self.mft = DataStream("$MFT", None, first.runs, first.data_size, first.initialized_size)
        stream = self.stream(base, _AT_DATA, "", "$MFT")
        assert stream is not None
        if stream.data_size < 16 * rs:
            raise _Damage(f"the MFT is only {stream.data_size} bytes long")
        if not stream.runs or stream.runs[0].lcn != self.boot.mft_lcn:
            raise _Damage("the MFT's data does not start where the boot sector says")
        self.mft = stream
        self._records[_MFT] = base
        return stream

    def system_record(self, number: int, name: str) -> Record:
        rec = self.record(number)
        if not rec.flags & _RECORD_IN_USE:
            raise _Damage(f"MFT record {number} ({name}) is not in use")
        names = [n for p, n in _file_names(self.all_attributes(rec, _AT_FILE_NAME)) if p == _ROOT]
        if names and name not in names:
            raise _Damage(f"MFT record {number} should be {name} but is named {names[0]}")
        return rec


# --- root directory: finding pagefile.sys, hiberfil.sys, swapfile.sys ---------------------------


def _index_entries(buf: bytes, start: int, end: int, what: str) -> Iterator[tuple[int, int, str]]:
    """(MFT reference, parent record, name) of the $FILE_NAME keys in ``buf[start:end]``."""
    pos = start
    while pos + _INDEX_ENTRY.size <= end:
        ref, length, key_len, flags = _INDEX_ENTRY.unpack_from(buf, pos)
        if flags & _INDEX_ENTRY_END:
            return
        if length < _INDEX_ENTRY.size or length & 7 or pos + length > end:
            raise _Damage(f"{what} has an index entry of length {length} at byte {pos}")
        key = pos + 0x10
        if 0x42 <= key_len <= length - 0x10:
            n = buf[key + 0x40]
            if 0x42 + 2 * n <= key_len:
                parent = int.from_bytes(buf[key : key + 8], "little") & _REF_MASK
                name = buf[key + 0x42 : key + 0x42 + 2 * n].decode("utf-16-le", "replace")
                yield ref, parent, name
        pos += length
    raise _Damage(f"{what} has no end entry")


def _root_index_names(vol: _Volume, root: Record) -> Iterator[tuple[int, int, str]]:
    """Every $FILE_NAME key of the root directory's index ($I30), in no particular order.

    The index B-tree is read block by block rather than walked: it is small, and this needs no
    collation (the upcase table) and cannot loop.
    """
    index_root = vol.stream(root, _AT_INDEX_ROOT, _I30, "the root directory's index root")
    if index_root is None or index_root.resident_value is None:
        raise _Damage("the root directory has no index root")
    value = index_root.resident_value
    if len(value) < 0x20:
        raise _Damage("the root directory's index root is too short")
    indexed_type, _collation, block_size, _cpb = _INDEX_ROOT.unpack_from(value)
    if indexed_type != _AT_FILE_NAME:
        raise _Damage("the root directory's index is not a file name index")
    entries_off, index_len, _alloc = _INDEX_HEADER.unpack_from(value, 0x10)
    if 0x10 + index_len > len(value) or entries_off > index_len:
        raise _Damage("the root directory's index root is malformed")
    yield from _index_entries(value, 0x10 + entries_off, 0x10 + index_len, "the root index")

    allocation = vol.stream(root, _AT_INDEX_ALLOCATION, _I30, "the root directory index")
    if allocation is None:
        return
    if block_size != vol.boot.index_block_size and (
        block_size & (block_size - 1) or not _FIXUP_STRIDE <= block_size <= _MAX_RECORD
    ):
        raise _Damage(f"the root directory uses index blocks of {block_size} bytes")
    if allocation.data_size > _MAX_ROOT_INDEX:
        raise _Damage(f"the root directory's index claims {allocation.data_size} bytes")
    bitmap = vol.stream(root, _AT_BITMAP, _I30, "the root directory index bitmap")
    in_use = b""
    if bitmap is not None:
        in_use = vol.read_stream(bitmap, 0, min(bitmap.data_size, _MAX_ROOT_INDEX // 512 // 8))
    for i in range(allocation.data_size // block_size):
        if bitmap is not None and not (i // 8 < len(in_use) and in_use[i // 8] >> (i % 8) & 1):
            continue
        what = f"root directory index block {i}"
        buf = bytearray(vol.read_stream(allocation, i * block_size, block_size))
        if buf[:4] != b"INDX":
            raise _Damage(f"{what} does not start with INDX")
        apply_fixup(buf, what)
        entries_off, index_len, _alloc = _INDEX_HEADER.unpack_from(buf, 0x18)
        if 0x18 + index_len > block_size or entries_off > index_len:
            raise _Damage(f"{what} has a malformed header")
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


def find_system_files(vol: _Volume) -> list[SystemFile]:
    """pagefile.sys, hiberfil.sys and swapfile.sys in the root directory, verified in the MFT."""
    root = vol.system_record(_ROOT, ".")
    if not root.flags & _RECORD_IS_DIRECTORY:
        raise _Damage("MFT record 5 (the root directory) is not a directory")
    candidates: dict[str, list[int]] = {}
    for ref, parent, name in _root_index_names(vol, root):
        key = name.lower()
        if parent == _ROOT and key in SYSTEM_FILES and ref not in candidates.get(key, ()):
            candidates.setdefault(key, []).append(ref)
    found = []
    for key, refs in sorted(candidates.items()):
        for ref in refs:
            number, sequence = ref & _REF_MASK, ref >> 48
            rec = vol.record(number)
            if not rec.flags & _RECORD_IN_USE or rec.flags & _RECORD_IS_DIRECTORY:
                continue
            if rec.base_reference != 0 or (sequence and rec.sequence != sequence):
                continue  # a stale index entry: the record now holds something else
            names = _file_names(vol.all_attributes(rec, _AT_FILE_NAME))
            if not any(p == _ROOT and n.lower() == key for p, n in names):
                continue
            data = vol.stream(rec, _AT_DATA, "", key)
            if data is None:
                break
            header = b""
            if data.initialized_size > 0:
                header = vol.read_stream(data, 0, min(_HIBERFIL_HEADER, data.data_size))
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


def _hibernation_note(header: bytes) -> str | None:
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


def _subtract(runs: Iterable[tuple[int, int]], holes: list[tuple[int, int]]) -> Iterator[Extent]:
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


def _overlaps(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> bool:
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


# --- the reader ----------------------------------------------------------------------------------


@register
class Ntfs(FileSystem):
    """An opened NTFS volume (see the module docstring for what it promises)."""

    name = "ntfs"
    fstypes = ("ntfs",)
    takes_keep_system_files = True

    def __init__(
        self,
        source: BlockSource,
        geometry: Geometry,
        volume: _Volume,
        bitmap: DataStream,
        excluded: list[tuple[int, int]],
        keep_system_files: bool = False,
    ) -> None:
        super().__init__(source, geometry)
        self._volume = volume
        self.boot = volume.boot
        self.bitmap = bitmap
        self.excluded_clusters = excluded
        """Sorted, merged (lcn, count) runs of the system files' data."""
        self.keep_system_files = keep_system_files
        """True: store pagefile.sys, hiberfil.sys and swapfile.sys contents too."""

    @classmethod
    def open(cls, source: BlockSource, keep_system_files: bool = False) -> Ntfs:
        head = source.pread(0, 512)
        if len(head) < 512 or head[3:11] != NTFS_OEM:
            raise NotThisFileSystem(detect_encrypted(source) or "not an NTFS volume")
        boot = parse_boot_sector(head, source.size)
        vol = _Volume(source, boot)
        mft = vol.open_mft()
        notes: list[str] = []

        bitmap_record = vol.system_record(_BITMAP, "$Bitmap")
        bitmap = vol.stream(bitmap_record, _AT_DATA, "", "$Bitmap")
        need = (boot.total_clusters + 7) // 8
        if bitmap is None or bitmap.data_size < need or bitmap.initialized_size < need:
            raise _Damage(f"$Bitmap holds fewer than the {need} bytes the volume needs")
        if any(r.lcn is None for r in bitmap.runs):
            raise _Damage("$Bitmap is sparse")

        label, dirty = _volume_information(vol)
        if dirty:
            notes.append(
                "This NTFS volume is marked as in use (dirty): Windows did not finish with it "
                "(a crash, a power cut, or a shutdown that did not complete). It is imaged as it "
                "is; Windows will check it at its next start. For a clean image, start Windows "
                "once, shut it down fully, and image it again"
            )

        excluded: list[tuple[int, int]] = []
        try:
            system_files = find_system_files(vol)
        except _Damage as e:
            system_files = []
            notes.append(
                f"The root directory of this NTFS volume could not be read ({e.detail}), so "
                "whether Windows is hibernated could not be checked, and pagefile.sys, "
                "hiberfil.sys and swapfile.sys are stored"
            )
        metadata = sorted([(0, 1), (boot.mftmirr_lcn, 1), *mft.clusters(), *bitmap.clusters()])
        metadata = [(e.start, e.length) for e in merge(metadata)]
        left_out: list[str] = []
        for sf in system_files:
            runs = [(e.start, e.length) for e in merge(sorted(sf.clusters))]
            if sf.name == "hiberfil.sys":
                note = _hibernation_note(sf.header)
                if note:
                    # A hibernated session is kept whole: without it the restored disk would
                    # hold a hibernation header whose memory image is missing.
                    notes.append(note)
                    continue
                if sf.first_lcn is not None:
                    # Its first cluster (the header, which says "not hibernated") is kept, so a
                    # restore overwrites whatever header the target disk holds there.
                    runs = list(_subtract(runs, [(sf.first_lcn, 1)]))
            if not runs:
                continue
            if _overlaps(runs, metadata):
                notes.append(
                    f"{sf.name} shares clusters with the file system's own metadata (a sign of "
                    "damage): its contents are stored rather than left out"
                )
                continue
            excluded.extend(runs)
            left_out.append(
                f"{sf.name} ({human_size(sum(n for _, n in runs) * boot.cluster_size)})"
            )
        excluded = [(e.start, e.length) for e in merge(sorted(excluded))]
        if left_out and not keep_system_files:
            notes.append(
                "Not stored: the contents of " + ", ".join(left_out) + ". Windows recreates these "
                "files; choose to keep system files to store them"
            )

        volume_end = boot.total_sectors * boot.bytes_per_sector
        geometry = Geometry(
            block_size=boot.cluster_size,
            fs_size=min(source.size, volume_end + boot.bytes_per_sector),
            label=label,
            uuid=f"{boot.serial:016X}",
            notes=tuple(notes),
        )
        fs = cls(source, geometry, vol, bitmap, excluded, keep_system_files)
        fs._check_bitmap()
        return fs

    def _check_bitmap(self) -> None:
        """The bitmap must mark the boot sector and the MFT's first cluster as in use."""
        for what, lcn in (("the boot sector", 0), ("the MFT", self.boot.mft_lcn)):
            byte = self._volume.read_stream(self.bitmap, lcn // 8, 1)[0]
            if not byte >> (lcn % 8) & 1:
                raise _Damage(f"$Bitmap marks {what} (cluster {lcn}) as free")

    def _used_clusters(self) -> Iterator[tuple[int, int]]:
        """(lcn, count) runs of set bits of $Bitmap among the volume's clusters."""
        clusters = self.boot.total_clusters
        nbytes = (clusters + 7) // 8
        for piece_start in range(0, nbytes, _BITMAP_PIECE):
            piece = self._volume.read_stream(
                self.bitmap, piece_start, min(_BITMAP_PIECE, nbytes - piece_start)
            )
            for block_start in range(0, len(piece), _UNIFORM_BLOCK):
                block = piece[block_start : block_start + _UNIFORM_BLOCK]
                first = (piece_start + block_start) * 8
                nbits = min(8 * len(block), clusters - first)
                if block == _ZERO_BLOCK:
                    continue
                if block == _FULL_BLOCK:
                    yield first, nbits
                    continue
                for start, count in set_runs(block, nbits):
                    yield first + start, count

    def used_extents(self) -> Iterator[Extent]:
        # One generator from bitmap runs to byte extents, merging as it goes: on a fragmented
        # volume there are hundreds of thousands of runs, and every extra layer costs per run.
        # The boot sector needs no entry of its own: it lies in cluster 0, which the bitmap must
        # mark used (checked at open) and which is never left out (it is metadata).
        cs = self.boot.cluster_size
        bps = self.boot.bytes_per_sector
        clusters: Iterable[tuple[int, int]] = self._used_clusters()
        if not self.keep_system_files and self.excluded_clusters:
            clusters = _subtract(clusters, self.excluded_clusters)
        start = end = 0
        for lcn, count in clusters:
            if lcn * cs == end:
                end += count * cs
                continue
            if end > start:
                yield Extent(start, end - start)
            start, end = lcn * cs, (lcn + count) * cs
        # The backup boot sector: right after the last sector NTFS counts, and (when the
        # partition is larger than the volume) possibly also in the partition's last sector.
        volume_end = self.boot.total_sectors * bps
        tail = []
        if volume_end + bps <= self.source.size:
            tail.append(volume_end)
        last = self.source.size // bps * bps - bps
        if last > volume_end and self.source.pread(last, bps)[3:11] == NTFS_OEM:
            tail.append(last)
        for sector in tail:
            if sector <= end:
                end = max(end, sector + bps)
                continue
            if end > start:
                yield Extent(start, end - start)
            start, end = sector, sector + bps
        if end > start:
            yield Extent(start, end - start)


def _volume_information(vol: _Volume) -> tuple[str | None, bool]:
    """The volume label and whether the volume is marked dirty, from $Volume."""
    rec = vol.system_record(_VOLUME, "$Volume")
    label = None
    name = vol.stream(rec, _AT_VOLUME_NAME, "", "the volume name")
    if name is not None and name.resident_value:
        label = name.resident_value.decode("utf-16-le", "replace") or None
    info = vol.stream(rec, _AT_VOLUME_INFORMATION, "", "the volume information")
    dirty = False
    if info is not None and info.resident_value is not None and len(info.resident_value) >= 12:
        (flags,) = struct.unpack_from("<H", info.resident_value, 10)
        dirty = bool(flags & _VOLUME_IS_DIRTY)
    return label, dirty


# The home's other half: what the engine does with an NTFS volume (registers itself).
from recovery.filesystems.ntfs import kind as kind  # noqa: E402
