"""Backup options that matter: the image name, the compression level, verify afterwards."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Button, Checkbox, Input, Label, Static

from recovery.tui.screens.base import StepScreen
from recovery.tui.screens.dialogs import InfoScreen

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
"""docs/FORMAT.md: image names safe on FAT32, exFAT, NTFS and SMB shares."""
LEVELS = range(1, 20)


@dataclass(frozen=True)
class BackupOptions:
    name: str | None
    """None: the engine names it after the source and the date."""
    level: int
    verify: bool
    encrypt: bool = False
    """Create a new location encrypted (the passphrase is asked when the plan is made)."""


def parse_options(
    name: str, level: str, verify: bool, encrypt: bool = False
) -> BackupOptions | str:
    """The options, or a message saying what is wrong with them."""
    name = name.strip()
    if name and not NAME_RE.fullmatch(name):
        return (
            "The image name may hold letters, digits, '.', '_' and '-' (up to 100), "
            "starting with a letter or digit."
        )
    try:
        lvl = int(level.strip() or "3")
    except ValueError:
        lvl = 0
    if lvl not in LEVELS:
        return "The compression level is a number from 1 (fastest) to 19 (smallest)."
    return BackupOptions(name or None, lvl, verify, encrypt)


class OptionsScreen(StepScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("ctrl+n,f2", "next", "Next"),
    ]

    def __init__(
        self,
        title: tuple[str, ...],
        summary: str,
        on_done: Callable[[BackupOptions], None],
        defaults: BackupOptions = BackupOptions(None, 3, True),
    ) -> None:
        super().__init__(*title)
        self._summary = summary
        self._on_done = on_done
        self._defaults = defaults

    def compose_body(self) -> Iterable[Widget]:
        yield Static(self._summary, id="intro", markup=False)
        with Vertical(id="form"):
            with Horizontal(classes="field"):
                yield Label("Image name", classes="field-label")
                yield Input(
                    self._defaults.name or "",
                    placeholder="empty: named after the disk and the date",
                    id="name",
                )
            with Horizontal(classes="field"):
                yield Label("Compression", classes="field-label")
                yield Input(str(self._defaults.level), id="level", restrict=r"[0-9]*", max_length=2)
                yield Static("1 fastest .. 19 smallest; 3 is a good balance", classes="field-help")
            with Horizontal(classes="field"):
                yield Label("", classes="field-label")
                yield Checkbox(
                    "Verify the image after the backup", self._defaults.verify, id="verify"
                )
            with Horizontal(classes="field"):
                yield Label("", classes="field-label")
                yield Checkbox(
                    "Encrypt a new location (asks for a passphrase)",
                    self._defaults.encrypt,
                    id="encrypt",
                )
        with Horizontal(id="buttons"):
            yield Button("Next: review", id="next", variant="primary")

    def on_mount(self) -> None:
        for field_id in ("name", "level"):
            self.query_one(f"#{field_id}", Input).cursor_blink = self.rapp.cursor_blink
        self.query_one("#name", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_next()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "next":
            self.action_next()

    def action_next(self) -> None:
        result = parse_options(
            self.query_one("#name", Input).value,
            self.query_one("#level", Input).value,
            self.query_one("#verify", Checkbox).value,
            self.query_one("#encrypt", Checkbox).value,
        )
        if isinstance(result, str):
            self.app.push_screen(InfoScreen("Check the options", [result]))
            return
        self._on_done(result)
