"""Every plan and every result the engine hands out, in one place with concrete types.

The engine modules (:mod:`~recovery.engine.backup`, :mod:`~recovery.engine.restore`,
:mod:`~recovery.engine.clone`, :mod:`~recovery.engine.images`) build and return these, and
:mod:`recovery.engine.api` passes them to the CLI and the TUI. Engine modules import this module,
never :mod:`~recovery.engine.api` (which imports them), so there is no import cycle.

Plans are immutable once built: what the UI showed (``describe()``) is what runs. What the UI
adds at run time (a question to ask mid-way) is an argument of ``run_*``, not a field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from recovery.core.units import human_size

if TYPE_CHECKING:
    # Only for annotations (dataclasses do not evaluate them): importing this module stays
    # cheap, so the UI can name these types without loading the engine.
    from _typeshed import DataclassInstance

    from recovery.core.bootentries import BootEntryOffer
    from recovery.core.table import Layout
    from recovery.engine.delta import Delta
    from recovery.engine.sources import SourcePlan, StreamPlan
    from recovery.engine.targets import Target
    from recovery.repository.maps import StreamInfo

Question = Callable[[str], bool]
"""Asked mid-way (e.g. when a failing source has many unreadable areas); True goes on."""


class StreamMethod(StrEnum):
    """How a stream's bytes were chosen (the manifest's ``method``; docs/FORMAT.md).

    A ``StrEnum``: members compare equal to, and serialise as, the strings the manifest holds.
    """

    LAYOUT = "layout"
    """The partition table, boot code and the gaps between partitions."""
    USED_BLOCKS = "used-blocks"
    """The blocks the file system's allocation data marks as used."""
    RAW = "raw"
    """Every byte (zero areas are still not stored)."""
    SWAP_HEADER = "swap-header"
    """Only the swap header; the swap area is recreated on restore."""


class JsonRecord:
    """``to_json()`` for result dataclasses: their fields as plain JSON-ready data."""

    def to_json(self: DataclassInstance) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PartitionSummary:
    number: int
    start: int
    size: int
    fstype: str | None
    label: str | None
    stored: int
    """Bytes of data the image holds for it (used blocks, before compression)."""


@dataclass(frozen=True)
class ImageInfo(JsonRecord):
    name: str
    created: str
    """ISO 8601, UTC."""
    source_path: str
    source_model: str | None
    source_serial: str | None
    source_size: int
    table: str | None
    partitions: tuple[PartitionSummary, ...]
    data_size: int
    """Bytes of (uncompressed, non-zero, used) data the image refers to."""
    stored_size: int
    """Compressed bytes of the chunks it refers to (shared ones counted in full)."""
    status: str
    """``complete`` or ``verified``; ``clonezilla`` (or ``clonezilla (...)``) for a Clonezilla
    image folder listed beside ours; ``damaged: ...`` for one that cannot be read."""
    verified_at: str | None = None
    kind: str = "disk"
    """``disk`` (an image of partitions) or ``files`` (a file image, FORMAT.md)."""
    files: int = 0
    """Regular files in a file image (0 for a disk image)."""

    @property
    def clonezilla(self) -> bool:
        """A Clonezilla image folder: it can be verified, restored (whole disk) and imported,
        not opened or removed."""
        return self.status.startswith("clonezilla")


@dataclass(frozen=True)
class VerifyResult:
    image: str
    ok: bool
    checked_bytes: int
    problems: tuple[str, ...]
    """One line per damaged place: which partition, which byte range, what is wrong."""


@dataclass(frozen=True)
class RemoveResult:
    image: str
    freed_bytes: int


# Backup --------------------------------------------------------------------------------------

_METHOD_TEXT = {
    StreamMethod.USED_BLOCKS: "used blocks",
    StreamMethod.RAW: "every byte (zero areas skipped)",
    StreamMethod.SWAP_HEADER: "swap header only (recreated on restore)",
}


@dataclass(frozen=True)
class BackupPlan:
    source: SourcePlan
    repo: str
    name: str
    level: int
    notes: tuple[str, ...] = ()

    @property
    def total_bytes(self) -> int:
        return self.source.used_bytes

    def describe(self) -> list[str]:
        s = self.source
        ident = s.identity
        lines = [
            f"Back up {s.disk} ({ident.get('model') or 'unknown model'}, "
            f"{human_size(s.disk_size)}) to {self.repo} as image '{self.name}'",
        ]
        for sp in s.streams:
            if sp.id == "disk":
                lines.append(f"  partition table, boot code and gaps: {human_size(sp.used_bytes)}")
                continue
            what = _METHOD_TEXT[StreamMethod(sp.method)]
            lines.append(
                f"  partition {sp.number}: {sp.fstype or 'unknown'} {sp.label or ''} "
                f"{human_size(sp.size)}, {what}: {human_size(sp.used_bytes)}".replace("  ,", ",")
            )
        lines.extend(f"  note: {n}" for n in self.notes)
        return lines


@dataclass(frozen=True)
class BackupResult:
    image: ImageInfo
    new_bytes: int
    """Compressed bytes added to the repository by this backup."""
    seconds: float
    notes: tuple[str, ...] = field(default_factory=tuple)
    unreadable: tuple[str, ...] = field(default_factory=tuple)
    """Lines saying what could not be read from a failing source, and which files it hit."""


# Restore -------------------------------------------------------------------------------------


def resize_text(grows: bool, shrinks: bool, old_size: int) -> str:
    """What a plan line adds for a partition whose size changes on the target."""
    if grows:
        return f" (grown from {human_size(old_size)})"
    if shrinks:
        return f" (shrunk from {human_size(old_size)})"
    return ""


def moved_text(old_start: int, new_start: int) -> str:
    return ", moved" if new_start != old_start else ""


def shrink_lines(shrunk: list[tuple[int, str | None]]) -> list[str]:
    """The plan's word on each partition (number, TYPE) shrunk onto a smaller disk."""
    return [
        f"  partition {n}: its {fstype} is shrunk to fit; the data beyond the new end is moved"
        for n, fstype in shrunk
    ]


@dataclass(frozen=True)
class PartitionWrite:
    stream: StreamInfo
    number: int
    target_start: int
    target_size: int
    source_size: int
    fstype: str | None

    @property
    def grows(self) -> bool:
        return self.target_size > self.source_size

    @property
    def shrinks(self) -> bool:
        """Onto a smaller disk: its file system is shrunk to fit (docs/SHRINK.md)."""
        return self.target_size < self.source_size


def unreadable_notes(body: Mapping[str, Any]) -> tuple[str, ...]:
    """The plan's note about areas a failing source did not give when the image was taken."""
    bad = body.get("unreadable") or []
    if not isinstance(bad, list) or not bad:
        return ()
    entries = [b for b in bad if isinstance(b, list) and len(b) == 3 and isinstance(b[2], int)]
    streams = sorted({str(b[0]) for b in entries})
    total = sum(b[2] for b in entries)
    return (
        f"{human_size(total)} in {len(bad)} area(s) of {', '.join(streams)} could not be read "
        "when this image was taken; they are written as zeros",
    )


def image_notes(body: Mapping[str, Any]) -> tuple[str, ...]:
    """The plan's notes about how the image was taken: unreadable areas, a journal replayed
    into it, a partition imaged while mounted read-write (``--force``)."""
    notes = list(unreadable_notes(body))
    streams = body.get("streams")
    for s in streams if isinstance(streams, list) else []:
        if not isinstance(s, dict):
            continue
        where = f"partition {s.get('number')}" if s.get("number") else "the disk"
        if s.get("journal_replayed") is True:
            notes.append(
                f"{where}: its journal needed recovery when imaged and was replayed into the image"
            )
        if isinstance(s.get("mounted_rw"), str):
            notes.append(
                f"{where} was mounted read-write at {s['mounted_rw']} when imaged (--force): "
                "the image may be inconsistent"
            )
    return tuple(notes)


@dataclass(frozen=True)
class RestorePlan:
    repo: str
    image: str
    target_info: Target
    """The disk as it was when planned; ``run_restore`` refuses if it is another one now."""
    body: Mapping[str, Any]
    layout: Layout | None
    """None when restoring chosen partitions into the target's existing table."""
    writes: tuple[PartitionWrite, ...]
    disk_stream: StreamInfo | None
    cell_size: int
    notes: tuple[str, ...] = ()
    delta: Delta | None = None
    """What the target already holds, measured while planning (engine/delta.py); None: every
    cell is written."""
    boot_entry: BootEntryOffer | None = None
    """A UEFI boot entry to add for the target's EFI system partition (engine/bootentry.py)."""

    @classmethod
    def without_table(
        cls,
        repo: str,
        image: str,
        target: Target,
        body: Mapping[str, Any],
        writes: tuple[PartitionWrite, ...],
        cell_size: int,
    ) -> RestorePlan:
        """A plan that writes no partition table: into the target's existing partitions, or
        an image of a disk that had none."""
        return cls(repo, image, target, body, None, writes, None, cell_size, image_notes(body))

    @property
    def target(self) -> str:
        return self.target_info.path

    @property
    def total_bytes(self) -> int:
        full = sum(int(w.stream.raw.get("data_bytes", 0)) for w in self.writes)
        if self.delta is None:
            return full
        measured = sum(
            int(w.stream.raw.get("data_bytes", 0))
            for w in self.writes
            if w.stream.id in self.delta.streams
        )
        return full - measured + self.delta.write_bytes

    def describe(self) -> list[str]:
        lines = [f"Restore image '{self.image}' from {self.repo}", *self.target_info.describe()]
        if self.delta is not None:
            lines.extend(f"  {line}" for line in self.delta.describe())
        if self.layout is not None and self.delta is not None:
            lines.append(f"  keep the {self.layout.table.label} partition table: it is the same")
        elif self.layout is not None:
            lines.append(
                f"  write a new {self.layout.table.label} partition table"
                + (" (identical layout)" if self.layout.same_geometry else "")
            )
        for w in self.writes:
            what = (
                f"  partition {w.number} ({w.fstype or 'unknown'}): "
                f"{human_size(int(w.stream.raw.get('data_bytes', 0)))} of data at byte "
                f"{w.target_start}, size {human_size(w.target_size)}"
            )
            what += resize_text(w.grows, w.shrinks, w.source_size)
            what += moved_text(int(w.stream.raw.get("start", w.target_start)), w.target_start)
            lines.append(what)
        lines.extend(shrink_lines([(w.number, w.fstype) for w in self.writes if w.shrinks]))
        if self.boot_entry is not None:
            lines.append(f"  {self.boot_entry.describe(self.target)}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return lines


@dataclass(frozen=True)
class RestoreResult(JsonRecord):
    image: str
    target: str
    written_bytes: int
    seconds: float
    checks: tuple[str, ...]
    """One line per file system: which check ran and what it said."""
    ok: bool
    matched_bytes: int = 0
    """Bytes a delta restore found already on the target and did not write."""


# Clone ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CloneStream:
    stream: StreamPlan
    number: int
    target_start: int
    target_size: int

    @property
    def grows(self) -> bool:
        return self.target_size > self.stream.size

    @property
    def shrinks(self) -> bool:
        return self.target_size < self.stream.size


@dataclass(frozen=True)
class ClonePlan:
    source: SourcePlan
    target_info: Target
    """The disk as it was when planned; ``run_clone`` refuses if it is another one now."""
    layout: Layout | None
    copies: tuple[CloneStream, ...]
    system: bool
    new_ids: bool
    notes: tuple[str, ...] = ()
    delta: Delta | None = None
    """What the target (an earlier clone) already holds, measured while planning; None: every
    used cell is copied."""
    boot_entry: BootEntryOffer | None = None
    """A UEFI boot entry to add for the target's EFI system partition (engine/bootentry.py)."""

    @property
    def target(self) -> str:
        return self.target_info.path

    @property
    def total_bytes(self) -> int:
        full = sum(c.stream.used_bytes for c in self.copies)
        if self.delta is None:
            return full
        measured = sum(
            c.stream.used_bytes for c in self.copies if c.stream.id in self.delta.streams
        )
        return full - measured + self.delta.write_bytes

    def describe(self) -> list[str]:
        s = self.source
        lines = [
            f"Clone {'the system partitions of ' if self.system else ''}{s.disk} "
            f"({s.identity.get('model') or 'unknown model'}, {human_size(s.disk_size)})",
            *self.target_info.describe(),
        ]
        if self.delta is not None:
            lines.extend(f"  {line}" for line in self.delta.describe())
        if self.layout is not None:
            lines.append(
                f"  write a {self.layout.table.label} partition table"
                + (" with new disk and partition identifiers" if self.new_ids else "")
            )
        for c in self.copies:
            line = (
                f"  partition {c.number} ({c.stream.fstype or 'unknown'}): "
                f"{human_size(c.stream.used_bytes)} to copy, at byte {c.target_start}, "
                f"size {human_size(c.target_size)}"
            )
            line += resize_text(c.grows, c.shrinks, c.stream.size)
            line += moved_text(c.stream.start, c.target_start)
            lines.append(line)
        lines.extend(shrink_lines([(c.number, c.stream.fstype) for c in self.copies if c.shrinks]))
        if self.boot_entry is not None:
            lines.append(f"  {self.boot_entry.describe(self.target)}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return lines


@dataclass(frozen=True)
class CloneResult(JsonRecord):
    source: str
    target: str
    copied_bytes: int
    seconds: float
    checks: tuple[str, ...]
    ok: bool
    matched_bytes: int = 0
    """Bytes a delta clone found already on the target and did not copy."""


# File backup ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileSource:
    """One SOURCE of ``backup --files``: a partition (and a folder in it) or a folder here."""

    spec: str
    """As given: ``/dev/sda3``, ``/dev/sda3:/Users/alice`` or ``/home``."""
    device: str | None
    """The partition, or None for a folder of the running system."""
    fstype: str | None
    uuid: str | None
    label: str | None
    folder: str
    """The folder inside the file system (``/`` for all of it)."""
    place: str
    """Where its tree sits in the image (FORMAT.md, "File images"): "" or a name."""
    key: str
    """The source key the files cache is looked up by."""
    case_insensitive: bool
    stable_inodes: bool
    mounted_at: str | None = None
    """Where it is already mounted (used as it is), or None: recovery mounts it read-only."""

    def to_json(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "place": self.place,
            "device": self.device,
            "fstype": self.fstype,
            "uuid": self.uuid,
            "label": self.label,
            "folder": self.folder,
            "key": self.key,
            "case_insensitive": self.case_insensitive,
        }


@dataclass(frozen=True)
class FileBackupPlan:
    sources: tuple[FileSource, ...]
    repo: str
    name: str
    level: int
    include: tuple[tuple[str, str], ...]
    """``(place, folder)`` pairs chosen: the sources' folders, or a preset's folders in them."""
    exclude: tuple[str, ...]
    preset: str | None
    files: int
    """Regular files the walk found when planning (the run walks again)."""
    total_bytes: int
    notes: tuple[str, ...] = ()

    def describe(self) -> list[str]:
        lines = [
            f"Back up {self.files} file(s), {human_size(self.total_bytes)}, to {self.repo} "
            f"as file image '{self.name}'"
        ]
        for s in self.sources:
            what = f"{s.device} ({s.fstype or 'unknown'}{', ' + s.label if s.label else ''})"
            lines.append(f"  from {what if s.device else 'this system'}: {s.folder}")
        if self.preset:
            lines.append(f"  preset {self.preset}: " + ", ".join(p for _, p in self.include))
        if self.exclude:
            lines.append(f"  excluding {len(self.exclude)} pattern(s): " + ", ".join(self.exclude))
        lines.extend(f"  note: {n}" for n in self.notes)
        return lines


@dataclass(frozen=True)
class FileBackupResult(JsonRecord):
    image: ImageInfo
    """The new file image; its ``stored_size`` is 0 here (counting it stats every chunk the
    image names: ``images`` does)."""
    files: int
    folders: int
    total_bytes: int
    """Bytes of the regular files saved (each hard-linked file once)."""
    read_bytes: int
    """Bytes read from the source: what the files cache could not vouch for."""
    reused_files: int
    """Files the previous file image's tree vouched for unchanged (not opened)."""
    new_bytes: int
    """Compressed bytes added to the backup location."""
    seconds: float
    skipped: tuple[str, ...] = ()
    """``path: reason`` of each file that could not be read after retries."""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class SourceFolders:
    """The folders of a file backup's source, for choosing what to save (the TUI's tree)."""

    source: str
    system: str | None
    """``windows`` or ``linux`` when the user-data preset applies, else None."""
    folders: tuple[str, ...]
    """Absolute paths in the file system, folders only, a few levels deep, sorted."""
    preset: tuple[str, ...]
    """The folders the user-data preset would save (empty when it does not apply)."""
    truncated: bool = False
