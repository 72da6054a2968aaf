"""The TUI driven with Pilot over fake backends: what each flow asks the engine to do, that
confirmations guard destructive work, that errors land in a dialog and the app lives on, that
hot-plug updates the disk table, that quitting asks while work runs, and that on the Linux
console no screen draws a glyph the console font lacks."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Button, RichLog, SelectionList

from recovery.devices.model import Disk
from recovery.errors import Refused
from recovery.tui.app import RecoveryApp
from recovery.tui.screens.backups import BackupsScreen
from recovery.tui.screens.dialogs import ConfirmScreen, ErrorScreen
from recovery.tui.screens.disks import DiskPickerScreen
from recovery.tui.screens.home import HomeScreen
from recovery.tui.screens.partitions import PartitionPickerScreen
from recovery.tui.screens.progress import ProgressScreen
from recovery.tui.widgets.disk_table import DiskTable
from tests.pilot import press, settle
from tests.unit.tui_fakes import (
    CLONEZILLA_IMAGE,
    IMAGES,
    NVME,
    T7,
    FakeDisks,
    FakeEngine,
    FakeMachine,
    fake_backends,
    screen_text,
)

Scenario = Callable[[Pilot[Any]], Awaitable[None]]


def drive(
    scenario: Scenario, *, console: bool = False, size: tuple[int, int] = (80, 25), **kw: Any
) -> RecoveryApp:
    app = RecoveryApp(fake_backends(**kw), console=console, cursor_blink=False)

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            await scenario(pilot)

    asyncio.run(main())
    return app


def engine_calls(app: RecoveryApp) -> list[str]:
    return [name for name, _ in app.backends.engine.calls]


# Backups -----------------------------------------------------------------------------------------


def test_disk_backup_runs_plan_backup_and_verify_with_the_choices() -> None:
    seen: dict[str, Any] = {}

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "2", "enter", "enter")  # NVME, all partitions
        await press(pilot, "down", "enter")  # T7: mounted read-write, its repository used
        await pilot.click("#name")
        await press(pilot, *"before-update", "tab", "backspace", "7", "enter")
        await press(pilot, "enter")  # the plan's Start button has focus
        screen = pilot.app.screen
        assert isinstance(screen, ProgressScreen)
        seen["outcome"] = screen.outcome
        seen["log"] = "\n".join(str(line.text) for line in screen.query_one(RichLog).lines)
        seen["text"] = screen_text(pilot.app)

    app = drive(scenario)
    engine = app.backends.engine
    plan_args = engine.calls[0][1]
    assert engine_calls(app) == ["backup_plan", "backup_run", "verify"]
    repo = "/run/recovery/mnt/sdc1/recovery-backups"
    assert plan_args == (["/dev/nvme0n1"], repo, "before-update", 7, False)
    assert ("mount", ("/dev/sdc1", True)) in app.backends.locations.calls
    assert seen["outcome"] == "done"
    assert "p1: 31 MiB used of 100 MiB" in seen["log"]  # a log line through ProgressUpdate
    assert "Verified" in seen["text"]


def test_system_backup_preselects_system_partitions_and_passes_the_choice() -> None:
    async def scenario(pilot: Pilot[Any]) -> None:
        screen = pilot.app.screen
        await press(pilot, "1")
        screen = pilot.app.screen
        assert isinstance(screen, PartitionPickerScreen)
        assert sorted(screen.query_one(SelectionList).selected) == [1, 2, 3, 4]
        await press(pilot, "down", "space", "enter")  # leave out the MSR
        await press(pilot, "enter", "enter")  # sda1 as location, default options: the plan
        assert "read /dev/nvme0n1p1" in screen_text(pilot.app)

    app = drive(scenario)
    name, args = app.backends.engine.calls[0]
    assert name == "backup_plan"
    assert args[0] == ["/dev/nvme0n1p1", "/dev/nvme0n1p3", "/dev/nvme0n1p4"]
    assert args[4] is False  # the person's choice is passed as it is, not recomputed


def test_location_picker_never_offers_partitions_of_the_source_disk() -> None:
    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "2", "enter", "enter")
        text = screen_text(pilot.app)
        assert "/dev/sdc1" in text and "/dev/nvme0n1p3" not in text

    drive(scenario)


def test_typed_folder_is_used_as_the_backup_location() -> None:
    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "2", "enter", "enter", "ctrl+t", *"/srv/backups", "enter")
        await press(pilot, "enter", "enter")

    app = drive(scenario)
    assert app.backends.engine.calls[0][1][1] == "/srv/backups"


def test_cancelling_a_backup_asks_then_stops_it() -> None:
    release = threading.Event()
    entered = threading.Event()

    def gate() -> None:
        entered.set()
        release.wait(10)

    engine = FakeEngine(gate=gate)

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "2", "enter", "enter", "down", "enter", "enter")
        await pilot.press("enter")  # start
        await pilot.pause()
        assert await asyncio.to_thread(entered.wait, 10)
        screen = pilot.app.screen
        assert isinstance(screen, ProgressScreen)
        assert pilot.app.work is screen.token
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(pilot.app.screen, ConfirmScreen)
        await pilot.press("enter")  # "Keep going" has the focus
        await pilot.pause()
        assert not screen.token.cancelled
        await pilot.press("escape", "tab", "enter")  # now "Stop it"
        await pilot.pause()
        assert screen.token.cancelled
        release.set()
        await settle(pilot)
        assert screen.outcome == "cancelled"
        assert pilot.app.work is None

    app = drive(scenario, engine=engine)
    assert "verify" not in engine_calls(app)


def test_search_all_finds_backups_and_unmounts_what_was_only_searched() -> None:
    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "3", "s")
        text = screen_text(pilot.app)
        assert "1 backup location(s) found" in text
        assert "Windows is hibernated" in text  # one partition failing does not stop the rest
        await press(pilot, "enter")  # the cursor is on the repository found
        assert isinstance(pilot.app.screen, BackupsScreen)

    app = drive(scenario)
    calls = app.backends.locations.calls
    assert ("unmount", "/dev/sda1") in calls  # searched, holds no backups: unmounted again
    assert ("unmount", "/dev/sdc1") not in calls  # holds the chosen repository


# Restore, backups screen -----------------------------------------------------------------------


def test_restore_asks_with_cancel_focused_and_runs_only_when_confirmed() -> None:
    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "3", "down", "enter", "enter", "enter", "down", "enter")
        await press(pilot, "enter")  # "Restore..." on the plan screen
        assert isinstance(pilot.app.screen, ConfirmScreen)
        assert pilot.app.focused is not None and pilot.app.focused.id == "cancel"
        await press(pilot, "enter")  # Enter on Cancel: nothing happens
        assert "restore_run" not in engine_calls(pilot.app)  # type: ignore[arg-type]
        await press(pilot, "enter", "tab", "enter")
        screen = pilot.app.screen
        assert isinstance(screen, ProgressScreen)
        assert screen.outcome == "done"

    app = drive(scenario)
    calls = app.backends.engine.calls
    assert next(c for c in calls if c[0] == "restore_plan")[1] == (
        "/run/recovery/mnt/sdc1/recovery-backups",
        "before-update",
        "/dev/sda",
        None,
    )
    assert engine_calls(app).count("restore_run") == 1


def test_restore_of_chosen_partitions_plans_again_with_them() -> None:
    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "3", "down", "enter", "enter", "enter", "down", "enter")
        await press(pilot, "p")  # choose partitions
        assert isinstance(pilot.app.screen, PartitionPickerScreen)
        await press(pilot, "n", "down", "down", "space", "enter")  # only partition 3
        assert "Only partition(s) 3 of the image" in screen_text(pilot.app)
        await press(pilot, "enter")
        assert "partition(s) 3 will be overwritten" in screen_text(pilot.app)
        await press(pilot, "escape", "escape")  # no, and back to the target picker
        assert isinstance(pilot.app.screen, DiskPickerScreen)

    app = drive(scenario)
    plans = [args for name, args in app.backends.engine.calls if name == "restore_plan"]
    assert [p[3] for p in plans] == [None, [3]]
    assert "restore_run" not in engine_calls(app)


def test_the_boot_medium_cannot_be_a_restore_target() -> None:
    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "3", "down", "enter", "enter", "enter", "down", "down", "enter")
        assert "the stick recovery runs from" in screen_text(pilot.app)

    app = drive(scenario)
    assert "restore_plan" not in engine_calls(app)


def test_backups_screen_verify_and_remove() -> None:
    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "5", "down", "enter", "enter")
        assert isinstance(pilot.app.screen, BackupsScreen)
        await press(pilot, "v")
        assert isinstance(pilot.app.screen, ProgressScreen)
        await press(pilot, "enter")  # Done: back to the list
        assert isinstance(pilot.app.screen, BackupsScreen)
        await press(pilot, "x")
        assert isinstance(pilot.app.screen, ConfirmScreen)
        await press(pilot, "tab", "enter")
        assert "Removed" in screen_text(pilot.app)
        await press(pilot, "enter")
        screen = pilot.app.screen
        assert isinstance(screen, BackupsScreen)
        assert [i.name for i in screen.images] == ["nvme0n1-2024-05-01", "data-disk"]

    app = drive(scenario)
    calls = app.backends.engine.calls
    assert ("verify", ("/run/recovery/mnt/sdc1/recovery-backups", "before-update")) in calls
    assert ("remove", ("/run/recovery/mnt/sdc1/recovery-backups", "before-update")) in calls


def test_clonezilla_image_is_marked_and_restores_through_the_same_screens() -> None:
    """Issue 17: a Clonezilla image in the list is marked; Open and Remove are not offered for
    it; Enter restores it through the same target picker, plan (whole disk: no partition
    choice) and progress screens as our own images."""
    seen: dict[str, Any] = {}

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "5", "down", "enter", "enter")
        screen = pilot.app.screen
        assert isinstance(screen, BackupsScreen)
        assert screen.selected == CLONEZILLA_IMAGE  # the newest, first in the list
        text = screen_text(pilot.app)
        assert "[CZ] 2026-11-26-img" in text and "Clonezilla" in text
        assert "Made by Clonezilla" in text
        assert screen.check_action("remove", ()) is False
        assert screen.check_action("open", ()) is False
        await press(pilot, "x", "o")  # neither does anything for this image
        assert pilot.app.screen is screen
        await press(pilot, "down")  # one of ours: both come back
        assert screen.check_action("remove", ()) and screen.check_action("open", ())
        await press(pilot, "up", "enter")
        assert isinstance(pilot.app.screen, DiskPickerScreen)
        await press(pilot, "down", "enter")  # /dev/sda
        seen["plan"] = screen_text(pilot.app)
        await press(pilot, "p")  # no partition choice for a Clonezilla image
        assert not isinstance(pilot.app.screen, PartitionPickerScreen)
        await press(pilot, "enter", "tab", "enter")
        progress = pilot.app.screen
        assert isinstance(progress, ProgressScreen)
        assert progress.outcome == "done"

    app = drive(scenario, engine=FakeEngine(images=[*IMAGES, CLONEZILLA_IMAGE]))
    assert "Clonezilla image: 2026-11-26-img" in seen["plan"]
    assert "Partitions..." not in seen["plan"]
    plans = [args for name, args in app.backends.engine.calls if name == "restore_plan"]
    assert plans == [
        ("/run/recovery/mnt/sdc1/recovery-backups", "2026-11-26-img", "/dev/sda", None)
    ]
    assert engine_calls(app).count("restore_run") == 1
    assert "remove" not in engine_calls(app)


def test_clone_system_only_onto_another_disk() -> None:
    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "4", "enter")  # the system disk has the cursor
        await press(pilot, "space", "f2")  # only the system
        await press(pilot, "enter")  # the source itself is refused as target
        assert "being copied" in screen_text(pilot.app)
        await press(pilot, "enter", "down", "enter")  # /dev/sda
        assert "Clone the system partitions of /dev/nvme0n1" in screen_text(pilot.app)
        await press(pilot, "enter")
        assert isinstance(pilot.app.screen, ConfirmScreen)
        await press(pilot, "tab", "enter")
        screen = pilot.app.screen
        assert isinstance(screen, ProgressScreen) and screen.outcome == "done"
        assert "copied and checked" in screen_text(pilot.app)

    app = drive(scenario)
    calls = app.backends.engine.calls
    assert ("clone_plan", ("/dev/nvme0n1", "/dev/sda", True, False)) in calls
    assert engine_calls(app).count("clone_run") == 1


# Errors ------------------------------------------------------------------------------------------


def test_engine_refusal_shows_its_message_and_the_app_goes_on() -> None:
    message = "the target /dev/sda has a mounted partition: unmount it first"
    engine = FakeEngine(fail={"restore_plan": Refused(message)})

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "3", "down", "enter", "enter", "enter", "down", "enter")
        assert isinstance(pilot.app.screen, ErrorScreen)
        assert message in screen_text(pilot.app)
        await press(pilot, "enter")
        assert pilot.app.screen.query_one("#start", Button).disabled  # no plan, no way to start
        await press(pilot, "escape", "escape", "escape", "escape", "escape")
        assert isinstance(pilot.app.screen, HomeScreen)

    drive(scenario, engine=engine)


def test_unexpected_exception_in_a_worker_is_a_dialog_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recovery.tui.screens import dialogs

    log = tmp_path / "errors.log"  # not the machine's shared file in /tmp
    monkeypatch.setattr(dialogs, "ERROR_LOG", log)
    engine = FakeEngine(fail={"list_images": ZeroDivisionError("division by zero")})

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "5", "down", "enter", "enter")
        assert isinstance(pilot.app.screen, ErrorScreen)
        text = screen_text(pilot.app)
        assert "Unexpected error" in text and "ZeroDivisionError" in text
        assert "ZeroDivisionError" in log.read_text()
        await press(pilot, "escape", "escape")
        assert pilot.app.is_running

    drive(scenario, engine=engine)


# Disks, quitting, power --------------------------------------------------------------------------


def test_disk_table_follows_hot_plug_and_keeps_the_cursor() -> None:
    disks = FakeDisks()
    new = Disk(path="/dev/sdd", size=64 * 1024**3, model="Kingston DataTraveler", transport="usb")

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "2", "down")
        table = pilot.app.screen.query_one(DiskTable)
        assert table.row_count == 4 and table.selected_path == "/dev/sda"
        disks.plug([*disks.disks, new])
        await settle(pilot)
        assert table.row_count == 5 and table.selected_path == "/dev/sda"
        assert "Kingston" in screen_text(pilot.app)
        disks.plug([d for d in disks.disks if d.path not in ("/dev/sdd", T7.path)])
        await settle(pilot)
        assert table.row_count == 3
        assert "Kingston" not in screen_text(pilot.app)

    drive(scenario, disks=disks)


def test_system_backup_without_a_recognised_system_disk_asks_for_one() -> None:
    disks = FakeDisks([replace(NVME, partitions=()), T7])

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "1")
        assert isinstance(pilot.app.screen, DiskPickerScreen)
        assert "No disk with Windows or Linux" in screen_text(pilot.app)

    drive(scenario, disks=disks)


def test_home_says_when_not_running_as_root() -> None:
    async def scenario(pilot: Pilot[Any]) -> None:
        assert "Not running as root" in screen_text(pilot.app)

    drive(scenario, privileged=False)


def test_q_quits_at_once_when_idle() -> None:
    async def scenario(pilot: Pilot[Any]) -> None:
        await pilot.press("q")
        await pilot.pause()

    app = drive(scenario)
    assert app.return_code == 0 and not app.is_running


def test_quit_while_work_runs_asks_and_cancels_the_work() -> None:
    release = threading.Event()
    engine = FakeEngine(gate=lambda: release.wait(10))

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "2", "enter", "enter", "down", "enter", "enter")
        await pilot.press("enter")
        await pilot.pause()
        token = pilot.app.work
        assert token is not None
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert isinstance(pilot.app.screen, ConfirmScreen)
        await pilot.press("enter")  # Keep going
        await pilot.pause()
        assert pilot.app.is_running and not token.cancelled
        await pilot.press("ctrl+q", "tab", "enter")
        await pilot.pause()
        assert token.cancelled
        release.set()

    app = drive(scenario, engine=engine)
    assert app.return_code == 0


def test_power_off_and_reboot_ask_first() -> None:
    machine = FakeMachine()

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "p")
        assert isinstance(pilot.app.screen, ConfirmScreen)
        await press(pilot, "enter")  # Cancel
        await press(pilot, "r", "tab", "enter")

    drive(scenario, machine=machine)
    assert machine.calls == ["reboot"]


# The Linux console -------------------------------------------------------------------------------

# What the Linux console's fonts draw besides ASCII and Latin-1: light and double box drawing,
# the half and full blocks and the shades (CP437's set; Debian's Lat15 and Terminus have them).
CONSOLE_GLYPHS = set("─│┌┐└┘├┤┬┴┼═║╔╗╚╝╠╣╦╩╬█▄▀▌▐░▒▓■")


def unsafe_glyphs(text: str) -> set[str]:
    return {c for c in text if ord(c) > 0xFF and c not in CONSOLE_GLYPHS}


def test_every_screen_draws_only_console_glyphs_on_the_linux_console() -> None:
    screens: dict[str, str] = {}

    async def look(pilot: Pilot[Any], name: str, *keys: str) -> None:
        await press(pilot, *keys)
        screens[name] = screen_text(pilot.app)

    async def scenario(pilot: Pilot[Any]) -> None:
        await look(pilot, "home")
        await look(pilot, "disks", "2")
        await look(pilot, "partitions", "enter")
        await look(pilot, "location", "enter")
        await look(pilot, "options", "down", "enter")
        await look(pilot, "plan", "enter")
        await look(pilot, "progress", "enter")
        await look(pilot, "home again", "enter")
        await look(pilot, "system partitions", "1")
        await look(pilot, "restore location", "escape", "3", "down", "enter")
        await look(pilot, "images", "enter")
        await look(pilot, "targets", "enter")
        await look(pilot, "restore plan", "down", "enter")
        await look(pilot, "confirm", "enter")
        await look(pilot, "clone", "escape", "escape", "escape", "escape", "escape", "escape", "4")
        await look(pilot, "power", "escape", "p")

    drive(scenario, console=True)
    assert len(screens) == 16
    bad = {name: unsafe_glyphs(text) for name, text in screens.items() if unsafe_glyphs(text)}
    assert not bad, bad


def test_modern_terminal_draws_richer_glyphs() -> None:
    """The check above can fail: outside the console, Textual's own glyphs are used."""
    texts: list[str] = []

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "2", "enter")
        texts.append(screen_text(pilot.app))

    drive(scenario, console=False)
    assert unsafe_glyphs(texts[0])


def test_delta_restore_plan_says_what_matches_and_what_is_written() -> None:
    """Issue 15: onto a disk holding an earlier state of the image's disk, the plan screen says
    how much already matches and how much will be written, before anything is confirmed."""

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "3", "down", "enter", "enter", "enter", "down", "enter")
        text = screen_text(pilot.app)
        assert "delta: 59.2 GiB already match, 1.8 GiB will be written" in text, text
        assert "restore_run" not in engine_calls(pilot.app)  # type: ignore[arg-type]
        await press(pilot, "enter", "tab", "enter")  # Restore..., then confirm
        assert isinstance(pilot.app.screen, ProgressScreen)

    app = drive(scenario, engine=FakeEngine(delta_restore=True))
    assert engine_calls(app).count("restore_run") == 1
