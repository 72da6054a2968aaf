"""The NTFS reader: geometry and used clusters from the volume's own bitmap ($Bitmap).

Part of the NTFS home (:mod:`recovery.filesystems.ntfs`, whose docstring says what it
promises); registered with :mod:`recovery.filesystems.base` and opened through the registry.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

from recovery.core.bitmap import set_runs
from recovery.core.extents import Extent, merge
from recovery.core.units import human_size
from recovery.errors import NotThisFileSystem
from recovery.filesystems.base import BlockSource, FileSystem, Geometry, register
from recovery.filesystems.encrypted import detect_encrypted
from recovery.filesystems.ntfs.layout import (
    AT_DATA,
    AT_VOLUME_INFORMATION,
    AT_VOLUME_NAME,
    BITMAP_PIECE,
    FULL_BLOCK,
    NTFS_OEM,
    RECORD_BITMAP,
    RECORD_VOLUME,
    UNIFORM_BLOCK,
    VOLUME_IS_DIRTY,
    ZERO_BLOCK,
    Damage,
    parse_boot_sector,
)
from recovery.filesystems.ntfs.volume import DataStream, Volume
from recovery.filesystems.ntfs.windows import (
    find_system_files,
    hibernation_note,
    overlaps,
    subtract_holes,
)


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
        volume: Volume,
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
        vol = Volume(source, boot)
        mft = vol.open_mft()
        notes: list[str] = []

        bitmap_record = vol.system_record(RECORD_BITMAP, "$Bitmap")
        bitmap = vol.stream(bitmap_record, AT_DATA, "", "$Bitmap")
        need = (boot.total_clusters + 7) // 8
        if bitmap is None or bitmap.data_size < need or bitmap.initialized_size < need:
            raise Damage(f"$Bitmap holds fewer than the {need} bytes the volume needs")
        if any(r.lcn is None for r in bitmap.runs):
            raise Damage("$Bitmap is sparse")

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
        except Damage as e:
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
                note = hibernation_note(sf.header)
                if note:
                    # A hibernated session is kept whole: without it the restored disk would
                    # hold a hibernation header whose memory image is missing.
                    notes.append(note)
                    continue
                if sf.first_lcn is not None:
                    # Its first cluster (the header, which says "not hibernated") is kept, so a
                    # restore overwrites whatever header the target disk holds there.
                    runs = list(subtract_holes(runs, [(sf.first_lcn, 1)]))
            if not runs:
                continue
            if overlaps(runs, metadata):
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
                raise Damage(f"$Bitmap marks {what} (cluster {lcn}) as free")

    def _used_clusters(self) -> Iterator[tuple[int, int]]:
        """(lcn, count) runs of set bits of $Bitmap among the volume's clusters."""
        clusters = self.boot.total_clusters
        nbytes = (clusters + 7) // 8
        for piece_start in range(0, nbytes, BITMAP_PIECE):
            piece = self._volume.read_stream(
                self.bitmap, piece_start, min(BITMAP_PIECE, nbytes - piece_start)
            )
            for block_start in range(0, len(piece), UNIFORM_BLOCK):
                block = piece[block_start : block_start + UNIFORM_BLOCK]
                first = (piece_start + block_start) * 8
                nbits = min(8 * len(block), clusters - first)
                if block == ZERO_BLOCK:
                    continue
                if block == FULL_BLOCK:
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
            clusters = subtract_holes(clusters, self.excluded_clusters)
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


def _volume_information(vol: Volume) -> tuple[str | None, bool]:
    """The volume label and whether the volume is marked dirty, from $Volume."""
    rec = vol.system_record(RECORD_VOLUME, "$Volume")
    label = None
    name = vol.stream(rec, AT_VOLUME_NAME, "", "the volume name")
    if name is not None and name.resident_value:
        label = name.resident_value.decode("utf-16-le", "replace") or None
    info = vol.stream(rec, AT_VOLUME_INFORMATION, "", "the volume information")
    dirty = False
    if info is not None and info.resident_value is not None and len(info.resident_value) >= 12:
        (flags,) = struct.unpack_from("<H", info.resident_value, 10)
        dirty = bool(flags & VOLUME_IS_DIRTY)
    return label, dirty
