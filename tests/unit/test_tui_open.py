"""The Backups screen's "o Open" on fake data: the tree, ticking, leaving (issue 12); an 80x25
snapshot. The real flow on a real image is tests/storage/test_tui_open.py."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from textual.pilot import Pilot

from recovery.tui.app import RecoveryApp
from recovery.tui.screens.backups import BackupsScreen
from recovery.tui.screens.open_image import OpenImageScreen, copy_destination, entry_label
from tests.pilot import settle
from tests.unit.tui_fakes import FakeEngine, fake_backends

WHEN = 1_700_000_000  # 2023-11-14 22:13 UTC


@dataclass
class OpenEngine(FakeEngine):
    """FakeEngine that 'opens' an image as a small fixed tree in the folder it is given."""

    closed: list[str] = field(default_factory=list)

    def open_image(self, repo: str, image: str, folder: str) -> Any:
        self._call("open_image", repo, image)
        docs = Path(folder, "p3", "Users", "alice", "Documents")
        docs.mkdir(parents=True)
        (docs / "thesis.odt").write_bytes(b"x" * 123_456)
        Path(folder, "p3", "Windows").mkdir()
        Path(folder, "p3", "pagefile.sys").write_bytes(b"\0" * 4096)
        Path(folder, "p1", "EFI").mkdir(parents=True)
        for p in Path(folder).rglob("*"):
            os.utime(p, (WHEN, WHEN))
        return SimpleNamespace(
            dir=folder,
            partitions=[
                {"number": 1, "fstype": "vfat", "mounted": f"{folder}/p1", "reason": None},
                {"number": 2, "fstype": None, "mounted": None, "reason": "no file system"},
                {"number": 3, "fstype": "ntfs", "mounted": f"{folder}/p3", "reason": None},
                {"number": 4, "fstype": "ntfs", "mounted": None, "reason": "ntfs-3g: damaged"},
            ],
        )

    def close_image(self, folder: str) -> list[str]:
        self.closed.append(folder)
        for name in ("p1", "p3"):
            shutil.rmtree(Path(folder, name), ignore_errors=True)
        return []


@pytest.fixture(autouse=True)
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import recovery.tui.screens.open_image as screen

    monkeypatch.setattr(screen, "RUN_DIR", str(tmp_path / "run"))


def open_keys(*more: str) -> Any:
    async def run(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        # Backups > the first location's first image > o Open > p3 > Users/, pagefile.sys
        for key in ("5", "down", "enter", "enter", "o", "down", "down", "enter", *more):
            await pilot.press(key)
            await settle(pilot)

    return run


def make_app(engine: OpenEngine) -> RecoveryApp:
    return RecoveryApp(fake_backends(engine=engine), cursor_blink=False)


def test_open_screen_80x25(snap_compare: Any) -> None:
    run = open_keys("down", "space", "down", "down", "space")
    assert snap_compare(make_app(OpenEngine()), terminal_size=(80, 25), run_before=run)


def test_open_tick_and_leave_closes_the_image() -> None:
    import asyncio

    engine = OpenEngine()
    app = make_app(engine)

    async def main() -> None:
        async with app.run_test(size=(80, 25)) as pilot:
            await open_keys("down", "space", "down", "down", "space")(pilot)
            screen = app.screen
            assert isinstance(screen, OpenImageScreen)
            assert sorted(screen.ticked) == ["p3:/Users", "p3:/pagefile.sys"]
            folder = screen.view.dir
            await pilot.press("space")  # unticks pagefile.sys
            assert sorted(screen.ticked) == ["p3:/Users"]
            await pilot.press("escape")
            await settle(pilot)
            assert isinstance(app.screen, BackupsScreen)
            assert engine.closed == [folder]
            assert not os.path.exists(folder)

    asyncio.run(main())


def test_labels_and_destination(tmp_path: Path) -> None:
    assert entry_label("Users", True, 0, WHEN) == "Users/"
    label = entry_label("thesis.odt", False, 123_456, WHEN)
    assert label.startswith("thesis.odt") and label.endswith("2023-11-14 22:13")
    assert copy_destination("/media/t7/recovery-backups", "img") == "/media/t7/recovered-img"
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "recovery-repo").write_text("{}")
    assert copy_destination(str(tmp_path / "repo"), "img") == str(tmp_path / "recovered-img")
    assert copy_destination("/mnt/stick/rescued", "img") == "/mnt/stick/rescued"
