"""LVM2 physical volumes: each logical volume's file system by its used blocks, read in place.

Called through the registry of :mod:`recovery.filesystems.base` by the imaging engine for a
partition blkid calls ``LVM2_member``. Nothing is activated and no device-mapper is needed: the
reader reads the PV label (one of the first four sectors), the PV header (its data and metadata
areas), the newest copy of the volume group's text metadata in the first metadata area (parsed by
:mod:`recovery.core.lvmconfig`), and then, for every logical volume, its segments on this PV.

It promises the byte ranges, relative to the partition start, that a restore must write for the
volume group to come back whole:

- everything before the first physical extent (label, PV header, metadata areas) and every
  metadata area elsewhere on the PV (a second copy at its end);
- for a logical volume wholly on this PV in linear segments: its file system's used ranges, as
  that file system's own reader reports them over the volume's bytes (ext4 in an LV is read like
  ext4 in a partition), mapped through the segments to the PV;
- for any other logical volume (striped over several stripes, spread over several PVs, thin
  pools, snapshots, mirrors, RAID, caches) and for a volume no reader understands: every extent
  it holds on this PV, with a note.

Extents no logical volume holds are free. Checksums of the label, the metadata area header and
the metadata text are verified (LVM2's CRC-32 with its own seed); every number is checked against
the PV's size. Anything inconsistent raises :class:`DamagedFileSystem`; a partition without an
LVM2 label raises :class:`NotThisFileSystem`.
"""

from __future__ import annotations

import heapq
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from recovery.core import lvmconfig
from recovery.core.extents import Extent, merge
from recovery.devices import tools
from recovery.devices.loops import range_device
from recovery.devices.tools import Need
from recovery.errors import DamagedFileSystem, FileSystemError, NotThisFileSystem
from recovery.filesystems.base import (
    BlockSource,
    FileSource,
    FileSystem,
    Geometry,
    Kind,
    Step,
    damaged,
    kind_of,
    open_filesystem,
    read_exact,
    register,
    register_kind,
    result_line,
)

SECTOR = 512
LABEL_ID = b"LABELONE"
LABEL_TYPE = b"LVM2 001"
MDA_MAGIC = b" LVM2 x[5A%r0N*>"
MDA_HEADER_SIZE = 512
INITIAL_CRC = 0xF597A6CF
MAX_AREAS = 8
MAX_METADATA = 64 << 20
RAW_LOCN_IGNORED = 1

_LABEL = struct.Struct("<8sQII8s")  # id, sector, crc, offset of the PV header, type
_LOCN = struct.Struct("<QQ")  # offset, size
_MDA = struct.Struct("<I16sIQQ")  # checksum, magic, version, start, size
_RAW_LOCN = struct.Struct("<QQII")  # offset, size, checksum, flags


def lvm_crc(data: bytes, seed: int = INITIAL_CRC) -> int:
    """LVM2's ``calc_crc``: the reflected CRC-32 with LVM's seed and no final inversion."""
    return ~zlib.crc32(data, ~seed & 0xFFFFFFFF) & 0xFFFFFFFF


def _damaged(what: str) -> DamagedFileSystem:
    return damaged("LVM", what, "pvck")


def _read(source: BlockSource, offset: int, length: int, what: str) -> bytes:
    return read_exact(source, offset, length, what, "LVM", "pvck")


@dataclass(frozen=True)
class Segment:
    lv_start: int
    """Byte offset of the segment in its logical volume."""
    length: int
    pv_start: int
    """Byte offset on this PV, or -1 when the segment is not a plain linear piece of it."""


@dataclass(frozen=True)
class LogicalVolume:
    name: str
    size: int
    segments: tuple[Segment, ...]
    on_this_pv: tuple[tuple[int, int], ...]
    """(PV byte offset, length) of every extent this volume holds on this PV."""
    linear: bool
    """Wholly on this PV, in linear segments: its file system can be read in place."""
    kind: str
    """The segment type LVM records ("striped", "thin-pool", ...), or "mixed"."""


@dataclass(frozen=True)
class VolumeGroup:
    name: str
    extent_size: int
    pv_name: str
    pe_start: int
    pe_count: int
    volumes: tuple[LogicalVolume, ...]
    pv_count: int = 1


class VolumeSource:
    """A BlockSource over a linear logical volume, read through the PV."""

    def __init__(self, pv: BlockSource, lv: LogicalVolume) -> None:
        self.pv = pv
        self.lv = lv
        self.size = lv.size

    def pread(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("negative offset or length")
        length = max(0, min(length, self.size - offset))
        out = bytearray()
        for seg in self.lv.segments:
            lo = max(offset, seg.lv_start)
            hi = min(offset + length, seg.lv_start + seg.length)
            if lo < hi:
                out += self.pv.pread(seg.pv_start + lo - seg.lv_start, hi - lo)
        return bytes(out)


def _int(section: lvmconfig.Section, key: str, where: str) -> int:
    value = section.get(key)
    if not isinstance(value, int) or value < 0:
        raise _damaged(f"{where}: {key} is {value!r}")
    return value


def _section(parent: lvmconfig.Section, key: str, where: str) -> lvmconfig.Section:
    value = parent.get(key)
    if not isinstance(value, dict):
        raise _damaged(f"{where}: no {key} section")
    return value


def volume_group(text: str, pv_uuid: str, pv_size: int) -> VolumeGroup:
    """The volume group described by metadata ``text``, seen from the PV with ``pv_uuid``."""
    try:
        config = lvmconfig.parse(text)
    except lvmconfig.ConfigError as e:
        raise _damaged(f"metadata text: {e}") from e
    groups = [
        (name, body)
        for name, body in config.items()
        if isinstance(body, dict) and "physical_volumes" in body
    ]
    if len(groups) != 1:
        raise _damaged(f"metadata describes {len(groups)} volume groups")
    vg_name, vg = groups[0]
    extent = _int(vg, "extent_size", vg_name) * SECTOR
    if extent == 0:
        raise _damaged(f"{vg_name}: extent size 0")
    pvs = _section(vg, "physical_volumes", vg_name)
    ours = [
        (name, body)
        for name, body in pvs.items()
        if isinstance(body, dict) and str(body.get("id", "")).replace("-", "") == pv_uuid
    ]
    if len(ours) != 1:
        raise _damaged(f"{vg_name}: this PV ({pv_uuid}) is not among its physical volumes")
    pv_name, pv = ours[0]
    pe_start = _int(pv, "pe_start", pv_name) * SECTOR
    pe_count = _int(pv, "pe_count", pv_name)
    if pe_start + pe_count * extent > pv_size:
        raise _damaged(f"{pv_name}: {pe_count} extents from byte {pe_start} pass the PV's end")
    volumes = []
    lv_sections = vg.get("logical_volumes", {})
    if not isinstance(lv_sections, dict):
        raise _damaged(f"{vg_name}: logical_volumes is not a section")
    for lv_name, lv in lv_sections.items():
        if isinstance(lv, dict):
            volumes.append(_volume(lv_name, lv, pv_name, pe_count, extent, pe_start))
    pv_count = sum(1 for body in pvs.values() if isinstance(body, dict))
    return VolumeGroup(vg_name, extent, pv_name, pe_start, pe_count, tuple(volumes), pv_count)


def _volume(
    name: str, lv: lvmconfig.Section, pv_name: str, pe_count: int, extent: int, pe_start: int
) -> LogicalVolume:
    count = _int(lv, "segment_count", name)
    segments: list[Segment] = []
    held: list[tuple[int, int]] = []
    kinds: set[str] = set()
    linear = True
    size = 0
    for i in range(1, count + 1):
        where = f"{name} segment{i}"
        seg = _section(lv, f"segment{i}", name)
        start = _int(seg, "start_extent", where)
        length = _int(seg, "extent_count", where)
        kind = str(seg.get("type", ""))
        kinds.add(kind)
        if start != size // extent:
            raise _damaged(f"{where}: starts at extent {start}, expected {size // extent}")
        stripes = seg.get("stripes", [])
        if not isinstance(stripes, list) or len(stripes) % 2:
            raise _damaged(f"{where}: stripes {stripes!r}")
        pairs: list[tuple[str, int]] = []
        for pv, first in zip(stripes[::2], stripes[1::2], strict=True):
            if not isinstance(first, int) or first < 0:
                raise _damaged(f"{where}: stripe starts at extent {first!r}")
            pairs.append((str(pv), first))
        stripe_count = len(pairs) or 1
        per_stripe = length // stripe_count if kind == "striped" else length
        for pv, first in pairs:
            if pv == pv_name:
                if first + per_stripe > pe_count:
                    raise _damaged(f"{where}: extents {first}+{per_stripe} past the PV's end")
                held.append((pe_start + first * extent, per_stripe * extent))
        if kind == "striped" and len(pairs) == 1 and pairs[0][0] == pv_name:
            segments.append(Segment(size, length * extent, pe_start + pairs[0][1] * extent))
        else:
            linear = False
            segments.append(Segment(size, length * extent, -1))
        size += length * extent
    return LogicalVolume(
        name=name,
        size=size,
        segments=tuple(segments),
        on_this_pv=tuple(sorted(held)),
        linear=linear and count > 0,
        kind=kinds.pop() if len(kinds) == 1 else "mixed",
    )


@register
class Lvm2(FileSystem):
    name = "LVM2_member"

    def __init__(
        self,
        source: BlockSource,
        geometry: Geometry,
        vg: VolumeGroup,
        metadata_areas: tuple[tuple[int, int], ...],
    ) -> None:
        super().__init__(source, geometry)
        self.vg = vg
        self.metadata_areas = metadata_areas
        self.inside: dict[str, FileSystem | None] = {}
        """Each linear volume's opened file system (None: none recognised)."""

    @classmethod
    def open(cls, source: BlockSource) -> Lvm2:
        head = source.pread(0, 4 * SECTOR)
        label_at = next(
            (i * SECTOR for i in range(4) if head[i * SECTOR : i * SECTOR + 8] == LABEL_ID), None
        )
        if label_at is None:
            raise NotThisFileSystem("no LVM2 label")
        label = head[label_at : label_at + SECTOR]
        _, sector, crc, header_at, kind = _LABEL.unpack_from(label)
        if kind != LABEL_TYPE:
            raise NotThisFileSystem(f"label type {kind!r}")
        if sector * SECTOR != label_at:
            raise _damaged(f"the label in sector {label_at // SECTOR} says it is in {sector}")
        if lvm_crc(label[20:]) != crc:
            raise _damaged("the label's checksum does not match")
        if not 32 <= header_at <= SECTOR - 48:
            raise _damaged(f"PV header at byte {header_at} of the label")
        pv_uuid = label[header_at : header_at + 32].decode("ascii", "replace")
        device_size = int.from_bytes(label[header_at + 32 : header_at + 40], "little")
        at = header_at + 40
        lists: list[list[tuple[int, int]]] = [[], []]
        for areas in lists:
            while True:
                if at + _LOCN.size > SECTOR:
                    raise _damaged("the PV header's area lists run past the label")
                offset, size = _LOCN.unpack_from(label, at)
                at += _LOCN.size
                if offset == 0 and size == 0:
                    break
                if len(areas) >= MAX_AREAS or offset + size > source.size:
                    raise _damaged(f"area at byte {offset} of {size} bytes")
                areas.append((offset, size))
        data_areas, metadata_areas = lists
        if not data_areas or not metadata_areas:
            raise _damaged("the PV has no data area or no metadata area")
        if device_size and device_size > source.size:
            raise _damaged(f"the PV says it has {device_size} bytes, the partition {source.size}")
        text = _metadata_text(source, metadata_areas[0])
        vg = volume_group(text, pv_uuid, source.size)
        if vg.pe_start != data_areas[0][0]:
            raise _damaged(f"first extent at byte {vg.pe_start}, data area at {data_areas[0][0]}")
        notes = []
        for lv in vg.volumes:
            if not lv.linear and lv.on_this_pv:
                notes.append(
                    f"logical volume {vg.name}/{lv.name} ({lv.kind}) is imaged whole: its "
                    "file system cannot be read in place"
                )
        geometry = Geometry(
            block_size=vg.extent_size,
            fs_size=source.size,
            label=vg.name,
            uuid=pv_uuid,
            notes=tuple(notes),
        )
        return cls(source, geometry, vg, tuple(metadata_areas))

    def volume_filesystem(self, lv: LogicalVolume) -> FileSystem | None:
        if lv.name not in self.inside:
            fs: FileSystem | None = None
            if lv.linear:
                try:
                    fs = open_filesystem(VolumeSource(self.source, lv), None)
                except FileSystemError:
                    fs = None
            self.inside[lv.name] = fs
        return self.inside[lv.name]

    def used_extents(self) -> Iterator[Extent]:
        fixed = [(0, self.vg.pe_start), *self.metadata_areas]
        streams: list[Iterator[tuple[int, int]]] = [iter(sorted(fixed))]
        for lv in self.vg.volumes:
            fs = self.volume_filesystem(lv)
            if fs is None:
                streams.append(iter(lv.on_this_pv))
                continue
            for seg in lv.segments:
                streams.append(_mapped(fs, seg))
        return merge(heapq.merge(*streams))


def _mapped(fs: FileSystem, seg: Segment) -> Iterator[tuple[int, int]]:
    """The file system's used ranges inside one linear segment, as PV byte ranges."""
    end = seg.lv_start + seg.length
    for start, length in fs.used_extents():
        lo, hi = max(start, seg.lv_start), min(start + length, end)
        if start >= end:
            return
        if lo < hi:
            yield seg.pv_start + lo - seg.lv_start, hi - lo


def _metadata_text(source: BlockSource, area: tuple[int, int]) -> str:
    mda_start, mda_size = area
    header = _read(source, mda_start, MDA_HEADER_SIZE, "metadata area header")
    checksum, magic, version, start, size = _MDA.unpack_from(header)
    if magic != MDA_MAGIC:
        raise _damaged(f"metadata area magic {magic!r}")
    if lvm_crc(header[4:]) != checksum:
        raise _damaged("the metadata area header's checksum does not match")
    if version != 1 or start != mda_start or size != mda_size or size <= MDA_HEADER_SIZE:
        raise _damaged(f"metadata area version {version} at {start} of {size} bytes")
    offset, length, text_crc, flags = _RAW_LOCN.unpack_from(header, _MDA.size)
    if flags & RAW_LOCN_IGNORED or length == 0:
        raise _damaged("the first metadata area holds no metadata")
    if not MDA_HEADER_SIZE <= offset < size or length > min(size - MDA_HEADER_SIZE, MAX_METADATA):
        raise _damaged(f"metadata of {length} bytes at {offset} in an area of {size}")
    first = min(length, size - offset)
    text = _read(source, start + offset, first, "metadata text")
    if first < length:  # the area is a ring: the text wraps to just after the header
        text += _read(source, start + MDA_HEADER_SIZE, length - first, "metadata text")
    if lvm_crc(text) != text_crc:
        raise _damaged("the metadata text's checksum does not match")
    return text.rstrip(b"\0").decode("utf-8", "replace")


ROOT_NAMES = ("root", "lv_root", "rootlv", "lvroot")


def _lvm_args(node: str) -> list[str]:
    """LVM sees only ``node``, never touches device-mapper, keeps no copies in /etc/lvm."""
    return [
        "--devices",
        node,
        "--driverloaded",
        "n",
        "--config",
        "backup { backup = 0 archive = 0 }",
    ]


def _open_pv(node: str) -> Lvm2:
    fd = os.open(node, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        return Lvm2.open(FileSource(fd, 0, size))
    finally:
        # The reader reads everything it keeps while opening; volumes are opened later through
        # a fresh descriptor (see _volume_fs).
        os.close(fd)


def _volume_fs(node: str, lv: LogicalVolume) -> str | None:
    """blkid-style TYPE of the file system in a linear volume, read in place."""
    fd = os.open(node, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        pv = Lvm2.open(FileSource(fd, 0, size))
        target = next((v for v in pv.vg.volumes if v.name == lv.name), None)
        fs = pv.volume_filesystem(target) if target is not None else None
        return fs.name if fs is not None else None
    except FileSystemError:
        return None
    finally:
        os.close(fd)


def free_after(vg: VolumeGroup, lv: LogicalVolume) -> int:
    """How many free extents follow the volume's last segment on the PV, up to the next
    allocated extent or the PV's end: what it can take and stay in one piece where it was."""
    last = lv.segments[-1]
    end = last.pv_start + last.length
    following = [start for v in vg.volumes for start, _ in v.on_this_pv if start >= end]
    limit = min(following, default=vg.pe_start + vg.pe_count * vg.extent_size)
    return max(0, (limit - end) // vg.extent_size)


def volume_to_extend(node: str, vg: VolumeGroup) -> LogicalVolume | None:
    """The volume that takes a grown PV's space: the root file system's (by its usual names),
    else the largest volume whose file system can grow."""
    growable = [lv for lv in vg.volumes if lv.linear and kind_of(_volume_fs(node, lv)).can_grow]
    named = [lv for lv in growable if lv.name.lower() in ROOT_NAMES]
    candidates = named or sorted(growable, key=lambda lv: -lv.size)
    return candidates[0] if candidates else None


class Lvm2Kind(Kind):
    """A PV grows with its partition (pvresize), and one volume takes the new extents
    (lvextend) with its file system grown through a loop device over the volume's bytes; each
    linear volume's file system is checked the same way. LVM's tools run with
    ``--driverloaded n``: nothing is activated, no device-mapper is needed."""

    @property
    def can_grow(self) -> bool:
        return True

    def grow_needs(self) -> list[Need]:
        why = "to grow the LVM physical volume on the target"
        return [Need("pvresize", why), Need("lvextend", why), Need("losetup", why)]

    def grow(self, node: str, step: Step) -> list[str]:
        step(f"growing the LVM physical volume on {node}")
        code, out = tools.run(["pvresize", *_lvm_args(node), node])
        if code != 0:
            return [result_line(node, "pvresize", code, out)]
        try:
            vg = _open_pv(node).vg
        except FileSystemError as e:
            return [f"FAILED {node}: reading LVM after pvresize: {e.message}"]
        if vg.pv_count != 1:
            return [f"{node}: volume group {vg.name} spans {vg.pv_count} PVs: no volume extended"]
        lv = volume_to_extend(node, vg)
        if lv is None:
            return [f"{node}: no logical volume of {vg.name} can grow: the new space stays free"]
        extents = free_after(vg, lv)
        if extents == 0:
            return [f"{node}: no free extents follow {vg.name}/{lv.name}: the new space stays free"]
        step(f"extending {vg.name}/{lv.name} into the new space")
        argv = ["lvextend", *_lvm_args(node), "--alloc", "contiguous", "-l", f"+{extents}"]
        code, out = tools.run([*argv, f"{vg.name}/{lv.name}"])
        if code != 0:
            return [result_line(node, f"lvextend {vg.name}/{lv.name}", code, out)]
        vg = _open_pv(node).vg
        grown = next(v for v in vg.volumes if v.name == lv.name)
        fstype = _volume_fs(node, grown)
        line = f"{node}: logical volume {vg.name}/{lv.name} extended to {grown.size} bytes"
        if len(grown.segments) != 1:
            return [line, f"{node}: {vg.name}/{lv.name} is in pieces: its {fstype} was not grown"]
        seg = grown.segments[0]
        with range_device(node, seg.pv_start, seg.length, read_only=False) as loop:
            lines = kind_of(fstype).grow(loop, step)
        return [line, *(ln.replace(loop, f"{node} {vg.name}/{lv.name}") for ln in lines)]

    def check_needs(self) -> list[Need]:
        return [Need("losetup", "to check the file systems in the LVM volumes on the target")]

    def check(self, node: str, step: Step) -> list[str]:
        try:
            vg = _open_pv(node).vg
        except FileSystemError as e:
            return [f"FAILED {node}: LVM metadata after writing: {e.message}"]
        lines = []
        for lv in vg.volumes:
            name = f"{node} {vg.name}/{lv.name}"
            fstype = _volume_fs(node, lv) if lv.linear else None
            kind = kind_of(fstype)
            if fstype is None or not kind.check_needs():
                continue
            if len(lv.segments) != 1:
                lines.append(f"{name}: {fstype} in pieces on the PV, not checked here")
                continue
            seg = lv.segments[0]
            with range_device(node, seg.pv_start, seg.length, read_only=True) as loop:
                lines += [ln.replace(loop, name) for ln in kind.check(loop, step)]
        return lines or [f"{node}: LVM physical volume written ({vg.name})"]

    def inspect_needs(self) -> list[Need]:
        why = "to look inside LVM volumes for an operating system"
        return [Need(c, why) for c in ("losetup", "debugfs", "mount", "umount")]

    def _each_volume(self, node: str) -> Iterator[tuple[Kind, str]]:
        """(home, read-only loop device) of each linear volume in one piece, in turn."""
        try:
            vg = _open_pv(node).vg
        except FileSystemError:
            return
        for lv in vg.volumes:
            fstype = _volume_fs(node, lv) if lv.linear and len(lv.segments) == 1 else None
            if fstype is None:
                continue
            seg = lv.segments[0]
            with range_device(node, seg.pv_start, seg.length, read_only=True) as loop:
                yield kind_of(fstype), loop

    def root_names(self, node: str) -> set[str]:
        """Names at the root of any volume: a PV holding a Linux root is a system partition."""
        names: set[str] = set()
        for kind, loop in self._each_volume(node):
            names |= kind.root_names(loop)
        return names

    def has_path(self, node: str, path: str) -> bool:
        return any(kind.has_path(loop, path) for kind, loop in self._each_volume(node))


register_kind(Lvm2Kind("LVM2_member"))
