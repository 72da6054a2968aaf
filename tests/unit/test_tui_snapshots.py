"""Snapshot tests: every screen at 80x25 (the Linux console) and 120x40, on fixed fake data.

The clock is frozen (FrozenClock), cursors do not blink (``cursor_blink=False``), and every
worker has finished before the picture is taken, so the pictures are the same on every run.
Update them after an intended change with ``pytest tests/unit/test_tui_snapshots.py
--snapshot-update`` and look at the SVGs in __snapshots__/ before committing them.
"""

from __future__ import annotations

from typing import Any

import pytest
from textual.pilot import Pilot

from recovery.errors import Refused
from recovery.tui.app import RecoveryApp
from recovery.tui.progress import ProgressSnapshot
from recovery.tui.screens.progress import ProgressScreen
from tests.pilot import settle
from tests.unit.tui_fakes import (
    CLONEZILLA_IMAGE,
    IMAGES,
    FakeEngine,
    FakeNetwork,
    FakePlan,
    fake_backends,
)

SIZES = [pytest.param((80, 25), id="80x25"), pytest.param((120, 40), id="120x40")]
MiB = 1024**2


def make_app(console: bool = False, **backends: Any) -> RecoveryApp:
    return RecoveryApp(fake_backends(**backends), console=console, cursor_blink=False)


def keys(*pressed: str) -> Any:
    """A run_before that presses keys one at a time, letting workers finish after each."""

    async def run(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        for key in pressed:
            await pilot.press(key)
            await settle(pilot)

    return run


# The home screen and the pickers ---------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_home(snap_compare: Any, size: tuple[int, int]) -> None:
    assert snap_compare(make_app(), terminal_size=size, run_before=keys())


def test_home_linux_console(snap_compare: Any) -> None:
    """TERM=linux: the terminal's own 16 colours, no glyphs outside the console font."""
    assert snap_compare(make_app(console=True), terminal_size=(80, 25), run_before=keys())


@pytest.mark.parametrize("size", SIZES)
def test_network_screen(snap_compare: Any, size: tuple[int, int]) -> None:
    """The address in the title bar, and the Network screen's interfaces."""
    app = make_app(network=FakeNetwork())
    assert snap_compare(app, terminal_size=size, run_before=keys("n"))


def test_network_screen_linux_console(snap_compare: Any) -> None:
    app = make_app(console=True, network=FakeNetwork())
    assert snap_compare(app, terminal_size=(80, 25), run_before=keys("n"))


@pytest.mark.parametrize("size", SIZES)
def test_static_address_form(snap_compare: Any, size: tuple[int, int]) -> None:
    """Network > s: a static address for the highlighted interface, two fields wrong."""

    async def run(pilot: Pilot[Any]) -> None:
        await keys("n", "s")(pilot)
        await pilot.press("tab", *"10.0.2.50", "tab", "tab", *"10.0.2.3 10.0.2.x", "enter")
        await settle(pilot)

    assert snap_compare(make_app(network=FakeNetwork()), terminal_size=size, run_before=run)


def test_static_address_form_linux_console(snap_compare: Any) -> None:
    app = make_app(console=True, network=FakeNetwork())
    assert snap_compare(app, terminal_size=(80, 25), run_before=keys("n", "s"))


@pytest.mark.parametrize("size", SIZES)
def test_network_location_form_sftp(snap_compare: Any, size: tuple[int, int]) -> None:
    """Backup > location > n, SFTP chosen: server, folder, user, password, key file."""
    run = keys("2", "enter", "enter", "n", "shift+tab", "right", "enter", "tab")
    assert snap_compare(make_app(), terminal_size=size, run_before=run)


def test_network_location_form_s3_linux_console(snap_compare: Any) -> None:
    run = keys("3", "n", "shift+tab", "right", "right", "enter", "tab")
    assert snap_compare(make_app(console=True), terminal_size=(80, 25), run_before=run)


class HostKeyEngine(FakeEngine):
    """Listing a location meets an SSH server not seen before (as the SFTP backend does)."""

    def list_images(self, repo: str) -> Any:
        from recovery.repository import secrets

        fingerprint = "SHA256:q0Xb5mTzJ6Hc3Lr9fWd1pVnK8sYgA2eU7iO4tRjMhEw"
        if not secrets.current().accept_host_key("[nas.example]:2222", "ssh-ed25519", fingerprint):
            raise Refused("refused")
        return super().list_images(repo)


@pytest.mark.parametrize("size", SIZES)
def test_network_host_key_question(snap_compare: Any, size: tuple[int, int]) -> None:
    async def run(pilot: Pilot[Any]) -> None:
        await keys("3", "n", "shift+tab", "right", "enter", "tab")(pilot)
        for text in ("nas.example:2222", "/srv/backups", "alice"):
            await pilot.press(*text, "tab")
        await pilot.press("enter")  # the worker waits for the answer: do not wait for it
        for _ in range(200):
            if type(pilot.app.screen).__name__ == "ConfirmScreen":
                break
            await pilot.pause(0.05)
        await pilot.pause()

    app = make_app(engine=HostKeyEngine())
    assert snap_compare(app, terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_disk_backup_disk_picker(snap_compare: Any, size: tuple[int, int]) -> None:
    assert snap_compare(make_app(), terminal_size=size, run_before=keys("2"))


@pytest.mark.parametrize("size", SIZES)
def test_system_backup_partitions_preselected(snap_compare: Any, size: tuple[int, int]) -> None:
    assert snap_compare(make_app(), terminal_size=size, run_before=keys("1"))


@pytest.mark.parametrize("size", SIZES)
def test_backup_location_picker(snap_compare: Any, size: tuple[int, int]) -> None:
    assert snap_compare(make_app(), terminal_size=size, run_before=keys("2", "enter", "enter"))


@pytest.mark.parametrize("size", SIZES)
def test_restore_location_searched(snap_compare: Any, size: tuple[int, int]) -> None:
    assert snap_compare(make_app(), terminal_size=size, run_before=keys("3", "down", "enter"))


@pytest.mark.parametrize("size", SIZES)
def test_backup_options(snap_compare: Any, size: tuple[int, int]) -> None:
    run = keys("2", "enter", "enter", "down", "enter")
    assert snap_compare(make_app(), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_backup_plan(snap_compare: Any, size: tuple[int, int]) -> None:
    run = keys("2", "enter", "enter", "down", "enter", "enter")
    assert snap_compare(make_app(), terminal_size=size, run_before=run)


# Progress ---------------------------------------------------------------------------------------


def running(console: bool = False) -> Any:
    """The progress screen halfway through a step, fed fixed snapshots (no worker, no clock)."""

    async def run(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        screen = ProgressScreen(
            ("Disk Backup", "Running"),
            "Saving the whole disk /dev/nvme0n1 into /run/recovery/mnt/sdc1/recovery-backups",
            lambda progress, cancel: [],
            autostart=False,
        )
        await pilot.app.push_screen(screen)
        rates = [80, 120, 160, 150, 90, 200, 210, 180, 170, 190, 200, 205]
        done = 0
        for second, rate in enumerate(rates):
            done += rate * MiB
            logs = ("p1: 31.0 MiB used of 100 MiB",) if second == 1 else ()
            screen.show_snapshot(
                ProgressSnapshot(
                    step="backup /dev/nvme0n1p3 (ntfs)",
                    step_done=done,
                    step_total=61 * 1024 * MiB,
                    done=done + 31 * MiB,
                    at=1000.0 + second,
                    logs=logs,
                    steps=3,
                )
            )
        await pilot.pause()

    return run


@pytest.mark.parametrize("size", SIZES)
def test_progress_running(snap_compare: Any, size: tuple[int, int]) -> None:
    assert snap_compare(make_app(), terminal_size=size, run_before=running())


def test_progress_running_linux_console(snap_compare: Any) -> None:
    assert snap_compare(make_app(console=True), terminal_size=(80, 25), run_before=running())


@pytest.mark.parametrize("size", SIZES)
def test_progress_finished(snap_compare: Any, size: tuple[int, int]) -> None:
    run = keys("2", "enter", "enter", "down", "enter", "enter", "enter")
    assert snap_compare(make_app(), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_progress_cancel_confirmation(snap_compare: Any, size: tuple[int, int]) -> None:
    async def run(pilot: Pilot[Any]) -> None:
        await running()(pilot)
        await pilot.press("escape")
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=size, run_before=run)


# Backups, restore, errors, clone -------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_backups_screen(snap_compare: Any, size: tuple[int, int]) -> None:
    run = keys("5", "down", "enter", "enter")
    assert snap_compare(make_app(), terminal_size=size, run_before=run)


def test_backups_screen_with_a_clonezilla_image(snap_compare: Any) -> None:
    """The Clonezilla image highlighted: its mark, its note, no Open or Remove key."""
    engine = FakeEngine(images=[*IMAGES, CLONEZILLA_IMAGE])
    run = keys("5", "down", "enter", "enter")
    assert snap_compare(make_app(engine=engine), terminal_size=(80, 25), run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_restore_target_picker(snap_compare: Any, size: tuple[int, int]) -> None:
    run = keys("3", "down", "enter", "enter", "enter")
    assert snap_compare(make_app(), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_restore_plan_confirmation(snap_compare: Any, size: tuple[int, int]) -> None:
    run = keys("3", "down", "enter", "enter", "enter", "down", "enter", "enter")
    assert snap_compare(make_app(), terminal_size=size, run_before=run)


def test_restore_plan_delta(snap_compare: Any) -> None:
    """Onto a disk that holds an earlier state: what already matches, what will be written."""
    run = keys("3", "down", "enter", "enter", "enter", "down", "enter")
    app = make_app(engine=FakeEngine(delta_restore=True))
    assert snap_compare(app, terminal_size=(80, 25), run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_error_dialog(snap_compare: Any, size: tuple[int, int]) -> None:
    engine = FakeEngine(
        fail={
            "backup_plan": Refused(
                "the backup location /mnt/x is on /dev/nvme0n1, the disk being backed up: "
                "choose a location on another disk"
            )
        }
    )
    run = keys("2", "enter", "enter", "down", "enter", "enter")
    assert snap_compare(make_app(engine=engine), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_clone_options(snap_compare: Any, size: tuple[int, int]) -> None:
    assert snap_compare(make_app(), terminal_size=size, run_before=keys("4", "enter", "space"))


@pytest.mark.parametrize("size", SIZES)
def test_clone_plan_confirmation(snap_compare: Any, size: tuple[int, int]) -> None:
    run = keys("4", "enter", "space", "f2", "down", "enter", "enter")
    assert snap_compare(make_app(), terminal_size=size, run_before=run)


def shrink_plan_lines() -> list[str]:
    """A real restore plan's lines (engine/plans.py) for a Windows disk restored onto a smaller
    one: C: shrinks, the recovery partition moves, the rest keep their size."""
    from recovery.core.table import Entry, Layout, Table
    from recovery.engine.plans import PartitionWrite, RestorePlan
    from recovery.engine.targets import Target
    from recovery.repository.maps import StreamInfo

    gib = 1 << 30
    table = Table("gpt", "G", 512, 2048, None, (Entry(1, 2048, 204800, "EF"),))
    layout = Layout(table, (), None, False, shrunk=3)
    sizes = [
        (1, "vfat", 1 << 20, 100 * MiB, 100 * MiB, 31 * MiB),
        (2, None, 101 * MiB, 16 * MiB, 16 * MiB, 0),
        (3, "ntfs", 117 * MiB, 1862 * gib, 930 * gib, 61 * gib),
        (4, "ntfs", 1862 * gib + 117 * MiB, 750 * MiB, 750 * MiB, 500 * MiB),
    ]
    writes = []
    for number, fstype, start, old, new, data in sizes:
        new_start = start if number < 4 else 930 * gib + 117 * MiB
        raw = {"start": start, "number": number, "fstype": fstype, "data_bytes": data}
        stream = StreamInfo(f"p{number}", old, 1, (), "used-blocks", raw)
        writes.append(PartitionWrite(stream, number, new_start, new, old, fstype))
    identity = {"model": "WDC WD10EZEX-08WN4A0", "serial": "WD-WCC6Y1234567"}
    target = Target("/dev/sda", 932 * gib, 512, identity)
    plan = RestorePlan(
        "/mnt/backups", "before-update", target, {}, layout, tuple(writes), None, 4 << 20
    )
    return plan.describe()


def test_restore_plan_shrinks_onto_a_smaller_disk(snap_compare: Any) -> None:
    """Issue 15: the plan screen says, per partition, which shrinks, which moves."""
    lines = shrink_plan_lines()
    assert any("shrunk from 1.8 TiB" in line for line in lines), lines

    class ShrinkEngine(FakeEngine):
        def restore_plan(
            self, repo: str, name: str, target: str, partitions: list[int] | None = None
        ) -> FakePlan:
            plan = super().restore_plan(repo, name, target, partitions)
            return FakePlan(plan.kind, plan.args, lines)

    run = keys("3", "down", "enter", "enter", "enter", "down", "enter")
    app = make_app(engine=ShrinkEngine())
    assert snap_compare(app, terminal_size=(80, 25), run_before=run)
