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
    encrypt: bool = False,
) -> Any:
    """Validate sources and repository; return a plan (``describe()`` gives lines to show).
    ``encrypt``: a new location is created encrypted (docs/FORMAT.md)."""
    from recovery.engine import backup

    return backup.plan_backup(
        sources,
        repo,
        name=name,
        level=level,
        system=system,
        keep_system_files=keep_system_files,
        encrypt=encrypt,
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


def check_passphrase(repo: str) -> None:
    """Open an encrypted location (asking for its passphrase): WrongPassphrase if it fails."""
    from recovery.repository.store import Repository

    Repository.open(repo)


def change_passphrase(repo: str, new_passphrase: str) -> None:
    """Re-wrap the location's key under ``new_passphrase`` (only its header is rewritten)."""
    from recovery.repository.store import Repository

    r = Repository.open(repo)
    with r.locked("passphrase"):
        r.change_passphrase(new_passphrase)
