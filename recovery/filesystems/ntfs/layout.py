"""NTFS on disk: the boot sector and MFT records, parsed and checked field by field.

Part of the NTFS home (:mod:`recovery.filesystems.ntfs`); the other parts read a volume with
these (:mod:`.volume`), find Windows' system files (:mod:`.windows`) and report used clusters
(:mod:`.reader`). Every field is checked before it is used: damaged or hostile data raises
:class:`Damage` (a :class:`DamagedFileSystem`) naming what is wrong, never IndexError or
struct.error; something that is not NTFS at all raises :class:`NotThisFileSystem`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from recovery.errors import DamagedFileSystem, NotThisFileSystem

NTFS_OEM = b"NTFS    "

SYSTEM_FILES = ("pagefile.sys", "hiberfil.sys", "swapfile.sys")

# The update sequence (fixup) stride is 512 bytes whatever the sector size.
FIXUP_STRIDE = 512
MAX_CLUSTER = 2 << 20  # Windows' largest cluster size
MAX_RECORD = 64 << 10
BITMAP_PIECE = 1 << 20  # bytes of $Bitmap read at a time (8 Mi clusters)
UNIFORM_BLOCK = 64 << 10  # all-zero / all-one stretches of the bitmap skipped at memcmp speed
ZERO_BLOCK = bytes(UNIFORM_BLOCK)
FULL_BLOCK = b"\xff" * UNIFORM_BLOCK
# The root directory index is small on any real volume; past this size it is treated as damaged
# rather than read. Windows caps an attribute list at 256 KiB (Microsoft, "The four stages of
# NTFS file growth, part 2").
MAX_ROOT_INDEX = 64 << 20
MAX_ATTRIBUTE_LIST = 256 << 10
HIBERFIL_HEADER = 4096
# Records kept after reading: the system files and their first extension records. A hostile
# attribute list can point at tens of thousands of records; those are read, not kept.
CACHED_RECORDS = 64

RECORD_MFT, RECORD_VOLUME, RECORD_ROOT, RECORD_BITMAP = 0, 3, 5, 6
REF_MASK = (1 << 48) - 1

# Attribute types.
AT_ATTRIBUTE_LIST = 0x20
AT_FILE_NAME = 0x30
AT_VOLUME_NAME = 0x60
AT_VOLUME_INFORMATION = 0x70
AT_DATA = 0x80
AT_INDEX_ROOT = 0x90
AT_INDEX_ALLOCATION = 0xA0
AT_BITMAP = 0xB0
AT_END = 0xFFFFFFFF

VOLUME_IS_DIRTY = 0x0001
RECORD_IN_USE = 0x0001
RECORD_IS_DIRECTORY = 0x0002
INDEX_ENTRY_END = 0x0002
I30 = "$I30"

# Boot sector fields up to the checksum (offsets 0..83).
BOOT = struct.Struct("<3s8sHBHBHHBHHHII4xQQQb3xb3xQI")
RECORD_HEADER = struct.Struct("<4sHHQHHHHIIQH")  # FILE record, offsets 0..0x29
ATTR_HEADER = struct.Struct("<IIBBHHH")  # type, length, non_resident, name_len, name_off, ...
RESIDENT = struct.Struct("<IH")  # value length, value offset (at 0x10)
NONRESIDENT = struct.Struct("<qqH6xqqq")  # lowest/highest VCN, runs offset, sizes (at 0x10)
ATTR_LIST_ENTRY = struct.Struct("<IHBBQQH")
INDEX_ENTRY = struct.Struct("<QHHH")
INDEX_HEADER = struct.Struct("<III")  # entries offset, index length, allocated size
INDEX_ROOT = struct.Struct("<IIIB")  # indexed type, collation, block size, clusters per block


class Damage(DamagedFileSystem):
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
        raise Damage(f"the boot sector's {what} size code {value} is invalid")
    if size & (size - 1) or not FIXUP_STRIDE <= size <= MAX_RECORD:
        raise Damage(f"the boot sector gives {what}s of {size} bytes (expected 512..64 KiB)")
    return size


def parse_boot_sector(data: bytes, volume_bytes: int) -> BootSector:
    """Check every field of an NTFS boot sector; ``volume_bytes`` is the partition's size."""
    if len(data) < 512 or data[3:11] != NTFS_OEM:
        raise NotThisFileSystem("no NTFS boot sector")
    (_jump, _oem, bps, spc_code, reserved, fats, root_entries, sectors16, _media, fat_sectors,
     _spt, _heads, _hidden, sectors32, total_sectors, mft_lcn, mftmirr_lcn, mft_code,
     index_code, serial, _checksum) = BOOT.unpack_from(data)  # fmt: skip
    if bps & (bps - 1) or not 256 <= bps <= 4096:
        raise Damage(f"the boot sector gives {bps} bytes per sector (expected 256..4096)")
    if spc_code <= 0x80:
        spc = spc_code
    elif 256 - spc_code <= 31:
        spc = 1 << (256 - spc_code)  # large clusters: a negative exponent
    else:
        spc = 0
    cluster_size = spc * bps
    if spc == 0 or spc & (spc - 1) or cluster_size > MAX_CLUSTER:
        raise Damage(f"the boot sector's sectors-per-cluster code {spc_code:#x} is invalid")
    if reserved or fats or root_entries or sectors16 or fat_sectors or sectors32:
        raise Damage("the boot sector has FAT fields set that NTFS keeps at zero")
    if total_sectors <= 0:
        raise Damage("the boot sector says the volume has no sectors")
    if total_sectors * bps > volume_bytes:
        raise Damage(
            f"the boot sector says the volume is {total_sectors * bps} bytes but the partition "
            f"holds only {volume_bytes} (was the partition shrunk?)"
        )
    total_clusters = total_sectors * bps // cluster_size
    if total_clusters < 16:
        raise Damage(f"the volume has only {total_clusters} clusters")
    for name, lcn in (("MFT", mft_lcn), ("MFT mirror", mftmirr_lcn)):
        if not 0 < lcn < total_clusters:
            raise Damage(f"the {name} starts at cluster {lcn}, outside the volume")
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
    sectors = len(buf) // FIXUP_STRIDE
    if usa_ofs & 1 or usa_ofs < 8 or usa_count != sectors + 1 or usa_ofs + 2 * usa_count > len(buf):
        raise Damage(f"{what} has an invalid update sequence array")
    usn = buf[usa_ofs : usa_ofs + 2]
    for i in range(1, usa_count):
        end = i * FIXUP_STRIDE
        if buf[end - 2 : end] != usn:
            raise Damage(f"{what} fails its update-sequence check in sector {i - 1} (torn write)")
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
            raise Damage(f"the data runs of {what} have no terminator")
        header = data[pos]
        if header == 0:
            break
        len_size, off_size = header & 0x0F, header >> 4
        if not 1 <= len_size <= 8 or off_size > 8 or pos + 1 + len_size + off_size > end:
            raise Damage(f"the data runs of {what} are malformed at byte {pos}")
        pos += 1
        length = int.from_bytes(data[pos : pos + len_size], "little", signed=True)
        pos += len_size
        if length <= 0:
            raise Damage(f"a data run of {what} has length {length}")
        if off_size:
            lcn += int.from_bytes(data[pos : pos + off_size], "little", signed=True)
            pos += off_size
            if lcn < 0 or lcn + length > clusters:
                raise Damage(
                    f"a data run of {what} points at clusters {lcn}..{lcn + length - 1}, "
                    f"outside the volume's {clusters}"
                )
            runs.append(Run(vcn, lcn, length))
        else:
            runs.append(Run(vcn, None, length))
        vcn += length
    if vcn != highest_vcn + 1:
        raise Damage(
            f"the data runs of {what} cover clusters {lowest_vcn}..{vcn - 1} "
            f"but the attribute says {lowest_vcn}..{highest_vcn}"
        )
    return tuple(runs)


def parse_record(buf: bytearray, number: int, clusters: int) -> Record:
    """Parse one FILE record (fixups applied here); every offset is bounds-checked."""
    what = f"MFT record {number}"
    magic = bytes(buf[:4])
    if magic == b"BAAD":
        raise Damage(f"{what} is marked bad (BAAD) by a previous check")
    if magic != b"FILE":
        raise Damage(f"{what} does not start with FILE (found {magic!r})")
    apply_fixup(buf, what)
    (_m, usa_ofs, _usa_count, _lsn, sequence, _links, attrs_offset, flags, in_use_bytes,
     allocated, base_ref, _next_instance) = RECORD_HEADER.unpack_from(buf)  # fmt: skip
    size = len(buf)
    if allocated != size:
        raise Damage(f"{what} says it is {allocated} bytes, the boot sector says {size}")
    if not 0x18 <= in_use_bytes <= size or not 0x18 <= attrs_offset < in_use_bytes:
        raise Damage(f"{what} has an invalid header (bytes in use {in_use_bytes})")
    if usa_ofs >= 0x30:  # NTFS 3.1 records carry their own number
        (own,) = struct.unpack_from("<I", buf, 0x2C)
        if own != number & 0xFFFFFFFF:
            raise Damage(f"{what} says it is record {own}")
    attributes: list[Attribute] = []
    pos = attrs_offset
    while True:
        if pos + 4 > in_use_bytes:
            raise Damage(f"{what} has no end-of-attributes marker")
        (type_,) = struct.unpack_from("<I", buf, pos)
        if type_ == AT_END:
            break
        if pos + ATTR_HEADER.size > in_use_bytes:
            raise Damage(f"{what} has a truncated attribute at byte {pos}")
        _t, length, non_resident, name_len, name_off, attr_flags, _inst = ATTR_HEADER.unpack_from(
            buf, pos
        )
        minimum = 0x40 if non_resident else 0x18
        if length < minimum or length & 7 or pos + length > in_use_bytes:
            raise Damage(f"{what} has an attribute of type {type_:#x} with length {length}")
        attr = bytes(buf[pos : pos + length])
        name = ""
        if name_len:
            if name_off + 2 * name_len > length:
                raise Damage(f"{what}: an attribute name lies outside its attribute")
            name = attr[name_off : name_off + 2 * name_len].decode("utf-16-le", "replace")
        attr_what = f"attribute {type_:#x} of {what}"
        if non_resident:
            lowest, highest, runs_off, alloc_size, data_size, init_size = NONRESIDENT.unpack_from(
                attr, 0x10
            )
            if not 0 <= lowest <= highest + 1 or not runs_off < length:
                raise Damage(f"{attr_what} has an invalid cluster range")
            if lowest == 0 and not 0 <= init_size <= data_size <= alloc_size:
                raise Damage(f"{attr_what} has inconsistent sizes")
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
            value_len, value_off = RESIDENT.unpack_from(attr, 0x10)
            if value_off + value_len > length:
                raise Damage(f"{attr_what} has a value outside its attribute")
            value = attr[value_off : value_off + value_len]
            attributes.append(Attribute(type_, name, attr_flags, True, value))
        pos += length
    return Record(number, flags, sequence, base_ref & REF_MASK, tuple(attributes))


def file_names(attributes: Iterable[Attribute]) -> list[tuple[int, str]]:
    """(parent record number, name) of every $FILE_NAME among ``attributes``."""
    out = []
    for a in attributes:
        if a.type == AT_FILE_NAME and a.resident and len(a.value) >= 0x42:
            n = a.value[0x40]
            if 0x42 + 2 * n <= len(a.value):
                parent = int.from_bytes(a.value[:8], "little") & REF_MASK
                out.append((parent, a.value[0x42 : 0x42 + 2 * n].decode("utf-16-le", "replace")))
    return out
