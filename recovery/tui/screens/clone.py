"""Clone options: what to copy (the whole disk or only its system) and whether the copy gets
new identifiers. The rest of the clone flow is the disk pickers, the plan and the progress
screen (see :func:`recovery.tui.flows.start_clone`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Button, Checkbox, Static

from recovery.tui.screens.base import StepScreen


class CloneOptionsScreen(StepScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("ctrl+n,f2", "next", "Next"),
    ]

    def __init__(
        self, title: tuple[str, ...], summary: str, on_done: Callable[[bool, bool], None]
    ) -> None:
        super().__init__(*title)
        self._summary = summary
        self._on_done = on_done

    def compose_body(self) -> Iterable[Widget]:
        yield Static(self._summary, id="intro", markup=False)
        with Vertical(id="form"):
            yield Checkbox("Only the system partitions (boot, Windows or Linux)", id="system")
            yield Static(
                "Leaves data partitions behind; the main system partition takes the space.\n",
                classes="field-help",
            )
            yield Checkbox("New disk and partition identifiers", id="new-ids")
            yield Static(
                "Tick it when both disks stay in this machine. Boot entries that name the old "
                "identifiers then need updating; leave it off when the old disk goes away.",
                classes="field-help",
            )
        with Horizontal(id="buttons"):
            yield Button("Next: review", id="next", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#system", Checkbox).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "next":
            self.action_next()

    def action_next(self) -> None:
        self._on_done(
            self.query_one("#system", Checkbox).value, self.query_one("#new-ids", Checkbox).value
        )
