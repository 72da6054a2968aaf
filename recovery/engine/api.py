"""The engine's public surface: what the CLI and the TUI call. Plain data in, plain data out.

Every long operation takes a :class:`~recovery.engine.progress.Progress` and an optional
:class:`~recovery.engine.progress.CancelToken`, and raises :class:`recovery.errors.RecoveryError`
subclasses only. Destructive operations are split into ``plan_*`` (reads only, validates every
safety rule, returns a plan whose ``describe()`` lines the UI shows) and ``run_*`` (executes a
plan the person confirmed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from recovery.engine.progress import CancelToken, NullProgress, Progress


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
class ImageInfo:
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
    """``complete`` or ``verified``."""
    verified_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


@dataclass(frozen=True)
class BackupResult:
    image: ImageInfo
    new_bytes: int
    """Compressed bytes added to the repository by this backup."""
    seconds: float
    notes: tuple[str, ...] = field(default_factory=tuple)
    unreadable: tuple[str, ...] = field(default_factory=tuple)
    """Lines saying what could not be read from a failing source, and which files it hit."""


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


def backup_plan(
    sources: list[str],
    repo: str,
    name: str | None = None,
    level: int = 3,
    system: bool = False,
    keep_system_files: bool = False,
) -> Any:
    """Validate sources and repository; return a plan (``describe()`` gives lines to show)."""
    from recovery.engine import backup

    return backup.plan_backup(
        sources, repo, name=name, level=level, system=system, keep_system_files=keep_system_files
    )


def backup_run(
    plan: Any, progress: Progress | None = None, cancel: CancelToken | None = None
) -> BackupResult:
    from recovery.engine import backup

    return backup.run_backup(plan, progress or NullProgress(), cancel or CancelToken())


def restore_plan(repo: str, image: str, target: str, partitions: list[int] | None = None) -> Any:
    """Check the target (size, mounted, holds the repository) and lay out partitions."""
    from recovery.engine import restore

    return restore.plan_restore(repo, image, target, partitions=partitions)


def restore_run(
    plan: Any, progress: Progress | None = None, cancel: CancelToken | None = None
) -> Any:
    from recovery.engine import restore

    return restore.run_restore(plan, progress or NullProgress(), cancel or CancelToken())


def list_images(repo: str) -> list[ImageInfo]:
    from recovery.engine import images

    return images.list_images(repo)


def verify(
    repo: str, image: str, progress: Progress | None = None, cancel: CancelToken | None = None
) -> VerifyResult:
    from recovery.engine import images

    return images.verify_image(repo, image, progress or NullProgress(), cancel or CancelToken())


def remove(repo: str, image: str) -> RemoveResult:
    from recovery.engine import images

    return images.remove_image(repo, image)


def clone_plan(source: str, target: str, system: bool = False, new_ids: bool = False) -> Any:
    """Check source and target and lay out the target; ``describe()`` gives lines to show."""
    from recovery.engine import clone

    return clone.plan_clone(source, target, system=system, new_ids=new_ids)


def clone_run(
    plan: Any, progress: Progress | None = None, cancel: CancelToken | None = None
) -> Any:
    from recovery.engine import clone

    return clone.run_clone(plan, progress or NullProgress(), cancel or CancelToken())


# -- open, close, extract (issue 12): the image as a read-only tree of files ----------------------


def open_image(repo: str, image: str, directory: str) -> Any:
    """Serve ``REPO::IMAGE`` read-only at ``directory`` (disk.img, pN.img, pN/); returns a
    :class:`~recovery.engine.view.ViewResult` once mounted. The view runs until closed."""
    from recovery.engine import opened

    return opened.open_image(repo, image, directory)


def close_image(directory: str) -> list[str]:
    """Unmount what ``open_image`` mounted at ``directory``; lines about what could not be."""
    from recovery.engine import opened

    return opened.close_image(directory)


def extract_plan(repo: str, image: str, paths: list[str], to: str, overwrite: bool = False) -> Any:
    """Check the paths and the destination (nothing is copied); ``describe()`` gives lines."""
    from recovery.engine import extract

    return extract.plan_extract(repo, image, paths, to, overwrite=overwrite)


def extract_run(
    plan: Any, progress: Progress | None = None, cancel: CancelToken | None = None
) -> Any:
    from recovery.engine import extract

    return extract.run_extract(plan, progress or NullProgress(), cancel or CancelToken())
