"""The engine's public surface: what the CLI and the TUI call. Plain data in, plain data out.

Every long operation takes a :class:`~recovery.engine.progress.Progress` and an optional
:class:`~recovery.engine.progress.CancelToken`, and raises :class:`recovery.errors.RecoveryError`
subclasses only. Destructive operations are split into ``plan_*`` (reads only, validates every
safety rule, returns a plan whose ``describe()`` lines the UI shows) and ``run_*`` (executes a
plan the person confirmed, after checking the target is still the disk the plan showed).

The plans and results are the types of :mod:`recovery.engine.plans`, re-exported here. Importing
this module imports the repository (zstandard, blake3); each engine module is imported by the
function that needs it, so a command loads only its own part of the engine (a file backup's
start-up time counts against its second run, which does almost nothing else), and the CLI
imports this module only when a command runs, so ``recovery --version`` and ``--help`` stay quick.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from recovery.engine.plans import (
    BackupPlan,
    BackupResult,
    ClonePlan,
    CloneResult,
    FileBackupPlan,
    FileBackupResult,
    ImageInfo,
    PartitionSummary,
    Question,
    RemoveResult,
    RestorePlan,
    RestoreResult,
    SourceFolders,
    VerifyResult,
)
from recovery.engine.progress import CancelToken, NullProgress, Progress
from recovery.errors import NotARepository, UsageError
from recovery.repository.store import Repository

if TYPE_CHECKING:
    from recovery.engine import volumes
    from recovery.engine.clonezilla import ClonezillaRestorePlan

    # Imported when called: the view needs libfuse, which no other command loads.
    from recovery.engine.extract import ExtractPlan, ExtractResult
    from recovery.engine.view import ViewResult

__all__ = [
    "BackupPlan",
    "BackupResult",
    "ClonePlan",
    "CloneResult",
    "FileBackupPlan",
    "FileBackupResult",
    "ImageInfo",
    "PartitionSummary",
    "Question",
    "RemoveResult",
    "RestorePlan",
    "RestoreResult",
    "SourceFolders",
    "VerifyResult",
    "backup_plan",
    "backup_run",
    "change_passphrase",
    "check_passphrase",
    "clone_plan",
    "clone_run",
    "close_image",
    "extract_plan",
    "extract_run",
    "file_backup_plan",
    "file_backup_run",
    "list_images",
    "lvm_volume_group",
    "open_image",
    "remove",
    "restore_plan",
    "restore_run",
    "source_folders",
    "verify",
    "wait_for_writers",
]


def backup_plan(
    sources: list[str],
    repo: str,
    name: str | None = None,
    level: int = 3,
    system: bool = False,
    keep_system_files: bool = False,
    encrypt: bool = False,
    force: bool = False,
) -> BackupPlan:
    """Validate sources and repository; return a plan (``describe()`` gives lines to show).
    ``encrypt``: a new location is created encrypted (docs/FORMAT.md). ``force``: image
    partitions mounted read-write too (refused otherwise; the image may be inconsistent)."""
    from recovery.engine import backup

    return backup.plan_backup(
        sources,
        repo,
        name=name,
        level=level,
        system=system,
        keep_system_files=keep_system_files,
        encrypt=encrypt,
        force=force,
    )


def backup_run(
    plan: BackupPlan,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
    ask: Question | None = None,
) -> BackupResult:
    """``ask`` decides whether to go on when the source has many unreadable areas (None: go on)."""
    from recovery.engine import backup

    return backup.run_backup(plan, progress or NullProgress(), cancel or CancelToken(), ask)


def file_backup_plan(
    sources: list[str],
    repo: str,
    name: str | None = None,
    excludes: list[str] | None = None,
    preset: str | None = None,
    level: int = 3,
    encrypt: bool = False,
) -> FileBackupPlan:
    """Resolve and mount the sources read-only, count what will be saved, unmount; return a
    plan (``describe()`` gives lines to show). SOURCE: ``/dev/X``, ``/dev/X:/folder``, a folder."""
    from recovery.engine import filebackup

    return filebackup.plan_file_backup(
        sources, repo, name=name, excludes=excludes, preset=preset, level=level, encrypt=encrypt
    )


def source_folders(source: str, depth: int = 3) -> SourceFolders:
    """The folders of a file backup's SOURCE (mounted read-only for the look), and those the
    user-data preset would save; for choosing what to back up."""
    from recovery.engine import filebackup

    return filebackup.source_folders(source, depth)


def file_backup_run(
    plan: FileBackupPlan, progress: Progress | None = None, cancel: CancelToken | None = None
) -> FileBackupResult:
    """Save the plan's files as a file image; unreadable files are skipped and listed."""
    from recovery.engine import filebackup

    return filebackup.run_file_backup(plan, progress or NullProgress(), cancel or CancelToken())


def restore_plan(
    repo: str,
    image: str,
    target: str,
    partitions: list[int] | None = None,
    full: bool = False,
    boot_entry: bool = True,
) -> RestorePlan | ClonezillaRestorePlan:
    """Check the target (size, mounted, holds the repository) and lay out partitions; when the
    target already holds an earlier state of the disk, measure what matches (``full``: don't,
    write everything). ``boot_entry``: offer a missing UEFI boot entry (on UEFI machines).
    When ``repo::image`` is a Clonezilla image folder (see :func:`list_images`) the plan is a
    :class:`ClonezillaRestorePlan`: always the whole disk, always written whole (``full`` and
    ``boot_entry`` do not apply)."""
    from recovery.peers.clonezilla import is_clonezilla_ref

    if is_clonezilla_ref(repo, image):
        from recovery.engine import clonezilla

        if partitions is not None:
            raise UsageError(
                f"'{image}' is a Clonezilla image: it is restored as a whole disk, not by partition"
            )
        return clonezilla.plan_restore(repo, image, target)
    from recovery.engine import restore

    return restore.plan_restore(
        repo, image, target, partitions=partitions, full=full, boot_entry=boot_entry
    )


def restore_run(
    plan: RestorePlan | ClonezillaRestorePlan,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
) -> RestoreResult:
    if not isinstance(plan, RestorePlan):  # a ClonezillaRestorePlan
        from recovery.engine import clonezilla

        return clonezilla.run_restore(plan, progress or NullProgress(), cancel or CancelToken())
    from recovery.engine import restore

    return restore.run_restore(plan, progress or NullProgress(), cancel or CancelToken())


def list_images(repo: str) -> list[ImageInfo]:
    """Our images at ``repo``, then the Clonezilla image folders in it (status ``clonezilla``:
    they can be verified, restored and imported, not opened or removed). NotARepository when it
    holds neither."""
    from recovery.engine import clonezilla, images

    peers = clonezilla.list_images(repo) if "://" not in repo else []
    try:
        ours = images.list_images(repo)
    except NotARepository:
        if not peers:
            raise
        ours = []
    return ours + peers


def verify(
    repo: str, image: str, progress: Progress | None = None, cancel: CancelToken | None = None
) -> VerifyResult:
    """Every chunk's hash (ours), or every partclone checksum (a Clonezilla image)."""
    from recovery.engine import images
    from recovery.peers.clonezilla import is_clonezilla_ref

    if is_clonezilla_ref(repo, image):
        from recovery.engine import clonezilla

        return clonezilla.verify_image(
            repo, image, progress or NullProgress(), cancel or CancelToken()
        )
    return images.verify_image(repo, image, progress or NullProgress(), cancel or CancelToken())


def remove(repo: str, image: str) -> RemoveResult:
    from recovery.engine import images

    return images.remove_image(repo, image)


def clone_plan(
    source: str,
    target: str,
    system: bool = False,
    new_ids: bool = False,
    full: bool = False,
    force: bool = False,
    boot_entry: bool = True,
) -> ClonePlan:
    """Check source and target and lay out the target; ``describe()`` gives lines to show.
    ``full``: copy everything even onto an earlier clone; ``force``: copy partitions mounted
    read-write too (refused otherwise); ``boot_entry``: offer a missing UEFI boot entry."""
    from recovery.engine import clone

    return clone.plan_clone(
        source,
        target,
        system=system,
        new_ids=new_ids,
        full=full,
        force=force,
        boot_entry=boot_entry,
    )


def clone_run(
    plan: ClonePlan,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
    ask: Question | None = None,
) -> CloneResult:
    """``ask`` decides whether to go on when the source has many unreadable areas (None: go on)."""
    from recovery.engine import clone

    return clone.run_clone(plan, progress or NullProgress(), cancel or CancelToken(), ask)


# -- open, close, extract (issue 12): the image as a read-only tree of files ----------------------


def open_image(repo: str, image: str, directory: str) -> ViewResult:
    """Serve ``REPO::IMAGE`` read-only at ``directory`` (disk.img, pN.img, pN/); returns a
    :class:`~recovery.engine.view.ViewResult` once mounted. The view runs until closed."""
    from recovery.engine import opened

    return opened.open_image(repo, image, directory)


def close_image(directory: str) -> list[str]:
    """Unmount what ``open_image`` mounted at ``directory``; lines about what could not be."""
    from recovery.engine import opened

    return opened.close_image(directory)


def extract_plan(
    repo: str, image: str, paths: list[str], to: str, overwrite: bool = False
) -> ExtractPlan:
    """Check the paths and the destination (nothing is copied); ``describe()`` gives lines.
    A file image takes plain paths (``/Users/alice``), a disk image ``pN:/path``."""
    from recovery.engine import extract, fileextract
    from recovery.repository.filetree import is_file_image
    from recovery.repository.store import check_name

    r = Repository.open(repo)
    body = r.read_manifest(check_name(image))
    if is_file_image(body):
        return fileextract.plan_file_extract(r, image, body, paths, to, overwrite)
    return extract.plan_extract(repo, image, paths, to, overwrite=overwrite)


def extract_run(
    plan: ExtractPlan, progress: Progress | None = None, cancel: CancelToken | None = None
) -> ExtractResult:
    from recovery.engine import extract, fileextract

    if isinstance(plan, fileextract.FileExtractPlan):
        return fileextract.run_file_extract(
            Repository.open(plan.repo), plan, progress or NullProgress(), cancel or CancelToken()
        )
    return extract.run_extract(plan, progress or NullProgress(), cancel or CancelToken())


def check_passphrase(repo: str) -> None:
    """Open an encrypted location (asking for its passphrase): WrongPassphrase if it fails."""
    Repository.open(repo)


def change_passphrase(repo: str, new_passphrase: str) -> None:
    """Re-wrap the location's key under ``new_passphrase`` (only its header is rewritten)."""
    r = Repository.open(repo)
    with r.locked("passphrase"):
        r.change_passphrase(new_passphrase)


def lvm_volume_group(path: str, size: int) -> volumes.VolumeGroupInfo | None:
    """The LVM volume group on the PV at ``path`` (read in place, nothing activated)."""
    from recovery.engine import volumes

    return volumes.volume_group(path, size)


def wait_for_writers(seconds: float, tell: Callable[[str], None] | None = None) -> None:
    """A writer finding a location's lock held waits up to ``seconds`` (``tell`` hears it once)
    instead of refusing at once: two machines backing up to one share or bucket."""
    from recovery.repository.store import wait_for_writers as wait

    wait(seconds, tell)
