"""The interface every file system reader implements, and the registry that picks one.

A reader is opened on a :class:`BlockSource` (``pread`` over one partition), validates every
field it reads (damaged or hostile data raises :class:`DamagedFileSystem`, never an IndexError
or a huge allocation), and reports used byte ranges relative to the partition start.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from recovery.core.extents import Extent
from recovery.errors import NotThisFileSystem


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

    def restore_note(self) -> str | None:
        """What restore must do beyond writing the used ranges (swap: recreate), or None."""
        return None


_REGISTRY: list[type[FileSystem]] = []


def register(cls: type[FileSystem]) -> type[FileSystem]:
    _REGISTRY.append(cls)
    return cls


def readers() -> list[type[FileSystem]]:
    # Importing the package modules registers them.
    from recovery.filesystems import load_all  # noqa: F401

    return list(_REGISTRY)


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
