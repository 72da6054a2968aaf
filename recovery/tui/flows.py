"""The tasks of the home screen as chains of screens: each step calls the next with what the
person chose, Escape goes back one step, and nothing is written before the plan screen (and, for
anything destructive, its confirmation).

Called by :class:`recovery.tui.screens.home.HomeScreen`. The engine is reached only through
``app.backends.engine`` (the functions of :mod:`recovery.engine.api`).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from textual.app import SuspendNotSupported

from recovery.devices.model import Disk
from recovery.engine.plans import BackupResult, ImageInfo, RestoreResult, VerifyResult
from recovery.engine.progress import CancelToken, Progress
from recovery.tui.backends import AppEngine, ShownPlan
from recovery.tui.formatting import human_size
from recovery.tui.screens.backups import BackupsScreen
from recovery.tui.screens.clone import CloneOptionsScreen
from recovery.tui.screens.dialogs import ConfirmScreen, InfoScreen
from recovery.tui.screens.disks import DiskPickerScreen
from recovery.tui.screens.location import LocationScreen
from recovery.tui.screens.options import BackupOptions, OptionsScreen
from recovery.tui.screens.partitions import PartitionPickerScreen, PartitionRow
from recovery.tui.screens.plan import PlanScreen
from recovery.tui.screens.progress import ProgressScreen
from recovery.tui.selection import partition_roles, system_disk

if TYPE_CHECKING:
    from recovery.tui.app import RecoveryApp


# Descriptions shared by several screens ------------------------------------------------------


def disk_line(disk: Disk) -> str:
    """One line that tells a disk apart: path, model, serial, size, table."""
    parts = [disk.path, disk.model or "unknown model"]
    if disk.serial:
        parts.append(f"serial {disk.serial}")
    parts.append(human_size(disk.size))
    parts.append(disk.table or "no partition table")
    return ", ".join(parts)


def partition_line(disk: Disk, number: int) -> str:
    roles = partition_roles(disk)
    p = next(q for q in disk.partitions if q.number == number)
    role = roles[number].name
    fs = p.fstype or "-"
    label = (p.label or p.partlabel or "")[:12]
    return f"{p.number:>2} {p.path:<15} {human_size(p.size):>9}  {fs:<6} {role:<18} {label}"


def current_partitions(disk: Disk) -> list[str]:
    if not disk.partitions:
        return ["  (no partitions)"]
    return ["  " + partition_line(disk, p.number) for p in disk.partitions]


def refuse_restore_target(disk: Disk) -> str | None:
    if disk.boot_medium:
        return "This is the stick recovery runs from; it cannot be a restore target."
    return None


# Backup --------------------------------------------------------------------------------------


@dataclass
class BackupChoice:
    task: str
    """``System Backup`` or ``Disk Backup``: the first part of every title."""
    system: bool
    disk: Disk | None = None
    sources: list[str] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    repo: str | None = None
    options: BackupOptions = field(default_factory=lambda: BackupOptions(None, 3, True))


def start_system_backup(app: RecoveryApp) -> None:
    choice = BackupChoice("System Backup", system=True)
    disk = system_disk(app.disks)
    if disk is None:
        app.push_screen(
            DiskPickerScreen(
                ("System Backup", "Disk"),
                "No disk with Windows or Linux was recognised. Pick the disk to back up.",
                lambda d: choose_partitions(app, replace(choice, disk=d)),
            )
        )
        return
    choose_partitions(app, replace(choice, disk=disk), other_disk=True)


def start_disk_backup(app: RecoveryApp) -> None:
    choice = BackupChoice("Disk Backup", system=False)
    app.push_screen(
        DiskPickerScreen(
            ("Disk Backup", "Disk"),
            "Pick the disk to back up (Enter). Next you can leave out partitions.",
            lambda d: choose_partitions(app, replace(choice, disk=d)),
        )
    )


def choose_partitions(app: RecoveryApp, choice: BackupChoice, *, other_disk: bool = False) -> None:
    disk = choice.disk
    assert disk is not None
    if not disk.partitions:
        choose_location(app, replace(choice, sources=[disk.path]))
        return
    roles = partition_roles(disk)
    rows = [
        PartitionRow(
            p.number, partition_line(disk, p.number), roles[p.number].system or not choice.system
        )
        for p in disk.partitions
    ]

    def picked(numbers: list[int]) -> None:
        if not choice.system and len(numbers) == len(disk.partitions):
            sources = [disk.path]
        else:
            sources = [p.path for p in disk.partitions if p.number in numbers]
        choose_location(app, replace(choice, sources=sources, partitions=numbers))

    def pick_other_disk() -> None:
        app.push_screen(
            DiskPickerScreen(
                (choice.task, "Disk"),
                "Pick the disk to back up.",
                lambda d: choose_partitions(app, replace(choice, disk=d)),
                select=disk.path,
            )
        )

    if choice.system:
        intro = (
            "The system partitions are ticked: boot, Windows or Linux, recovery. Space "
            "changes a tick, Enter goes on."
        )
    else:
        intro = "Every partition is ticked: the whole disk. Space leaves one out, Enter goes on."
    find = app.backends.system_partitions if choice.system else None
    app.push_screen(
        PartitionPickerScreen(
            (choice.task, "Partitions"),
            intro,
            "Disk: " + disk_line(disk),
            rows,
            picked,
            extra_key=("d", "Other disk", pick_other_disk) if other_disk else None,
            refine=(lambda: find(disk.path)) if find else None,
            refine_text="Looking inside the partitions for Windows and Linux...",
        )
    )


def choose_location(app: RecoveryApp, choice: BackupChoice) -> None:
    disk = choice.disk
    # Sources stay unmounted, and the engine refuses a location on the disk being backed up:
    # none of its partitions is offered.
    exclude = frozenset(p.path for p in (disk.partitions if disk is not None else ()))

    def picked(repo: str) -> None:
        choose_options(app, replace(choice, repo=repo))

    app.push_screen(
        LocationScreen((choice.task, "Location"), picked, for_backup=True, exclude=exclude)
    )


def _sources_text(choice: BackupChoice) -> str:
    disk = choice.disk
    if disk is not None and choice.sources == [disk.path]:
        return f"the whole disk {disk.path}"
    return ", ".join(choice.sources)


def choose_options(app: RecoveryApp, choice: BackupChoice) -> None:
    def done(options: BackupOptions) -> None:
        show_backup_plan(app, replace(choice, options=options))

    app.push_screen(
        OptionsScreen(
            (choice.task, "Options"),
            f"Saving {_sources_text(choice)} into {choice.repo}.",
            done,
            choice.options,
        )
    )


def show_backup_plan(app: RecoveryApp, choice: BackupChoice) -> None:
    engine: AppEngine = app.backends.engine
    disk = choice.disk
    assert choice.repo is not None
    repo = choice.repo
    opts = choice.options
    header = []
    if disk is not None:
        header.append("Source disk: " + disk_line(disk))
        whole = disk.path in choice.sources
        for p in disk.partitions:
            kept = whole or p.path in choice.sources
            header.append("  " + partition_line(disk, p.number) + ("" if kept else "  (left out)"))
    header += [
        f"Into: {repo}",
        f"Image name: {opts.name or '(from the disk and the date)'}",
        f"Compression level {opts.level}; verify afterwards: {'yes' if opts.verify else 'no'}"
        + ("; a new location is encrypted" if opts.encrypt else ""),
        "The source disk is only read.",
        "",
    ]

    def make_plan() -> ShownPlan:
        # The sources are what the person ticked: ``system=True`` would make the engine pick
        # the system partitions again and override that choice.
        return engine.backup_plan(
            list(choice.sources),
            repo,
            name=opts.name,
            level=opts.level,
            system=False,
            encrypt=opts.encrypt,
        )

    def start(plan: ShownPlan) -> None:
        def job(progress: Progress, cancel: CancelToken) -> list[str]:
            result = engine.backup_run(plan, progress, cancel)
            lines = backup_summary(result)
            if opts.verify:
                check = engine.verify(repo, result.image.name, progress, cancel)
                lines += verify_summary(check)
            return lines

        app.push_screen(
            ProgressScreen(
                (choice.task, "Running"),
                f"Saving {_sources_text(choice)} into {repo}",
                job,
                what="the backup",
                cancel_note="The backup location stays valid; this image is not kept.",
                # Verifying reads the data again: count it twice.
                overall_total=plan_total(plan) * (2 if opts.verify else 1),
            )
        )

    app.push_screen(PlanScreen((choice.task, "Plan"), header, make_plan, "Start backup", start))


def plan_total(plan: ShownPlan) -> int:
    """Bytes the plan will move, when the engine says (0: unknown)."""
    return plan.total_bytes


def backup_summary(result: BackupResult) -> list[str]:
    image = result.image
    lines = [
        f"Image {image.name} saved: {human_size(image.data_size)} of data, "
        f"{human_size(result.new_bytes)} new in the backup location.",
    ]
    lines += result.notes
    unreadable = list(result.unreadable)
    if unreadable:
        lines.append("Some of the source could not be read:")
        lines += [f"  {u}" for u in unreadable]
    return lines


def verify_summary(result: VerifyResult) -> list[str]:
    if result.ok:
        return [f"Verified: all {human_size(result.checked_bytes)} read back and match."]
    return [
        f"VERIFY FAILED for {result.image}: the image is damaged.",
        *(f"  {p}" for p in result.problems),
    ]


# Restore and the backups screen -------------------------------------------------------------


def start_restore(app: RecoveryApp) -> None:
    def picked(repo: str) -> None:
        app.push_screen(
            BackupsScreen(
                ("Restore", "Image"),
                repo,
                lambda r, image: choose_target(app, r, image),
                verify_image,
                manage=False,
            )
        )

    app.push_screen(LocationScreen(("Restore", "Location"), picked, for_backup=False))


def start_backups(app: RecoveryApp) -> None:
    def picked(repo: str) -> None:
        app.push_screen(
            BackupsScreen(
                ("Backups",),
                repo,
                lambda r, image: choose_target(app, r, image),
                verify_image,
            )
        )

    app.push_screen(LocationScreen(("Backups", "Location"), picked, for_backup=False))


def verify_image(screen: BackupsScreen, repo: str, image: ImageInfo) -> None:
    app = screen.app
    engine: AppEngine = screen.rapp.backends.engine

    def job(progress: Progress, cancel: CancelToken) -> list[str]:
        return verify_summary(engine.verify(repo, image.name, progress, cancel))

    def close() -> None:
        app.pop_screen()
        screen.action_refresh()

    app.push_screen(
        ProgressScreen(
            ("Backups", "Verify"),
            f"Verifying {image.name} in {repo}",
            job,
            what="the verification",
            cancel_note="Nothing is changed by stopping it.",
            overall_total=image.data_size,
            on_close=close,
        )
    )


def choose_target(app: RecoveryApp, repo: str, image: ImageInfo) -> None:
    app.push_screen(
        DiskPickerScreen(
            ("Restore", image.name, "Target disk"),
            f"Pick the disk to restore {image.name} onto. Everything on it will be replaced.",
            lambda d: show_restore_plan(app, repo, image, d),
            refuse=refuse_restore_target,
        )
    )


def show_restore_plan(
    app: RecoveryApp, repo: str, image: ImageInfo, disk: Disk, partitions: list[int] | None = None
) -> None:
    engine: AppEngine = app.backends.engine
    header = [
        f"{'Clonezilla image' if image.clonezilla else 'Image'}: {image.name} from "
        f"{image.source_path} ({human_size(image.source_size)}), "
        f"saved {image.created[:16].replace('T', ' ')} UTC",
        "Target: " + disk_line(disk),
        "Now on the target:",
        *current_partitions(disk),
    ]
    if partitions is None:
        header.append("Everything now on the target will be replaced.")
    else:
        chosen = ", ".join(map(str, partitions))
        header.append(
            f"Only partition(s) {chosen} of the image are written, into the target's partitions "
            "of the same numbers; the others stay as they are."
        )
    header.append("")

    def make_plan() -> ShownPlan:
        return engine.restore_plan(repo, image.name, disk.path, partitions=partitions)

    def confirm(plan: ShownPlan) -> tuple[str, list[str], str]:
        if partitions is None:
            what = f"Everything on it will be replaced by the image {image.name}."
        else:
            what = f"Its partition(s) {', '.join(map(str, partitions))} will be overwritten."
        lines = [
            disk_line(disk),
            f"holds {len(disk.partitions)} partition(s).",
            "",
            what,
            "This cannot be undone.",
        ]
        return f"Erase {disk.path}?", lines, "Erase and restore"

    def start(plan: ShownPlan) -> None:
        def job(progress: Progress, cancel: CancelToken) -> list[str]:
            return restore_summary(
                image.name, disk.path, engine.restore_run(plan, progress, cancel)
            )

        app.push_screen(
            ProgressScreen(
                ("Restore", "Running"),
                f"Restoring {image.name} onto {disk.path}",
                job,
                what="the restore",
                cancel_note=f"{disk.path} is left unusable until it is restored again.",
                overall_total=plan_total(plan),
            )
        )

    def choose_partitions() -> None:
        rows = [
            PartitionRow(
                p.number,
                f"{p.number:>2}  {human_size(p.size):>9}  {p.fstype or 'raw':<6} "
                f"{(p.label or '')[:16]:<16} {human_size(p.stored):>9} saved",
                partitions is None or p.number in partitions,
            )
            for p in image.partitions
        ]

        def picked(numbers: list[int]) -> None:
            app.pop_screen()  # the picker
            app.pop_screen()  # this plan: a new one replaces it
            whole = len(numbers) == len(image.partitions)
            show_restore_plan(app, repo, image, disk, None if whole else numbers)

        app.push_screen(
            PartitionPickerScreen(
                ("Restore", image.name, "Partitions"),
                "All ticked: the whole disk, with its partition table. Some ticked: only those, "
                "written into the partitions the target already has.",
                f"Image {image.name} ({image.table or 'no table'}):",
                rows,
                picked,
            )
        )

    app.push_screen(
        PlanScreen(
            ("Restore", image.name, "Plan"),
            header,
            make_plan,
            "Restore...",
            start,
            confirm=confirm,
            # A Clonezilla image is restored as a whole disk: no choice of partitions.
            extra=(
                ("Partitions...", choose_partitions)
                if len(image.partitions) > 1 and not image.clonezilla
                else None
            ),
        )
    )


def restore_summary(name: str, target: str, result: RestoreResult) -> list[str]:
    lines = [f"{name} restored onto {target}: {human_size(result.written_bytes)} written."]
    lines += result.checks
    if not result.ok:
        lines.append("A CHECK FAILED: see the lines above before you use this disk.")
    return lines


# Clone, shell, power -------------------------------------------------------------------------


def start_clone(app: RecoveryApp) -> None:
    def refuse_source(disk: Disk) -> str | None:
        if disk.boot_medium:
            return "This is the stick recovery runs from; pick the disk to copy."
        return None

    guess = system_disk(app.disks)
    app.push_screen(
        DiskPickerScreen(
            ("Clone", "Source disk"),
            "Pick the disk to copy from (Enter). It is only read.",
            lambda d: choose_clone_options(app, d),
            select=guess.path if guess else None,
            refuse=refuse_source,
        )
    )


def choose_clone_options(app: RecoveryApp, source: Disk) -> None:
    def done(system: bool, new_ids: bool) -> None:
        def refuse_target(disk: Disk) -> str | None:
            if disk.path == source.path:
                return "That is the disk being copied; pick another one."
            return refuse_restore_target(disk)

        what = "its system partitions" if system else "all of it"
        app.push_screen(
            DiskPickerScreen(
                ("Clone", "Target disk"),
                f"Pick the disk to copy {source.path} onto ({what}). Everything on it will be "
                "replaced.",
                lambda d: show_clone_plan(app, source, d, system, new_ids),
                refuse=refuse_target,
            )
        )

    app.push_screen(
        CloneOptionsScreen(("Clone", "What to copy"), f"Copy from: {disk_line(source)}", done)
    )


def show_clone_plan(
    app: RecoveryApp, source: Disk, target: Disk, system: bool, new_ids: bool
) -> None:
    engine: AppEngine = app.backends.engine
    header = [
        "From: " + disk_line(source),
        "Onto: " + disk_line(target),
        "Now on the target:",
        *current_partitions(target),
        "Everything now on the target will be replaced.",
        "",
    ]

    def make_plan() -> ShownPlan:
        return engine.clone_plan(source.path, target.path, system=system, new_ids=new_ids)

    def confirm(plan: ShownPlan) -> tuple[str, list[str], str]:
        lines = [
            disk_line(target),
            f"holds {len(target.partitions)} partition(s).",
            "",
            f"Everything on it will be replaced by a copy of {source.path}.",
            "This cannot be undone.",
        ]
        return f"Erase {target.path}?", lines, "Erase and copy"

    def start(plan: ShownPlan) -> None:
        def job(progress: Progress, cancel: CancelToken) -> list[str]:
            result = engine.clone_run(plan, progress, cancel)
            lines = [
                f"{source.path} copied onto {target.path}: "
                f"{human_size(result.copied_bytes)} copied and checked."
            ]
            lines += result.checks
            if not result.ok:
                lines.append("A CHECK FAILED: see the lines above before you use this disk.")
            return lines

        app.push_screen(
            ProgressScreen(
                ("Clone", "Running"),
                f"Copying {source.path} onto {target.path}",
                job,
                what="the copy",
                cancel_note=f"{target.path} is left unusable until it is written again.",
                overall_total=plan_total(plan),
            )
        )

    app.push_screen(
        PlanScreen(("Clone", "Plan"), header, make_plan, "Copy...", start, confirm=confirm)
    )


def open_shell(app: RecoveryApp) -> None:
    if app.work is not None:
        app.push_screen(InfoScreen("Work is running", ["Wait until it ends, or cancel it first."]))
        return
    try:
        with app.suspend():
            print("A shell. Type 'exit' to return to recovery.", flush=True)
            subprocess.run(app.backends.machine.shell(), check=False)
    except SuspendNotSupported:
        app.push_screen(InfoScreen("No shell here", ["This terminal cannot hand over to a shell."]))


def power(app: RecoveryApp, *, reboot: bool) -> None:
    what = "Reboot" if reboot else "Power off"
    if app.work is not None:
        app.push_screen(InfoScreen("Work is running", ["Wait until it ends, or cancel it first."]))
        return

    def answered(yes: bool | None) -> None:
        if not yes:
            return
        try:
            if reboot:
                app.backends.machine.reboot()
            else:
                app.backends.machine.power_off()
        except Exception as e:
            app.show_error(e)

    lines = ["Backups and restores that finished are complete and safe."]
    if reboot:
        lines.append("Take the stick out if the machine should start from its own disk.")
    app.push_screen(ConfirmScreen(f"{what} now?", lines, confirm=what), answered)


# File Backup ---------------------------------------------------------------------------------


@dataclass
class FileBackupChoice:
    partition: str = ""
    folders: list[str] = field(default_factory=list)
    excludes: list[str] = field(default_factory=list)
    preset: bool = False
    repo: str | None = None


def start_file_backup(app: RecoveryApp) -> None:
    from recovery.tui.screens.files import FileSourceScreen

    def picked(partition: str, role: str) -> None:
        choose_folders(app, FileBackupChoice(partition=partition))

    app.push_screen(FileSourceScreen(("File Backup", "Partition"), picked))


def choose_folders(app: RecoveryApp, choice: FileBackupChoice) -> None:
    from recovery.tui.screens.files import FolderChoice, FolderTreeScreen

    engine: AppEngine = app.backends.engine

    def picked(folders: FolderChoice) -> None:
        choose_file_location(
            app,
            replace(
                choice, folders=folders.folders, excludes=folders.excludes, preset=folders.preset
            ),
        )

    app.push_screen(
        FolderTreeScreen(
            ("File Backup", "Folders"),
            choice.partition,
            lambda: engine.source_folders(choice.partition),
            picked,
        )
    )


def choose_file_location(app: RecoveryApp, choice: FileBackupChoice) -> None:
    def picked(repo: str) -> None:
        show_file_backup_plan(app, replace(choice, repo=repo))

    app.push_screen(
        LocationScreen(
            ("File Backup", "Location"),
            picked,
            for_backup=True,
            exclude=frozenset({choice.partition}),
        )
    )


def file_sources(choice: FileBackupChoice) -> list[str]:
    """The engine's SOURCEs: the partition alone for the preset or everything, else one
    ``partition:/folder`` per ticked folder."""
    if choice.preset or choice.folders == ["/"]:
        return [choice.partition]
    return [f"{choice.partition}:{f}" for f in choice.folders]


def show_file_backup_plan(app: RecoveryApp, choice: FileBackupChoice) -> None:
    engine: AppEngine = app.backends.engine
    assert choice.repo is not None
    repo = choice.repo
    header = [
        f"Source: {choice.partition} (only read)",
        "Folders: " + ("the user-data preset" if choice.preset else ", ".join(choice.folders)),
        "Leave out: " + (" ".join(choice.excludes) or "(nothing more)"),
        f"Into: {repo}",
        "",
    ]

    def make_plan() -> ShownPlan:
        return engine.file_backup_plan(
            file_sources(choice),
            repo,
            excludes=list(choice.excludes),
            preset="user-data" if choice.preset else None,
        )

    def start(plan: ShownPlan) -> None:
        from recovery.engine.plans import FileBackupPlan

        assert isinstance(plan, FileBackupPlan)

        def job(progress: Progress, cancel: CancelToken) -> list[str]:
            result = engine.file_backup_run(plan, progress, cancel)
            lines = [
                f"File image {result.image.name} saved: {result.files} file(s), "
                f"{human_size(result.total_bytes)}; {human_size(result.new_bytes)} new in the "
                "backup location.",
                *result.notes,
            ]
            if result.skipped:
                lines.append(f"{len(result.skipped)} file(s) could not be read and were left out:")
                lines += [f"  {s}" for s in result.skipped]
            return lines

        app.push_screen(
            ProgressScreen(
                ("File Backup", "Running"),
                f"Saving files of {choice.partition} into {repo}",
                job,
                what="the file backup",
                cancel_note="The backup location stays valid; this file image is not kept.",
                overall_total=plan.total_bytes,
            )
        )

    app.push_screen(PlanScreen(("File Backup", "Plan"), header, make_plan, "Start backup", start))
