"""The interface every file system reader implements, and the registry that picks one.

A reader is opened on a :class:`BlockSource` (``pread`` over one partition), validates every
field it reads (damaged or hostile data raises :class:`DamagedFileSystem`, never an IndexError
or a huge allocation), and reports used byte ranges relative to the partition start.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from recovery.core.extents import Extent
from recovery.devices.tools import Need
from recovery.errors import DamagedFileSystem, DeviceError, NotThisFileSystem


class BlockSource(Protocol):
    """Random-access reads of one partition (or a file standing in for one)."""

    size: int

    def pread(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset`` (short only at the end of the source)."""
        ...


class FileSource:
    """A :class:`BlockSource` over an open file descriptor, from ``base`` for ``size`` bytes."""

    def __init__(self, fd: int, base: int, size: int) -> None:
        self.fd = fd
        self.base = base
        self.size = size

    def pread(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("negative offset or length")
        length = max(0, min(length, self.size - offset))
        out = bytearray()
        while len(out) < length:
            chunk = os.pread(self.fd, length - len(out), self.base + offset + len(out))
            if not chunk:
                break
            out += chunk
        return bytes(out)


class BytesSource:
    """A :class:`BlockSource` over bytes in memory (unit tests, fuzzing)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def pread(self, offset: int, length: int) -> bytes:
        return self.data[offset : offset + length]


@dataclass(frozen=True)
class Geometry:
    block_size: int
    """Allocation unit in bytes (ext4 block, FAT cluster, NTFS cluster)."""
    fs_size: int
    """Bytes the file system spans from the partition start."""
    label: str | None = None
    uuid: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    """Warnings for the person (hibernated Windows, encrypted volume, ...)."""


class FileSystem(ABC):
    """An opened file system. Subclasses set ``name`` and implement ``open``/``used_extents``."""

    name: ClassVar[str]
    """blkid's TYPE for it (``ext4``, ``vfat``, ``ntfs``, ``swap``)."""
    fstypes: ClassVar[tuple[str, ...]] = ()
    """blkid TYPE values this reader handles (defaults to ``(name,)``)."""
    takes_keep_system_files: ClassVar[bool] = False
    """``open`` accepts ``keep_system_files`` (see :func:`open_filesystem`)."""
    journal_needs_recovery: bool = False
    """The journal holds committed work not yet written in place (a crash, or mounted now):
    the used blocks are known only after it is replayed (:meth:`Kind.replay_journal`)."""

    def __init__(self, source: BlockSource, geometry: Geometry) -> None:
        self.source = source
        self.geometry = geometry

    @classmethod
    @abstractmethod
    def open(cls, source: BlockSource) -> FileSystem:
        """Read and validate the metadata. Raises NotThisFileSystem or DamagedFileSystem."""

    @abstractmethod
    def used_extents(self) -> Iterator[Extent]:
        """Byte ranges in use, sorted, non-overlapping, relative to the partition start.

        Includes all metadata (superblocks, bitmaps, tables). Generated lazily so memory stays
        bounded on large file systems.
        """

    def zeroed_extents(self) -> list[tuple[int, int]]:
        """Byte ranges inside the used ones whose bytes no reader of the file system will use
        again (a clean ext4 journal), sorted and disjoint: imaged as zeros without being read,
        and so restored as zeros (never left as the target held them)."""
        return []

    def restore_note(self) -> str | None:
        """What restore must do beyond writing the used ranges (swap: recreate), or None."""
        return None


def damaged(fs: str, what: str, check: str) -> DamagedFileSystem:
    """The error of a reader that met inconsistent metadata: what, and what the person can do."""
    return DamagedFileSystem(
        f"{fs} metadata is damaged: {what}. Run `{check}` on the partition to see what is "
        "wrong, or image it whole (every sector) instead."
    )


def read_exact(
    source: BlockSource, offset: int, length: int, what: str, fs: str, check: str
) -> bytes:
    """``length`` bytes at ``offset``: a read error is the device's, a short read is damage
    (the metadata points past the partition's end)."""
    try:
        data = source.pread(offset, length)
    except OSError as e:
        raise DeviceError(f"cannot read the {fs} {what} at byte {offset}: {e}") from e
    if len(data) != length:
        raise damaged(
            fs, f"the {what} at byte {offset} lies beyond the end of the partition", check
        )
    return data


def power_of_two(value: int, low: int, high: int) -> bool:
    return low <= value <= high and value & (value - 1) == 0


_REGISTRY: list[type[FileSystem]] = []


def register(cls: type[FileSystem]) -> type[FileSystem]:
    _REGISTRY.append(cls)
    return cls


def readers() -> list[type[FileSystem]]:
    _load_all()
    return list(_REGISTRY)


def _load_all() -> None:
    # Importing the package modules registers them.
    from recovery.filesystems import load_all  # noqa: F401


Step = Callable[[str], None]
"""Tells the person what runs now (the engine passes its progress's ``step``)."""


class Kind:
    """Everything the engine needs to know about one file system, keyed by blkid's TYPE.

    One instance per TYPE lives in the file system's own module (its home) and is registered
    with :func:`register_kind`; a file system without a used-block reader (xfs, BitLocker) has
    one too. The defaults describe a file system we know nothing about: imaged every byte, not
    grown, not checked, not mounted, nothing to look at inside. Every method that runs a program
    has a matching ``*_needs`` that names it, so a plan can refuse before writing when one is
    missing (:func:`recovery.devices.tools.require`). Result lines follow the engine's rule:
    ``"<node>: what happened"``, and ``"FAILED <node>: ..."`` for a failure.
    """

    encrypted: bool = False
    """Its allocation cannot be read without a key: imaged sector by sector, and on a system
    disk it is the system (a BitLocker C:, a LUKS root)."""
    header_only: bool = False
    """Only its header is imaged, and it is recreated after a restore (swap)."""
    mount_type: str | None = None
    """``mount -t`` for it; None: never offered as a backup location."""
    read_only_options: str = "ro"
    """Mount options that keep a read-only mount from writing (journal replay writes even with
    ``ro``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    @property
    def can_grow(self) -> bool:
        """Whether :meth:`grow` can fill a larger partition (the layout lets it take space)."""
        return False

    def grow_needs(self) -> list[Need]:
        return []

    def grow(self, node: str, step: Step) -> list[str]:
        """Grow the file system on ``node`` to fill its partition; lines only for the notable."""
        return []

    @property
    def can_shrink(self) -> bool:
        """Whether :meth:`shrink` can make the file system smaller (docs/SHRINK.md)."""
        return False

    def shrink_needs(self) -> list[Need]:
        """The programs :meth:`minimum_size` and :meth:`shrink` run."""
        return []

    def minimum_size(self, path: str) -> int:
        """The fewest bytes the file system on ``path`` (a device or a regular file) can shrink
        to, asked of its tool without writing. Raises :class:`~recovery.errors.Refused` when
        the tool cannot tell (a damaged or hibernated volume), saying why."""
        raise NotImplementedError(self.name)

    def shrink(self, path: str, new_size: int, step: Step) -> list[str]:
        """Shrink the file system on ``path`` (a regular file) to ``new_size`` bytes, moving
        what lies beyond into the front; FAILED lines say why it could not."""
        raise NotImplementedError(self.name)

    def check_needs(self) -> list[Need]:
        return []

    def check(self, node: str, step: Step) -> list[str]:
        """Check the file system on ``node`` after it was written, read-only: one line."""
        return [f"{node}: {self.name or 'unknown content'} written, no check available"]

    def after_move(self, node: str, new_start: int) -> list[str]:
        """Fix what names the partition's old start inside the file system (NTFS, FAT)."""
        return []

    def after_write_needs(self) -> list[Need]:
        return []

    def after_write(self, node: str, uuid: str | None, label: str | None) -> list[str]:
        """Recreate what was not imaged (swap: the whole area, with its UUID and label)."""
        return []

    def finish_needs(self, grows: bool) -> list[Need]:
        """Every program finishing a written partition of this kind runs."""
        return [
            *self.after_write_needs(),
            *(self.grow_needs() if grows and self.can_grow else []),
            *self.check_needs(),
        ]

    def files_in(
        self, node: str, block_size: int, ranges: list[tuple[int, int]]
    ) -> list[str] | None:
        """Paths of the files that use the byte ``ranges`` of the file system on ``node`` (for
        the person, after some could not be read); None when this file system cannot tell."""
        return None

    def inspect_needs(self) -> list[Need]:
        """The programs :meth:`root_names` and :meth:`has_path` run."""
        return []

    def root_names(self, node: str) -> set[str]:
        """Names at the root of the file system on ``node``, read without mounting it."""
        return set()

    def has_path(self, node: str, path: str) -> bool:
        """Whether ``path`` exists in the file system on ``node``, read without mounting it."""
        return False

    def names_in(self, node: str, path: str) -> set[str]:
        """Names in the folder ``path`` of the file system on ``node``, lower case, read
        without mounting it (empty when it cannot tell)."""
        return set()

    def replay_journal_needs(self) -> list[Need]:
        return []

    def replay_journal(self, path: str) -> str | None:
        """Replay the journal of the file system in the file ``path`` (a copy-on-write view of
        the partition, never the partition itself); None when done, else why not (one line).
        Asked only when the reader says ``journal_needs_recovery``."""
        return f"{self.name or 'this file system'}: no journal replay known"


def result_line(node: str, what: str, code: int, out: str) -> str:
    """``"<node>: <what>"`` when a program succeeded, else a FAILED line with its last words."""
    if code == 0:
        return f"{node}: {what}"
    last = out.splitlines()[-1] if out else f"exit code {code}"
    return f"FAILED {node}: {what.split()[0]}: {last}"


def grow_while_mounted(node: str, fstype: str, grow: Callable[[str], list[str]]) -> list[str]:
    """Mount ``node`` on a private folder, run the ``grow`` command (argv for the mount point),
    unmount: how xfs and btrfs grow. Lines only for a failure, as :meth:`Kind.grow` says."""
    import tempfile

    from recovery.devices import tools

    with tempfile.TemporaryDirectory(prefix="recovery-grow-") as folder:
        code, out = tools.run(["mount", "-t", fstype, node, folder])
        if code != 0:
            return [result_line(node, f"mount {fstype} to grow it", code, out)]
        try:
            code, out = tools.run(grow(folder))
        finally:
            umount_code, umount_out = tools.run(["umount", folder])
        if umount_code != 0:
            return [result_line(node, "umount after growing", umount_code, umount_out)]
    return [] if code == 0 else [result_line(node, f"growing {fstype}", code, out)]


def look_while_mounted(node: str, fstype: str, options: str, path: str = "/") -> list[str] | None:
    """Names in folder ``path`` of the file system on ``node``, mounted read-only on a private
    folder for the look (xfs and btrfs have no reader like debugfs); None when ``path`` is not
    a folder there or the mount fails."""
    import tempfile

    from recovery.devices import tools

    with tempfile.TemporaryDirectory(prefix="recovery-look-") as folder:
        code, _ = tools.run(["mount", "-t", fstype, "-o", options, node, folder])
        if code != 0:
            return None
        try:
            return sorted(os.listdir(os.path.join(folder, path.lstrip("/"))))
        except OSError:
            return None
        finally:
            tools.run(["umount", folder])


class MountedKind(Kind):
    """A file system that grows, and is looked into, only while mounted (xfs, btrfs): on a
    private folder, read-only without log replay (``look_options``) to look."""

    look_options: str = "ro"
    grow_argv: tuple[str, ...] = ()
    """The grow command; the mount point is appended."""

    @property
    def can_grow(self) -> bool:
        return bool(self.grow_argv)

    def grow_needs(self) -> list[Need]:
        why = f"to grow {self.name} on the target (it grows only while mounted)"
        return [Need("mount", why), Need(self.grow_argv[0], why), Need("umount", why)]

    def grow(self, node: str, step: Step) -> list[str]:
        step(f"growing {self.name} on {node}")
        return grow_while_mounted(node, self.name, lambda folder: [*self.grow_argv, folder])

    def inspect_needs(self) -> list[Need]:
        why = f"to look inside {self.name} for an operating system (mounted read-only)"
        return [Need("mount", why), Need("umount", why)]

    def root_names(self, node: str) -> set[str]:
        return set(look_while_mounted(node, self.name, self.look_options) or [])

    def has_path(self, node: str, path: str) -> bool:
        folder, _, name = path.rstrip("/").rpartition("/")
        found = look_while_mounted(node, self.name, self.look_options, folder or "/")
        return name in (found or [])


_KINDS: dict[str, Kind] = {}


def register_kind(kind: Kind) -> Kind:
    if kind.name in _KINDS:
        raise ValueError(f"two homes for file system type {kind.name!r}")
    _KINDS[kind.name] = kind
    return kind


def kind_of(fstype: str | None) -> Kind:
    """The home of blkid's TYPE ``fstype``; a know-nothing :class:`Kind` for any other."""
    name = fstype or ""
    if name not in _KINDS:
        _load_home(name)
    return _KINDS.get(name) or Kind(name)


def _load_home(fstype: str) -> None:
    """Import the home registering ``fstype`` (filesystems/load_all.py's HOMES), every home
    when none claims it."""
    import importlib

    from recovery.filesystems.homes import home_of

    home = home_of(fstype)
    if home is None:
        _load_all()
    else:
        importlib.import_module(f"recovery.filesystems.{home}")


def kinds() -> list[Kind]:
    _load_all()
    return list(_KINDS.values())


def shrinkable(fstype: str | None) -> bool:
    """Whether the file system of blkid's TYPE ``fstype`` can be shrunk by its home."""
    return kind_of(fstype).can_shrink


def growable_numbers(fstypes: Mapping[int, str | None]) -> Collection[int]:
    """The partition numbers among ``fstypes`` (number -> TYPE) whose file system can grow."""
    return frozenset(n for n, t in fstypes.items() if kind_of(t).can_grow)


def open_filesystem(
    source: BlockSource, fstype: str | None, keep_system_files: bool = False
) -> FileSystem | None:
    """The reader for ``fstype`` (blkid's TYPE) opened on ``source``, or None if none fits.

    Without a hint, every reader is probed. ``DamagedFileSystem`` propagates: a partition that
    says it is ext4 but cannot be read as ext4 is not silently imaged raw.
    ``keep_system_files``: store the contents of files a reader would otherwise treat as unused
    (NTFS pagefile.sys, hiberfil.sys, swapfile.sys); readers that have none ignore it.
    """
    for cls in readers():
        types = cls.fstypes or (cls.name,)
        if fstype is not None and fstype not in types:
            continue
        try:
            if cls.takes_keep_system_files:
                return cls.open(source, keep_system_files=keep_system_files)  # type: ignore[call-arg]
            return cls.open(source)
        except NotThisFileSystem:
            continue
    return None
