"""The TUI's Open flow on a real image at 80x25 (issue 12): Backups > o Open, expand a partition,
tick a folder, "Copy to..." a typed folder, compare the copy, leave (the image is closed)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Tree

from recovery.tui.app import RecoveryApp
from recovery.tui.screens.backups import BackupsScreen
from recovery.tui.screens.location import LocationScreen
from recovery.tui.screens.open_image import OpenImageScreen
from recovery.tui.screens.progress import ProgressScreen
from tests.pilot import press, settle
from tests.storage.disks import MiB, mounted, run_recovery
from tests.storage.open_disk import make_open_disk
from tests.storage.test_open import tree
from tests.storage.test_tui_storage import drive, real_backends, until
from tests.unit.tui_fakes import screen_text

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (loop devices, mounts)")


def test_open_tick_copy_through_the_tui(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src, parts = make_open_disk(loop, big=8 * MiB)
    repo = tmp_path / "repo"
    run_recovery("backup", src, "--to", str(repo), "--name", "img")
    out = tmp_path / "copies"
    out.mkdir()
    app = RecoveryApp(real_backends({src}), cursor_blink=False)
    seen: dict[str, Any] = {}

    async def scenario(pilot: Pilot[Any]) -> None:
        app.push_screen(BackupsScreen(("Backups",), str(repo), lambda r, i: None, lambda *a: None))
        await settle(pilot)
        await press(pilot, "o")
        screen = app.screen
        assert isinstance(screen, OpenImageScreen)
        files: Tree[Any] = screen.query_one("#files", Tree)
        await until(pilot, lambda: len(files.root.children) == 3, 120)
        seen["partitions"] = [str(n.label) for n in files.root.children]
        seen["folder"] = screen.view.dir
        await press(pilot, "down", "enter")  # p2 (ext4) opens
        await until(pilot, lambda: bool(files.root.children[1].children), 60)
        seen["p2"] = [str(n.label) for n in files.root.children[1].children]
        await press(pilot, "down", "down", "space")  # etc/, home/: tick home
        assert list(screen.ticked) == ["p2:/home"]
        # On the 80x25 console a file three folders deep still shows its size and date whole.
        home = files.root.children[1].children[1]
        await press(pilot, "enter")
        await until(pilot, lambda: bool(home.children), 60)
        await press(pilot, "down", "enter")  # alice/
        await until(pilot, lambda: bool(home.children[0].children), 60)
        seen["screen"] = screen_text(app)
        app.save_screenshot(str(tmp_path / "open-80x25.svg"))
        await press(pilot, "c")
        assert isinstance(app.screen, LocationScreen)
        await press(pilot, "ctrl+t")
        await pilot.press(*str(out))
        await press(pilot, "enter")
        progress = app.screen
        assert isinstance(progress, ProgressScreen)
        await until(pilot, lambda: progress.finished, 300)
        await press(pilot, "escape")
        assert app.screen is screen
        await press(pilot, "escape")
        await until(pilot, lambda: not isinstance(app.screen, OpenImageScreen), 60)

    drive(app, scenario, size=(80, 25))
    assert seen["partitions"][0].startswith("p1  vfat")
    assert seen["partitions"][2].startswith("p3  ntfs")
    assert any(label.startswith("[ ] home/") for label in seen["p2"]), seen["p2"]
    line = next(ln for ln in seen["screen"].splitlines() if "notes.txt" in ln)
    assert re.search(r"notes\.txt +1\.27 KiB  20\d\d-\d\d-\d\d \d\d:\d\d", line), line
    with mounted(parts[1], readonly=True) as m:
        assert tree(out / "home") == tree(m / "home")
    assert seen["folder"] not in Path("/proc/self/mounts").read_text()
    assert not os.path.exists(seen["folder"])
