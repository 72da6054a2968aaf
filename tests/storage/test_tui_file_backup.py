"""The TUI's File Backup driven key by key with Pilot against a real partition (issue 13): a
Linux-style ext4 partition on a loop disk; the folder tree comes from the real engine (the
partition mounted read-only), the user-data preset ticked; the file image is then extracted
with the CLI and compared. The app sees only this test's loop disk (as in test_tui_storage.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from recovery.tui.app import RecoveryApp
from recovery.tui.screens.files import FolderTree, FolderTreeScreen
from recovery.tui.screens.plan import PlanScreen
from recovery.tui.screens.progress import ProgressScreen
from tests import loopdev
from tests.pilot import press
from tests.storage.disks import mounted, run_recovery, tree_digest
from tests.storage.test_tui_storage import drive, real_backends, type_text, until
from tests.unit.tui_fakes import screen_text

MiB = 1 << 20


def test_file_backup_through_the_tui(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    disk = loop(128 * MiB)
    (part,) = loopdev.partition(disk, "label: gpt\ntype=4f68bce3-e8cd-4dd1-96e7-fbcaf984b709\n")
    loopdev.mkfs(part, "ext4", "-L", "root")
    with mounted(part) as m:
        for d in ("etc", "usr/lib", "home/alice/Documents", "home/alice/.cache", "root", "tmp"):
            (m / d).mkdir(parents=True)
        (m / "etc" / "fstab").write_text("# fstab\n")
        (m / "usr" / "lib" / "libbig.so").write_bytes(os.urandom(3 * MiB))
        (m / "home" / "alice" / "Documents" / "cv.odt").write_bytes(os.urandom(200_000))
        (m / "home" / "alice" / ".cache" / "junk").write_bytes(os.urandom(50_000))
        (m / "root" / ".bashrc").write_text("alias ll='ls -l'\n")
        want = tree_digest(m)
    repo = tmp_path / "repo"
    app = RecoveryApp(real_backends({disk}), cursor_blink=False)
    outcome: dict[str, Any] = {}

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "6")
        outcome["source"] = screen_text(pilot.app)
        await press(pilot, "enter")  # the Linux root partition is under the cursor
        screen = pilot.app.screen
        assert isinstance(screen, FolderTreeScreen)
        tree = screen.query_one(FolderTree)
        await until(pilot, lambda: bool(tree.ticked), 120)
        outcome["ticked"] = sorted(tree.ticked)
        outcome["folders"] = screen_text(pilot.app)
        await press(pilot, "ctrl+n")
        await press(pilot, "ctrl+t")
        await type_text(pilot, str(repo))
        await press(pilot, "enter")
        plan = pilot.app.screen
        assert isinstance(plan, PlanScreen)
        await until(pilot, lambda: plan.plan is not None, 120)
        assert plan.plan is not None
        outcome["plan"] = plan.plan.describe()
        await press(pilot, "enter")
        progress = pilot.app.screen
        assert isinstance(progress, ProgressScreen)
        await until(pilot, lambda: progress.finished)
        outcome["result"] = progress.outcome
        outcome["done"] = screen_text(pilot.app)

    drive(app, scenario)
    assert part in outcome["source"] and "Linux root" in outcome["source"]
    assert outcome["ticked"] == ["/etc", "/home", "/root"]
    assert "[x] home" in outcome["folders"]
    assert outcome["result"] == "done", outcome
    assert outcome["plan"][0].startswith("Back up 3 file(s)")  # fstab, cv.odt, .bashrc
    assert "File image" in outcome["done"]
    (image,) = [
        i for i in run_recovery("images", str(repo)).stdout.split() if i.startswith("files-")
    ]
    out = tmp_path / "out"
    run_recovery("extract", f"{repo}::{image}", "/", "--to", str(out))
    got = tree_digest(out)
    kept = {k: v for k, v in want.items() if k.split("/")[0] in ("etc", "home", "root")}
    kept = {k: v for k, v in kept.items() if ".cache" not in k}
    assert got == kept
