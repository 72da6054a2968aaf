"""Clone, until the engine has it: say so, and what to do meanwhile."""

from __future__ import annotations

from collections.abc import Iterable

from textual.widget import Widget
from textual.widgets import Static

from recovery.tui.screens.base import StepScreen


class CloneComingScreen(StepScreen):
    def compose_body(self) -> Iterable[Widget]:
        yield Static(
            "Copying a disk straight to another disk is not in this version yet.\n\n"
            "Meanwhile you get the same result in two steps:\n"
            "  1. Disk Backup of the old disk to a third disk or a partition with space.\n"
            "  2. Restore that image onto the new disk; the partitions adapt to its size.\n\n"
            "Press Escape to go back.",
            id="intro",
            markup=False,
        )
