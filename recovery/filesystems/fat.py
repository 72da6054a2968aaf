"""FAT12, FAT16 and FAT32: the used clusters, read from the file allocation table.

Called through the registry of :mod:`recovery.filesystems.base` by the imaging engine. It
promises the byte ranges, relative to the partition start, that a restore must write for the
volume to come back whole: the reserved sectors (boot sector, FSInfo, backup boot sector), every
copy of the FAT, the fixed root directory of FAT12/16, and each data cluster whose FAT entry is
not zero (bad-cluster marks included: harmless, and they keep the marks' sectors). Sectors past
the last whole cluster are free.

The FAT type follows the boot sector's own structure, as Linux and dosfstools do: a zero 16-bit
FAT size means the FAT32 layout; otherwise the cluster count decides between FAT12 (fewer than
4085 clusters) and FAT16 (fewer than 65525), as in Microsoft's specification. A FAT32 volume with
fewer clusters than the specification expects (``mkfs.fat -F 32`` on a small disk) is read as
FAT32, with a note.

When the FAT copies differ (a damaged volume), a cluster counts as used if any copy says so.
Tables are decoded a window at a time with whole-buffer operations (byte slicing and
``int.from_bytes``), so a 256 MiB FAT32 table costs well under a second and bounded memory.
Anything inconsistent raises :class:`DamagedFileSystem` naming the field; something that is not
a FAT boot sector at all raises :class:`NotThisFileSystem`.

The home of FAT for the rest of the engine too (:class:`FatKind`): checked with ``fsck.vfat -n``,
its boot sector pointed at a moved partition's new start, listed with ``mdir`` (mtools), mounted
as ``vfat``. FAT is never grown (the layout never gives it extra space).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from typing import NamedTuple

from recovery.core.extents import Extent, merge
from recovery.devices import tools
from recovery.devices.tools import Need
from recovery.errors import DamagedFileSystem, DeviceError, NotThisFileSystem
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
from recovery.filesystems.bootsector import fix_hidden_sectors

FAT12_MAX_CLUSTERS = 4084
FAT16_MAX_CLUSTERS = 65524
FAT32_ENTRY_MASK = 0x0FFFFFFF

# Entries decoded per window: bounded memory whatever the size of the table.
_WINDOW_ENTRIES = 1 << 20

_STRETCH = re.compile(rb"\x00+|[^\x00]+")
_LOW_NIBBLE = bytes(b & 0x0F for b in range(256))
_HIGH_NIBBLE = bytes(b & 0xF0 for b in range(256))


class BiosParameterBlock(NamedTuple):
    jump: bytes
    oem_name: bytes
    bytes_per_sector: int
    sectors_per_cluster: int
    reserved_sectors: int
    num_fats: int
    root_entries: int
    total_sectors_16: int
    media: int
    fat_size_16: int
    total_sectors_32: int


_BPB = struct.Struct(
    "<"
    "3s"  # 0x00 BS_jmpBoot
    "8s"  # 0x03 BS_OEMName
    "H"  # 0x0B BPB_BytsPerSec
    "B"  # 0x0D BPB_SecPerClus
    "H"  # 0x0E BPB_RsvdSecCnt
    "B"  # 0x10 BPB_NumFATs
    "H"  # 0x11 BPB_RootEntCnt
    "H"  # 0x13 BPB_TotSec16
    "B"  # 0x15 BPB_Media
    "H"  # 0x16 BPB_FATSz16
    "8x"  # 0x18 BPB_SecPerTrk, BPB_NumHeads, BPB_HiddSec
    "I"  # 0x20 BPB_TotSec32
)


class Fat32Extension(NamedTuple):
    fat_size_32: int
    ext_flags: int
    fs_version: int
    root_cluster: int
    boot_signature: int
    volume_id: int
    volume_label: bytes


_FAT32_EXT = struct.Struct(
    "<"
    "I"  # 0x24 BPB_FATSz32
    "H"  # 0x28 BPB_ExtFlags
    "H"  # 0x2A BPB_FSVer
    "I"  # 0x2C BPB_RootClus
    "18x"  # 0x30 BPB_FSInfo, BPB_BkBootSec, BPB_Reserved, BS_DrvNum, BS_Reserved1
    "B"  # 0x42 BS_BootSig
    "I"  # 0x43 BS_VolID
    "11s"  # 0x47 BS_VolLab
)


class Fat16Extension(NamedTuple):
    boot_signature: int
    volume_id: int
    volume_label: bytes


_FAT16_EXT = struct.Struct(
    "<"
    "2x"  # 0x24 BS_DrvNum, BS_Reserved1
    "B"  # 0x26 BS_BootSig
    "I"  # 0x27 BS_VolID
    "11s"  # 0x2B BS_VolLab
)

_DIR_ENTRY_SIZE = 32
_ATTR_VOLUME_ID = 0x08
_ATTR_LONG_NAME = 0x0F


def _damaged(what: str) -> DamagedFileSystem:
    return DamagedFileSystem(
        f"FAT metadata is damaged: {what}. Run `fsck.vfat` on the partition, or image it whole "
        "(every sector) instead."
    )


def _read(source: BlockSource, offset: int, length: int, what: str) -> bytes:
    try:
        data = source.pread(offset, length)
    except OSError as e:
        raise DeviceError(f"cannot read the FAT {what} at byte {offset}: {e}") from e
    if len(data) != length:
        raise _damaged(f"the {what} at byte {offset} lies beyond the end of the partition")
    return data


def _label(raw: bytes) -> str | None:
    text = raw.rstrip(b" \0").decode("cp850", "replace")
    return None if not text or text == "NO NAME" else text


def nonzero_entries(table: bytes, bits: int) -> bytes:
    """One byte per FAT entry, non-zero exactly where the entry is non-zero.

    ``table`` holds whole entries (FAT12: whole pairs, 3 bytes each). Works on the whole buffer
    with slicing and big-int ORs: no Python loop per entry. FAT32's top four bits are reserved
    and ignored.
    """
    if bits == 32:
        n = len(table) // 4
        x = (
            int.from_bytes(table[0::4], "little")
            | int.from_bytes(table[1::4], "little")
            | int.from_bytes(table[2::4], "little")
            | int.from_bytes(table[3::4].translate(_LOW_NIBBLE), "little")
        )
        return x.to_bytes(n, "little")
    if bits == 16:
        n = len(table) // 2
        x = int.from_bytes(table[0::2], "little") | int.from_bytes(table[1::2], "little")
        return x.to_bytes(n, "little")
    if bits == 12:
        # Entry 2k: byte 3k and the low nibble of 3k+1; entry 2k+1: the high nibble of 3k+1
        # and byte 3k+2.
        pairs = len(table) // 3
        middle = table[1::3]
        even = int.from_bytes(table[0::3], "little") | int.from_bytes(
            middle.translate(_LOW_NIBBLE), "little"
        )
        odd = int.from_bytes(middle.translate(_HIGH_NIBBLE), "little") | int.from_bytes(
            table[2::3], "little"
        )
        out = bytearray(2 * pairs)
        out[0::2] = even.to_bytes(pairs, "little")
        out[1::2] = odd.to_bytes(pairs, "little")
        return bytes(out)
    raise ValueError(f"no FAT{bits}")


def nonzero_runs(flags: bytes) -> Iterator[tuple[int, int]]:
    """(first index, count) of each run of non-zero bytes."""
    for m in _STRETCH.finditer(flags):
        a, b = m.span()
        if flags[a]:
            yield a, b - a


@register
class Fat(FileSystem):
    """A FAT12/16/32 volume opened for reading its allocation."""

    name = "vfat"
    fstypes = ("vfat", "fat", "msdos")

    def __init__(
        self,
        source: BlockSource,
        geometry: Geometry,
        *,
        fat_bits: int,
        fat_offsets: tuple[int, ...],
        data_start: int,
        cluster_size: int,
        clusters: int,
    ) -> None:
        super().__init__(source, geometry)
        self.fat_bits = fat_bits
        """12, 16 or 32."""
        self.fat_offsets = fat_offsets
        """Byte offset of each FAT copy to read (only the active one when mirroring is off)."""
        self.data_start = data_start
        """Byte offset of cluster 2."""
        self.cluster_size = cluster_size
        self.clusters = clusters
        """Count of data clusters (numbered 2 .. clusters + 1)."""

    @classmethod
    def open(cls, source: BlockSource) -> Fat:
        if source.size < 512:
            raise NotThisFileSystem("too small to hold a FAT boot sector")
        boot = _read(source, 0, 512, "boot sector")
        bpb = BiosParameterBlock(*_BPB.unpack_from(boot))
        _check_signature(boot, bpb)
        bps = bpb.bytes_per_sector
        spc = bpb.sectors_per_cluster

        fat32_layout = bpb.fat_size_16 == 0
        if fat32_layout:
            ext32 = Fat32Extension(*_FAT32_EXT.unpack_from(boot, 0x24))
            fat_size = ext32.fat_size_32
            boot_signature, volume_id, bpb_label = (
                ext32.boot_signature,
                ext32.volume_id,
                ext32.volume_label,
            )
            if bpb.root_entries != 0:
                raise _damaged(f"BPB_RootEntCnt is {bpb.root_entries} on FAT32 (must be 0)")
        else:
            ext16 = Fat16Extension(*_FAT16_EXT.unpack_from(boot, 0x24))
            fat_size = bpb.fat_size_16
            boot_signature, volume_id, bpb_label = (
                ext16.boot_signature,
                ext16.volume_id,
                ext16.volume_label,
            )
        if fat_size == 0:
            raise _damaged("BPB_FATSz16 and BPB_FATSz32 are both 0")
        if bpb.root_entries * _DIR_ENTRY_SIZE % bps:
            raise _damaged(
                f"BPB_RootEntCnt {bpb.root_entries} does not fill whole {bps}-byte sectors"
            )
        total_sectors = bpb.total_sectors_16 or bpb.total_sectors_32
        fs_size = total_sectors * bps
        if fs_size > source.size:
            raise _damaged(
                f"the boot sector says the volume holds {fs_size} bytes ({total_sectors} "
                f"sectors), but the partition has only {source.size}"
            )
        root_dir_sectors = bpb.root_entries * _DIR_ENTRY_SIZE // bps
        data_sector = bpb.reserved_sectors + bpb.num_fats * fat_size + root_dir_sectors
        if data_sector >= total_sectors:
            raise _damaged(
                f"reserved sectors {bpb.reserved_sectors}, {bpb.num_fats} FATs of {fat_size} "
                f"sectors and the root directory leave no data area in {total_sectors} sectors"
            )
        clusters = (total_sectors - data_sector) // spc
        if clusters < 1:
            raise _damaged("the data area holds not one whole cluster")

        notes: list[str] = []
        if fat32_layout:
            fat_bits = 32
            if clusters <= FAT16_MAX_CLUSTERS:
                notes.append(
                    f"FAT32 volume with only {clusters} clusters: Linux reads it, but some "
                    "systems (Windows among them) expect FAT16 below 65525 clusters"
                )
            if not 2 <= ext32.root_cluster <= clusters + 1:
                raise _damaged(f"BPB_RootClus is {ext32.root_cluster}, not a data cluster")
        elif clusters <= FAT12_MAX_CLUSTERS:
            fat_bits = 12
        elif clusters <= FAT16_MAX_CLUSTERS:
            fat_bits = 16
        else:
            raise _damaged(
                f"a FAT12/16 boot sector (BPB_FATSz16 {bpb.fat_size_16}) with {clusters} "
                "clusters, more than FAT16 can address"
            )
        entries_bytes = -(-(clusters + 2) * fat_bits // 8)
        if entries_bytes > fat_size * bps:
            raise _damaged(
                f"a FAT of {fat_size} sectors cannot hold the entries of {clusters} clusters"
            )

        first_fat = bpb.reserved_sectors * bps
        fat_offsets = tuple(first_fat + k * fat_size * bps for k in range(bpb.num_fats))
        if fat32_layout and ext32.ext_flags & 0x80:
            active = ext32.ext_flags & 0x0F
            if active >= bpb.num_fats:
                raise _damaged(
                    f"BPB_ExtFlags names FAT {active} as the active one, of {bpb.num_fats}"
                )
            fat_offsets = (fat_offsets[active],)

        data_start = data_sector * bps
        cluster_size = spc * bps
        if fat32_layout:
            root = _read(
                source,
                data_start + (ext32.root_cluster - 2) * cluster_size,
                cluster_size,
                "root directory",
            )
        else:
            root = _read(
                source, data_start - root_dir_sectors * bps, root_dir_sectors * bps, "root dir"
            )
        label = _root_label(root) or _label(bpb_label)
        uuid = None
        if boot_signature in (0x28, 0x29):
            uuid = f"{volume_id >> 16:04X}-{volume_id & 0xFFFF:04X}"
        geometry = Geometry(
            block_size=cluster_size, fs_size=fs_size, label=label, uuid=uuid, notes=tuple(notes)
        )
        return cls(
            source,
            geometry,
            fat_bits=fat_bits,
            fat_offsets=fat_offsets,
            data_start=data_start,
            cluster_size=cluster_size,
            clusters=clusters,
        )

    def used_extents(self) -> Iterator[Extent]:
        return merge(self._extents())

    def _extents(self) -> Iterator[tuple[int, int]]:
        yield 0, self.data_start
        # Windows hold a whole number of entries and, for FAT12, of entry pairs (3 bytes).
        entry_count = self.clusters + 2
        bits = self.fat_bits
        for first in range(0, entry_count, _WINDOW_ENTRIES):
            n = min(_WINDOW_ENTRIES, entry_count - first)
            lo = first * bits // 8
            length = -(-n * bits // 8)
            copies = []
            for offset in self.fat_offsets:
                table = _read(self.source, offset + lo, length, "allocation table")
                if bits == 12 and len(table) % 3:
                    table += bytes(3 - len(table) % 3)
                copies.append(nonzero_entries(table, bits)[:n])
            flags = copies[0]
            for copy in copies[1:]:
                if copy != flags:
                    # The copies disagree: a cluster any of them uses is kept.
                    flags = (
                        int.from_bytes(flags, "little") | int.from_bytes(copy, "little")
                    ).to_bytes(n, "little")
            # Entries 0 and 1 are reserved (media byte, end-of-chain marks), not clusters.
            skip = max(0, 2 - first)
            for index, count in nonzero_runs(flags[skip:]):
                cluster = first + skip + index
                yield self.data_start + (cluster - 2) * self.cluster_size, count * self.cluster_size


def _check_signature(boot: bytes, bpb: BiosParameterBlock) -> None:
    """NotThisFileSystem unless the sector looks like a FAT boot sector at all."""
    if boot[510:512] != b"\x55\xaa":
        raise NotThisFileSystem("no boot sector signature 0x55AA")
    if not (bpb.jump[0] == 0xEB or bpb.jump[0] == 0xE9):
        raise NotThisFileSystem("no x86 jump at the start of the boot sector")
    if bpb.oem_name in (b"NTFS    ", b"EXFAT   "):
        raise NotThisFileSystem(f"an {bpb.oem_name.decode().strip()} boot sector")
    bps, spc = bpb.bytes_per_sector, bpb.sectors_per_cluster
    if bps not in (512, 1024, 2048, 4096):
        raise NotThisFileSystem(f"BPB_BytsPerSec is {bps}")
    if spc == 0 or spc & (spc - 1):
        raise NotThisFileSystem(f"BPB_SecPerClus is {spc}")
    if bpb.reserved_sectors == 0 or bpb.num_fats == 0:
        raise NotThisFileSystem("BPB_RsvdSecCnt or BPB_NumFATs is 0")
    if bpb.media != 0xF0 and bpb.media < 0xF8:
        raise NotThisFileSystem(f"BPB_Media is {bpb.media:#04x}")
    if bpb.total_sectors_16 == 0 and bpb.total_sectors_32 == 0:
        raise NotThisFileSystem("BPB_TotSec16 and BPB_TotSec32 are both 0")


def _root_label(directory: bytes) -> str | None:
    """The volume label entry of a root directory (what blkid and Windows show), if any."""
    for off in range(0, len(directory) - _DIR_ENTRY_SIZE + 1, _DIR_ENTRY_SIZE):
        first = directory[off]
        if first == 0:
            break
        attr = directory[off + 11]
        if first == 0xE5 or attr == _ATTR_LONG_NAME:
            continue
        if attr & _ATTR_VOLUME_ID:
            return _label(directory[off : off + 11])
    return None


class FatKind(Kind):
    """FAT for the engine: check, fix the boot sector after a move, mount, look inside."""

    mount_type = "vfat"

    def check_needs(self) -> list[Need]:
        return [Need("fsck.vfat", "to check FAT on the target")]

    def check(self, node: str, step: Step) -> list[str]:
        code, out = tools.run(["fsck.vfat", "-n", node])
        return [result_line(node, "fsck.vfat clean", code, out)]

    def after_move(self, node: str, new_start: int) -> list[str]:
        return fix_hidden_sectors(node, new_start, ntfs=False)

    def inspect_needs(self) -> list[Need]:
        return [Need("mdir", "to look inside FAT for an operating system")]

    def root_names(self, node: str) -> set[str]:
        # mtools refuses a FAT whose geometry looks odd to it unless told not to check.
        out = tools.output(
            ["mdir", "-b", "-i", node, "::/"], env={"MTOOLS_SKIP_CHECK": "1"}, any_status=True
        )
        return {line.rstrip("/").split("/")[-1] for line in out.split()}

    def names_in(self, node: str, path: str) -> set[str]:
        out = tools.output(
            ["mdir", "-b", "-i", node, "::" + path.replace("\\", "/")],
            env={"MTOOLS_SKIP_CHECK": "1"},
            any_status=True,
        )
        return {line.rstrip("/").split("/")[-1].lower() for line in out.splitlines() if line}


register_kind(FatKind("vfat"))
