"""A Clonezilla image restored through the TUI (issue 17): made by Clonezilla's own ``ocs-sr``
from a GPT disk, found at a typed folder, listed with its mark, restored key by key with Pilot
through the same target picker, plan and progress screens as our images, and checked on the
target (table, clean ext4 with the same files, the EFI file, the swap's UUID)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from recovery.tui.app import RecoveryApp
from recovery.tui.screens.backups import BackupsScreen
from recovery.tui.screens.dialogs import ConfirmScreen
from recovery.tui.screens.plan import PlanScreen
from recovery.tui.screens.progress import ProgressScreen
from tests import loopdev
from tests.pilot import press
from tests.storage.disks import MiB, blkid, ext4_digest, fat_get
from tests.storage.test_clonezilla import EFI_FILE, make_source, ocs_save, table_lines
from tests.storage.test_tui_storage import (
    drive,
    pick_disk,
    real_backends,
    type_text,
    until,
)
from tests.unit.tui_fakes import screen_text

pytestmark = pytest.mark.skipif(shutil.which("ocs-sr") is None, reason="clonezilla not installed")


def test_restore_clonezilla_image_through_the_tui(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src, parts = make_source(loop)
    files = ext4_digest(parts[1])
    swap_uuid = blkid(parts[2])["UUID"]
    partimag = tmp_path / "partimag"
    ocs_save(partimag, "2026-12-02-01-img", src, "-z9p", "-i", "0")
    target = loop(96 * MiB)
    app = RecoveryApp(real_backends({src, target}), cursor_blink=False)
    seen: dict[str, Any] = {}

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "3", "ctrl+t")  # Restore, type a folder
        await type_text(pilot, str(partimag))
        await press(pilot, "enter")
        images = pilot.app.screen
        assert isinstance(images, BackupsScreen), screen_text(pilot.app)
        await until(pilot, lambda: bool(images.images), 60)
        seen["list"] = screen_text(pilot.app)
        await press(pilot, "enter")
        await pick_disk(pilot, target)
        plan = pilot.app.screen
        assert isinstance(plan, PlanScreen)
        await until(pilot, lambda: plan.plan is not None, 120)
        seen["plan"] = plan.plan.describe()
        seen["plan_screen"] = screen_text(pilot.app)
        await press(pilot, "enter")  # "Restore..."
        assert isinstance(pilot.app.screen, ConfirmScreen)
        await press(pilot, "tab", "enter")  # "Erase and restore"
        progress = pilot.app.screen
        assert isinstance(progress, ProgressScreen)
        await until(pilot, lambda: progress.finished)
        seen["outcome"] = progress.outcome
        seen["done"] = screen_text(pilot.app)

    drive(app, scenario)
    assert "[CZ] 2026-12-02-01-img" in seen["list"] and "Clonezilla" in seen["list"]
    assert seen["plan"][0].startswith("Restore Clonezilla image '2026-12-02-01-img'")
    assert "Clonezilla image: 2026-12-02-01-img" in seen["plan_screen"]
    assert "Partitions..." not in seen["plan_screen"]
    assert seen["outcome"] == "done", seen["done"]
    new_parts = loopdev.partition_paths(target)
    assert len(new_parts) == 3
    # The same table, the root grown (as the CLI restore does; tests/storage/test_clonezilla.py).
    before, after = table_lines(src), table_lines(target)
    assert [ln for ln in before if "label" in ln] == [ln for ln in after if "label" in ln]
    assert before[-3] == after[-3]
    fsck = subprocess.run(["e2fsck", "-fn", new_parts[1]], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert ext4_digest(new_parts[1]) == files
    assert fat_get(new_parts[0], "BOOTX64.EFI") == EFI_FILE
    assert blkid(new_parts[2])["UUID"] == swap_uuid
