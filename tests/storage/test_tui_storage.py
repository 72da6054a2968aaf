"""The TUI doing real work: a Disk Backup and a Restore driven key by key with Pilot on loop
devices, checked on the devices; and the real ``recovery`` command in tmux at 80x25 with
TERM=linux.

The app runs with its production backends (udev disk listing, the engine, mount(8)), except that
the disk list is narrowed to the loop devices this test attached, so no keystroke can reach
another disk of the machine.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from recovery.devices.model import Disk
from recovery.engine import api
from recovery.tui.app import RecoveryApp
from recovery.tui.backends import Backends, SystemDisks
from recovery.tui.screens.backups import BackupsScreen
from recovery.tui.screens.dialogs import ConfirmScreen, ErrorScreen, SecretScreen
from recovery.tui.screens.disks import DiskPickerScreen
from recovery.tui.screens.plan import PlanScreen
from recovery.tui.screens.progress import ProgressScreen
from recovery.tui.widgets.disk_table import DiskTable
from tests import loopdev
from tests.pilot import drive as drive_app
from tests.pilot import press
from tests.storage.disks import (
    ext4_digest,
    fat_get,
    make_gpt_system_disk,
    run_recovery,
    sfdisk_dump,
)

MiB = 1 << 20


class OnlyTheseDisks(SystemDisks):
    """The real disk listing and hot-plug watcher, showing only the test's loop devices."""

    def __init__(self, paths: set[str]) -> None:
        self.paths = paths

    def list_disks(self) -> list[Disk]:
        return [d for d in super().list_disks() if d.path in self.paths]


class NoPower:
    def power_off(self) -> None:
        raise AssertionError("the test pressed power off")

    def reboot(self) -> None:
        raise AssertionError("the test pressed reboot")

    def shell(self) -> list[str]:
        return ["true"]


def real_backends(paths: set[str]) -> Backends:
    backends = Backends.system()
    return replace(backends, disks=OnlyTheseDisks(paths), machine=NoPower())


def drive(
    app: RecoveryApp,
    scenario: Callable[[Pilot[Any]], Awaitable[None]],
    size: tuple[int, int] = (100, 32),
) -> None:
    drive_app(app, scenario, size)


async def type_text(pilot: Pilot[Any], text: str) -> None:
    await pilot.press(*text)
    await pilot.pause()


async def until(pilot: Pilot[Any], check: Callable[[], bool], seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if isinstance(pilot.app.screen, ErrorScreen):
            raise AssertionError(f"error dialog: {pilot.app.screen._text}")
        assert time.monotonic() < deadline, f"timed out on {pilot.app.screen}"
        await pilot.pause(0.1)


async def pick_disk(pilot: Pilot[Any], path: str) -> None:
    """Move the cursor of the disk table to ``path`` with the arrow keys, then Enter."""
    screen = pilot.app.screen
    assert isinstance(screen, DiskPickerScreen)
    table = screen.query_one(DiskTable)
    await until(pilot, lambda: table.disk(path) is not None, 30)
    await press(pilot, "home")
    for _ in range(table.row_count):
        if table.selected_path == path:
            break
        await press(pilot, "down")
    assert table.selected_path == path
    await press(pilot, "enter")


def test_disk_backup_through_the_tui(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src, parts = make_gpt_system_disk(loop, 256 * MiB)
    repo = tmp_path / "repo"
    app = RecoveryApp(real_backends({src}), cursor_blink=False)
    outcome: dict[str, Any] = {}

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "2")
        await pick_disk(pilot, src)
        await press(pilot, "enter")  # all partitions ticked: the whole disk
        await press(pilot, "ctrl+t")
        await type_text(pilot, str(repo))
        await press(pilot, "enter")
        await type_text(pilot, "from-tui")  # the name field has the focus
        await press(pilot, "enter")
        screen = pilot.app.screen
        assert isinstance(screen, PlanScreen)
        await until(pilot, lambda: screen.plan is not None, 120)
        outcome["plan"] = screen.plan.describe()
        await press(pilot, "enter")  # Start backup
        progress = pilot.app.screen
        assert isinstance(progress, ProgressScreen)
        await until(pilot, lambda: progress.finished)
        outcome["result"] = progress.outcome
        outcome["status"] = str(progress.query_one("#step").render())

    drive(app, scenario)
    assert outcome["result"] == "done", outcome
    assert any(src in line for line in outcome["plan"])
    assert "Verified" in outcome["status"]
    images = api.list_images(str(repo))
    assert [i.name for i in images] == ["from-tui"]
    assert images[0].source_path == src
    assert images[0].status == "verified"  # verify after backup ran
    # The image holds what the disk holds: restore it with the CLI and compare.
    copy = loop(256 * MiB)
    run_recovery("restore", f"{repo}::from-tui", copy, "--yes")
    cparts = loopdev.partition_paths(copy)
    assert sfdisk_dump(copy) == sfdisk_dump(src)
    assert ext4_digest(cparts[1]) == ext4_digest(parts[1])
    assert fat_get(cparts[0], "BOOTX64.EFI") == fat_get(parts[0], "BOOTX64.EFI")


def test_encrypted_disk_backup_through_the_tui(
    loop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """Options > "Encrypt a new location": the passphrase is asked twice in a masked dialog
    (a mismatch is said and asked again), asked once for the whole backup and its verify, and
    the location opens with it and with nothing else."""
    monkeypatch.delenv("RECOVERY_PASSPHRASE", raising=False)
    src, _ = make_gpt_system_disk(loop, 256 * MiB)
    repo = tmp_path / "encrypted"
    app = RecoveryApp(real_backends({src}), cursor_blink=False)
    outcome: dict[str, Any] = {}

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "2")
        await pick_disk(pilot, src)
        await press(pilot, "enter")
        await press(pilot, "ctrl+t")
        await type_text(pilot, str(repo))
        await press(pilot, "enter")
        await type_text(pilot, "secret-image")
        await press(pilot, "tab", "tab", "tab", "space")  # level, verify, encrypt: tick it
        # The plan's worker waits for the dialog: keys here must not wait for workers.
        await pilot.press("ctrl+n")
        await until(pilot, lambda: isinstance(pilot.app.screen, SecretScreen), 60)
        dialog = pilot.app.screen
        outcome["masked"] = dialog.query_one("#secret", Input).password
        await type_text(pilot, "tui passphrase")
        await pilot.press("enter")
        await type_text(pilot, "typo")
        await pilot.press("enter")
        await pilot.pause()
        outcome["mismatch"] = str(dialog.query_one("#secret-problem").render())
        dialog.query_one("#again", Input).value = ""
        await type_text(pilot, "tui passphrase")
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(pilot.app.screen, PlanScreen), 60)
        screen = pilot.app.screen
        assert isinstance(screen, PlanScreen)
        await until(pilot, lambda: screen.plan is not None, 120)
        await press(pilot, "enter")
        progress = pilot.app.screen
        assert isinstance(progress, ProgressScreen)
        await until(pilot, lambda: progress.finished)
        outcome["result"] = progress.outcome
        outcome["status"] = str(progress.query_one("#step").render())

    drive(app, scenario)
    assert outcome["masked"] is True
    assert "differ" in outcome["mismatch"]
    assert outcome["result"] == "done", outcome
    assert "Verified" in outcome["status"]
    assert b"secret-image" not in b"".join(
        p.read_bytes() + p.name.encode() for p in repo.rglob("*") if p.is_file()
    )
    wrong = run_recovery(
        "images", str(repo), check=False, env={**os.environ, "RECOVERY_PASSPHRASE": "x"}
    )
    assert "wrong passphrase" in wrong.stderr
    right = run_recovery(
        "images", str(repo), env={**os.environ, "RECOVERY_PASSPHRASE": "tui passphrase"}
    )
    assert "secret-image" in right.stdout


def test_restore_through_the_tui_onto_a_larger_disk(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src, parts = make_gpt_system_disk(loop, 256 * MiB)
    repo = tmp_path / "repo"
    run_recovery("backup", src, "--to", str(repo), "--name", "base")
    want = ext4_digest(parts[1])
    esp = fat_get(parts[0], "BOOTX64.EFI")
    target = loop(384 * MiB)
    loopdev.partition(target, "label: dos\ntype=83\n")  # something to overwrite
    app = RecoveryApp(real_backends({src, target}), cursor_blink=False)
    seen: dict[str, Any] = {}

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "3", "ctrl+t")
        await type_text(pilot, str(repo))
        await press(pilot, "enter")
        images = pilot.app.screen
        assert isinstance(images, BackupsScreen)
        await until(pilot, lambda: bool(images.images), 60)
        await press(pilot, "enter")  # the only image
        await pick_disk(pilot, target)
        plan = pilot.app.screen
        assert isinstance(plan, PlanScreen)
        await until(pilot, lambda: plan.plan is not None, 120)
        seen["plan"] = plan.plan.describe()
        await press(pilot, "enter")  # "Restore..."
        assert isinstance(pilot.app.screen, ConfirmScreen)
        await press(pilot, "enter")  # Cancel has the focus: nothing is written
        assert isinstance(pilot.app.screen, PlanScreen)
        seen["untouched"] = sfdisk_dump(target)
        await press(pilot, "enter", "tab", "enter")  # "Erase and restore"
        progress = pilot.app.screen
        assert isinstance(progress, ProgressScreen)
        await until(pilot, lambda: progress.finished)
        seen["outcome"] = progress.outcome
        seen["status"] = str(progress.query_one("#step").render())

    drive(app, scenario)
    assert "label: dos" in "\n".join(seen["untouched"])
    assert seen["outcome"] == "done", seen
    assert any("grown" in line for line in seen["plan"]), seen["plan"]
    tparts = loopdev.partition_paths(target)
    assert len(tparts) == 3
    assert ext4_digest(tparts[1]) == want
    assert fat_get(tparts[0], "BOOTX64.EFI") == esp
    loopdev.run("e2fsck", "-fn", tparts[1])
    assert int(loopdev.run("blockdev", "--getsize64", tparts[1]).stdout) > 200 * MiB


# tmux: the real command on a Linux-console-sized terminal --------------------------------------


class Tmux:
    """A private tmux server (its own socket): nothing else on the machine is touched."""

    def __init__(self) -> None:
        self.socket = f"recovery-tui-{uuid.uuid4().hex[:8]}"

    def __call__(self, *args: str) -> str:
        r = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True
        )
        return r.stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "tui")

    def wait_for(self, text: str, seconds: float = 60) -> str:
        deadline = time.monotonic() + seconds
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            if "Traceback" in screen:
                break
            time.sleep(0.3)
        raise AssertionError(f"{text!r} not on the screen:\n{screen}")

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    if not loopdev.have("tmux"):
        pytest.skip("tmux is not installed")
    t = Tmux()
    yield t
    t.kill()


def recovery_executable() -> list[str]:
    script = Path(sys.executable).parent / "recovery"
    return [str(script)] if script.exists() else [sys.executable, "-m", "recovery"]


def test_tmux_linux_console_home_disk_backup_and_quit(loop, tmux: Tmux) -> None:  # type: ignore[no-untyped-def]
    dev = loop(64 * MiB)
    loopdev.partition(dev, "label: gpt\ntype=linux\n")
    command = " ".join(shlex.quote(a) for a in recovery_executable())
    tmux(
        "-f", "/dev/null", "new-session", "-d", "-s", "tui", "-x", "80", "-y", "25",
        "-e", "TERM=linux", f"cd {shlex.quote(os.getcwd())}; {command}; echo EXIT=$?; sleep 600",
    )  # fmt: skip
    home = tmux.wait_for("Backups")
    for task in ("System Backup", "Disk Backup", "Restore", "Clone", "Backups"):
        assert task in home, home
    assert len(home.splitlines()) <= 25 and max(len(row) for row in home.splitlines()) <= 80
    tmux("send-keys", "-t", "tui", "2")
    picker = tmux.wait_for("Disk Backup > Disk")
    assert "Disk Backup" in picker.splitlines()[0]
    assert dev in picker, picker  # the disk table lists the attached disk
    tmux("send-keys", "-t", "tui", "Escape")
    tmux.wait_for("What do you want to do?")
    tmux("send-keys", "-t", "tui", "q")
    end = tmux.wait_for("EXIT=", 30)
    assert "EXIT=0" in end, end
