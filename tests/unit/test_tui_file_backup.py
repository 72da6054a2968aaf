"""The TUI's File Backup flow on fake data (issue 13): the steps in order, what reaches the
engine, and an 80x25 snapshot of each new screen (update with ``--snapshot-update`` after an
intended change and look at the SVGs in __snapshots__/ before committing them)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.unit.test_tui_snapshots import keys, make_app, settle
from tests.unit.tui_fakes import FakeEngine, screen_text

SOURCE = ("6",)
FOLDERS = (*SOURCE, "enter")
LOCATION = (*FOLDERS, "ctrl+n")
PLAN = (*LOCATION, "down", "enter")
DONE = (*PLAN, "enter")


@pytest.mark.parametrize(
    "pressed",
    [
        pytest.param(SOURCE, id="source"),
        pytest.param(FOLDERS, id="folders"),
        pytest.param(LOCATION, id="location"),
        pytest.param(PLAN, id="plan"),
        pytest.param(DONE, id="done"),
    ],
)
def test_file_backup_screens(snap_compare: Any, pressed: tuple[str, ...]) -> None:
    assert snap_compare(make_app(), terminal_size=(80, 25), run_before=keys(*pressed))


def test_file_backup_flow_reaches_the_engine() -> None:
    asyncio.run(_flow())


async def _flow() -> None:
    engine = FakeEngine()
    app = make_app(engine=engine)
    async with app.run_test(size=(80, 25)) as pilot:
        await settle(pilot)
        for key in FOLDERS:
            await pilot.press(key)
            await settle(pilot)
        text = screen_text(app)
        assert "[x] Documents" in text and "Windows system" in text
        # The preset's ticks stay; a pattern is typed into the excludes field.
        await pilot.press("tab")
        await pilot.press(*"*.bak")
        await pilot.press("enter")
        await settle(pilot)
        for key in ("down", "enter", "enter"):
            await pilot.press(key)
            await settle(pilot)
        plan_call = next(c for c in engine.calls if c[0] == "file_backup_plan")
        sources, _, _, excludes, preset = plan_call[1]
        assert excludes == ["*.bak"]
        assert preset == "user-data" and sources == ["/dev/nvme0n1p3"]
        text = screen_text(app)
        assert "could not be read" in text and "broken.docx" in text
