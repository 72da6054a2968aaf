"""A Clonezilla image folder as plain data (docs/CLONEZILLA.md, "The image folder").

Called by the engine's Clonezilla paths (list, restore, verify, import). :func:`open_image`
reads only the small text files of the folder (``disk``, ``parts``, the sfdisk dump, the swap
notes) and lists the partition image files; it never reads an image's data. Every file is
untrusted: sizes are capped before reading, every field is checked, and anything impossible
raises :class:`~recovery.errors.PeerImageError` naming the file.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recovery.core.table import InvalidTable, Table
from recovery.errors import PeerImageError

MAX_TEXT = 1 << 20
"""Largest text file of an image folder read (the sfdisk dump of 128 entries is ~20 KiB)."""
DEVICE_NAME = re.compile(r"[a-z][a-z0-9]{0,31}")
SPLIT_SUFFIX = re.compile(r"[a-z]{2,4}")
EXTENSIONS = ("gz", "bz2", "xz", "lzma", "lzo", "lz", "lrz", "lz4", "zst", "uncomp")
_IMAGE_FILE = re.compile(
    r"(?P<part>[a-z][a-z0-9]{0,31})\."
    r"(?:(?P<fs>[A-Za-z0-9_+]{1,16})-ptcl-img\.(?P<ext>" + "|".join(EXTENSIONS) + r")"
    r"|(?P<dd>dd-img)"  # dd images carry no compression suffix (sda1.dd-img, sda1.dd-img.aa)
    r"|(?P<ntfsclone>ntfs-img)(?:\.(?P<ntfs_ext>" + "|".join(EXTENSIONS) + r"))?)"
    r"(?:\.(?P<suffix>[a-z]{2,4}))?"
)
LVM_FILES = ("lvm_vg_dev.list", "lvm_logv.list")


@dataclass(frozen=True)
class PartitionImage:
    name: str
    """Clonezilla's partition name, e.g. ``sda1`` or ``nvme0n1p2``."""
    number: int
    fstype: str
    """partclone's file system name from the file name (``ext4``, ``vfat``, ``dd`` ...)."""
    kind: str
    """``partclone`` or ``dd`` (raw bytes, possibly compressed)."""
    files: tuple[Path, ...]
    """The file, or its split parts in order."""
    extension: str

    @property
    def stored_size(self) -> int:
        total = 0
        for f in self.files:
            with contextlib.suppress(OSError):
                total += f.stat().st_size
        return total


@dataclass(frozen=True)
class SwapInfo:
    name: str
    number: int
    uuid: str | None
    label: str | None


@dataclass(frozen=True)
class ClonezillaImage:
    path: Path
    name: str
    disk: str
    created: str
    table: Table | None
    disk_size: int
    """Bytes of the source disk (from parted's listing or the GPT header; 0 when unknown)."""
    mbr: Path | None
    hidden_after_mbr: Path | None
    partitions: tuple[PartitionImage, ...]
    swaps: tuple[SwapInfo, ...]
    lvm: bool
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def stored_size(self) -> int:
        return sum(p.stored_size for p in self.partitions)

    def partition(self, number: int) -> PartitionImage:
        for p in self.partitions:
            if p.number == number:
                return p
        raise KeyError(number)


def is_clonezilla_image(folder: Path) -> bool:
    """Whether ``folder`` looks like a Clonezilla image folder (a cheap test for listings)."""
    try:
        return (folder / "parts").is_file() and (
            (folder / "clonezilla-img").is_file()
            or (folder / "disk").is_file()
            or any(p.name.endswith("-pt.sf") for p in folder.iterdir())
        )
    except OSError:
        return False


def is_clonezilla_ref(location: str, name: str) -> bool:
    """Whether ``location::name`` names a Clonezilla image folder on this machine."""
    if "://" in location or "/" in name or name in ("", ".", ".."):
        return False
    return is_clonezilla_image(Path(location) / name)


def read_text(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TEXT + 1)
    except OSError as e:
        raise PeerImageError(f"cannot read {path}: {e.strerror}") from e
    if len(data) > MAX_TEXT:
        raise PeerImageError(f"{path} is larger than any Clonezilla text file ({MAX_TEXT} bytes)")
    return data.decode("utf-8", "replace")


def _names(path: Path) -> list[str]:
    words = read_text(path).split()
    if len(words) > 256:
        raise PeerImageError(f"{path} lists {len(words)} names, more than a disk holds")
    for w in words:
        if not DEVICE_NAME.fullmatch(w):
            raise PeerImageError(f"{path}: {w!r} is not a device name")
    return words


def partition_number(disk: str, part: str, where: str) -> int:
    if not part.startswith(disk):
        raise PeerImageError(f"{where}: partition {part} is not on disk {disk}")
    rest = part[len(disk) :]
    if rest.startswith("p"):
        rest = rest[1:]
    if not rest.isdigit() or not 1 <= int(rest) <= 256:
        raise PeerImageError(f"{where}: cannot tell the number of partition {part}")
    return int(rest)


_PARTITION_LINE = re.compile(r"\S+\s*:\s*start=")
_SF_FIELD = re.compile(r'\s*([a-z-]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^,]*))?\s*')


def parse_sfdisk_dump(text: str, where: str) -> dict[str, Any]:
    """``sfdisk --dump`` text → the dict form :meth:`Table.from_json` checks."""
    head: dict[str, str] = {}
    parts: list[dict[str, Any]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if _PARTITION_LINE.match(line):
            node, _, rest = line.partition(":")
            entry: dict[str, Any] = {"node": node.strip()}
            for item in _split_fields(rest):
                m = _SF_FIELD.fullmatch(item)
                if not m:
                    raise PeerImageError(f"{where}: cannot read {item!r} of {node.strip()}")
                key, value = m.group(1), (m.group(2) or "").strip()
                if value.startswith('"') and value.endswith('"') and len(value) >= 2:
                    value = value[1:-1].replace('\\"', '"')
                if key in ("start", "size"):
                    if not value.isdigit() or len(value) > 20:
                        raise PeerImageError(f"{where}: {key} of {node.strip()} is not a number")
                    entry[key] = int(value)
                elif key == "bootable":
                    entry["bootable"] = True
                elif key in ("type", "uuid", "name", "attrs"):
                    entry[key] = value
                elif key == "Id":
                    entry["type"] = value
            parts.append(entry)
        else:
            key, sep, value = line.partition(":")
            if not sep:
                raise PeerImageError(f"{where}: cannot read the line {line[:80]!r}")
            head[key.strip()] = value.strip()
    if len(parts) > 256:
        raise PeerImageError(f"{where}: more than 256 partitions")

    def number(key: str, low: int, high: int) -> int | None:
        v = head.get(key)
        if v is None:
            return None
        if not v.isdigit() or not low <= int(v) <= high:
            raise PeerImageError(f"{where}: {key} {v!r} is impossible")
        return int(v)

    if head.get("unit", "sectors") != "sectors":
        raise PeerImageError(f"{where}: unit {head.get('unit')!r} is not sectors")
    return {
        "label": head.get("label"),
        "id": head.get("label-id"),
        "sectorsize": number("sector-size", 512, 4096) or 512,
        "firstlba": number("first-lba", 0, 2**64),
        "lastlba": number("last-lba", 0, 2**64),
        "partitions": parts,
    }


def _split_fields(rest: str) -> list[str]:
    """Split ``start=..., size=..., name="a, b"`` at commas outside quotes."""
    out, cur, quoted, escaped = [], [], False, False
    for ch in rest:
        if escaped:
            cur.append(ch)
            escaped = False
        elif ch == "\\":
            cur.append(ch)
            escaped = True
        elif ch == '"':
            cur.append(ch)
            quoted = not quoted
        elif ch == "," and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur))
    return [f for f in out if f.strip()]


def _disk_size(folder: Path, disk: str, table: Table | None) -> int:
    parted = folder / f"{disk}-pt.parted"
    if parted.is_file():
        m = re.search(r"^Disk /dev/\S+: (\d{1,20})s$", read_text(parted), re.M)
        if m:
            sector = table.sector_size if table else 512
            return int(m.group(1)) * sector
    gpt = folder / f"{disk}-gpt-1st"
    if table is not None and table.label == "gpt" and gpt.is_file():
        ss = table.sector_size
        try:
            with open(gpt, "rb") as f:
                head = f.read(2 * ss)
        except OSError as e:
            raise PeerImageError(f"cannot read {gpt}: {e.strerror}") from e
        if len(head) >= ss + 40 and head[ss : ss + 8] == b"EFI PART":
            alternate: int = struct.unpack_from("<Q", head, ss + 32)[0]
            if alternate < 2**48:
                return (alternate + 1) * ss
    if table is not None and table.entries:
        return max(e.end for e in table.entries) * table.sector_size
    return 0


def _swap(path: Path, name: str, number: int) -> SwapInfo:
    values: dict[str, str] = {}
    for line in read_text(path).splitlines():
        m = re.fullmatch(r'\s*(UUID|LABEL)="([^"]{0,64})"\s*', line)
        if m:
            values[m.group(1)] = m.group(2)
    uuid = values.get("UUID") or None
    if uuid is not None and not re.fullmatch(r"[0-9a-fA-F-]{1,40}", uuid):
        raise PeerImageError(f"{path}: swap UUID {uuid!r} is impossible")
    return SwapInfo(name, number, uuid, values.get("LABEL") or None)


def _created(folder: Path) -> str:
    note = folder / "clonezilla-img"
    if note.is_file():
        m = re.search(
            r"saved by Clonezilla at (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", read_text(note)[:4096]
        )
        if m:
            return m.group(1).replace(" ", "T") + "Z"
    try:
        mtime = (folder / "parts").stat().st_mtime
    except OSError:
        return ""
    return datetime.fromtimestamp(mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _image_files(folder: Path, names: set[str], where: str) -> dict[str, dict[str, Any]]:
    """Each partition's image file or split parts, keyed by partition name."""
    found: dict[str, dict[str, Any]] = {}
    try:
        listing = sorted(os.listdir(folder))
    except OSError as e:
        raise PeerImageError(f"cannot list {folder}: {e.strerror}") from e
    for fname in listing:
        m = _IMAGE_FILE.fullmatch(fname)
        if not m or m.group("part") not in names:
            continue
        part = m.group("part")
        fs = m.group("fs") or ("dd" if m.group("dd") else "ntfs")
        # partclone.dd writes raw bytes, no partclone header: sda2.dd-ptcl-img.xz is raw too.
        kind = "ntfsclone" if m.group("ntfsclone") else "dd" if fs == "dd" else "partclone"
        key = (kind, fs, m.group("ext") or m.group("ntfs_ext") or "")
        entry = found.setdefault(part, {"key": key, "files": []})
        if entry["key"] != key:
            raise PeerImageError(f"{where}: partition {part} has two different image files")
        entry["files"].append((m.group("suffix") or "", folder / fname))
    for part, entry in found.items():
        suffixes = [s for s, _ in entry["files"]]
        if "" in suffixes and len(suffixes) > 1:
            raise PeerImageError(f"{where}: partition {part} has both a whole and a split image")
        if suffixes != [""] and suffixes != [_suffix(i) for i in range(len(suffixes))]:
            raise PeerImageError(
                f"{where}: the split parts of partition {part} are not a complete "
                f"series aa, ab, ... (found {', '.join(suffixes)})"
            )
    return found


def _suffix(i: int) -> str:
    """The i-th suffix of ``split``: aa ... zz, then yzaa ... (split's own continuation)."""
    if i < 26 * 25:
        return chr(97 + i // 26) + chr(97 + i % 26)
    i -= 26 * 25
    return "z" + chr(97 + i // (26 * 26) % 26) + chr(97 + i // 26 % 26) + chr(97 + i % 26)


def open_image(folder: Path) -> ClonezillaImage:
    """Read the description of the Clonezilla image in ``folder``."""
    where = str(folder)
    if not is_clonezilla_image(folder):
        raise PeerImageError(f"{folder} is not a Clonezilla image folder (no parts file)")
    lvm = any((folder / f).exists() for f in LVM_FILES)
    disks = _names(folder / "disk") if (folder / "disk").is_file() else []
    parts = _names(folder / "parts")
    if len(disks) > 1:
        raise PeerImageError(
            f"{where} holds {len(disks)} disks ({' '.join(disks)}); recovery restores "
            "Clonezilla images of one disk"
        )
    if not disks:
        raise PeerImageError(
            f"{where} is a Clonezilla partition image (saveparts, no disk file); recovery "
            "restores whole-disk images (savedisk)"
        )
    disk = disks[0]
    table: Table | None = None
    sf = folder / f"{disk}-pt.sf"
    if sf.is_file():
        try:
            table = Table.from_json(parse_sfdisk_dump(read_text(sf), str(sf)))
        except InvalidTable as e:
            raise PeerImageError(f"{sf}: {e}") from e
    elif parts:
        raise PeerImageError(f"{where} has no {disk}-pt.sf: its partition table is missing")
    numbers: dict[str, int] = {p: partition_number(disk, p, where) for p in parts}
    if len(set(numbers.values())) != len(numbers):
        raise PeerImageError(f"{where}: the parts file names a partition twice")
    files = _image_files(folder, set(parts), where)
    images = []
    for p in parts:
        entry = files.get(p)
        if entry is None:
            if lvm:
                continue  # an LVM physical volume: its volumes are saved by name
            raise PeerImageError(f"{where}: the image file of partition {p} is missing")
        kind, fs, ext = entry["key"]
        if kind == "ntfsclone":
            raise PeerImageError(
                f"{where}: partition {p} was saved with ntfsclone, which recovery does not read"
            )
        if table is not None and all(e.number != numbers[p] for e in table.entries):
            raise PeerImageError(f"{where}: partition {p} is not in the partition table")
        images.append(
            PartitionImage(p, numbers[p], fs, kind, tuple(f for _, f in entry["files"]), ext)
        )
    swaps = []
    for f in sorted(folder.glob("swappt-*.info")):
        name = f.name[len("swappt-") : -len(".info")]
        if DEVICE_NAME.fullmatch(name) and name.startswith(disk):
            swaps.append(_swap(f, name, partition_number(disk, name, where)))
    mbr = folder / f"{disk}-mbr"
    hidden = folder / f"{disk}-hidden-data-after-mbr"
    return ClonezillaImage(
        path=folder,
        name=folder.name,
        disk=disk,
        created=_created(folder),
        table=table,
        disk_size=_disk_size(folder, disk, table),
        mbr=mbr if mbr.is_file() else None,
        hidden_after_mbr=hidden if hidden.is_file() else None,
        partitions=tuple(images),
        swaps=tuple(swaps),
        lvm=lvm,
    )


def image_folders(location: Path) -> list[Path]:
    """The Clonezilla image folders directly inside ``location``, by name."""
    try:
        entries = sorted(location.iterdir())
    except OSError:
        return []
    return [p for p in entries if p.is_dir() and is_clonezilla_image(p)]
