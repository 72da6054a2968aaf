"""Pick partitions with checkboxes: of a disk (what to back up) or of an image (what to restore).

Rows come preselected (a System Backup's system partitions, or everything); the person changes
the choice with the space bar or the mouse.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Button, SelectionList, Static
from textual.widgets.selection_list import Selection

from recovery.tui.screens.base import StepScreen
from recovery.tui.screens.dialogs import InfoScreen


class PartitionList(SelectionList[int]):
    """Space ticks, Enter goes on: the keys a person tries first."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "submit", "Next", show=False)]

    class Submitted(Message):
        pass

    def action_submit(self) -> None:
        self.post_message(self.Submitted())


@dataclass(frozen=True)
class PartitionRow:
    number: int
    text: str
    selected: bool


class PartitionPickerScreen(StepScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("a", "select_all", "All"),
        Binding("n", "select_none", "None"),
        Binding("ctrl+n,f2", "next", "Next"),
    ]

    def __init__(
        self,
        title: tuple[str, ...],
        intro: str,
        header: str,
        rows: list[PartitionRow],
        on_pick: Callable[[list[int]], None],
        *,
        extra_key: tuple[str, str, Callable[[], None]] | None = None,
        refine: Callable[[], list[int]] | None = None,
        refine_text: str = "",
    ) -> None:
        super().__init__(*title)
        self._intro = intro
        self._header = header
        self._rows = rows
        self._on_pick = on_pick
        self._extra = extra_key
        self._refine = refine
        self._refine_text = refine_text

    def compose_body(self) -> Iterable[Widget]:
        yield Static(self._intro, id="intro", markup=False)
        yield Static(self._header, id="list-header", markup=False)
        yield PartitionList(
            *(Selection(r.text, r.number, r.selected) for r in self._rows), id="parts"
        )
        yield Static("", id="status", markup=False)
        with Horizontal(id="buttons"):
            if self._extra:
                yield Button(self._extra[1], id="extra")
            yield Button("Next", id="next", variant="primary")

    def on_mount(self) -> None:
        self.query_one(SelectionList).focus()
        if self._refine is not None:
            self.query_one("#status", Static).update(self._refine_text)
            self.run_job("refine", self._refine)

    def job_done(self, tag: str, result: object) -> None:
        # Better knowledge of what to tick (the engine looked inside the partitions).
        assert isinstance(result, list)
        numbers = set(result)
        parts = self.query_one(SelectionList)
        for row in self._rows:
            if row.number in numbers:
                parts.select(row.number)
            else:
                parts.deselect(row.number)
        ticked = ", ".join(str(n) for n in sorted(numbers))
        self.query_one("#status", Static).update(
            f"Looked inside the partitions: {ticked} hold the system."
        )

    def job_failed(self, tag: str, error: BaseException) -> None:
        # Not worth a dialog: the guess from partition types stays, and the person decides.
        why = getattr(error, "message", str(error))
        self.query_one("#status", Static).update(f"Kept the guess from partition types ({why}).")

    def on_partition_list_submitted(self, event: PartitionList.Submitted) -> None:
        event.stop()
        self.action_next()

    def action_select_all(self) -> None:
        self.query_one(SelectionList).select_all()

    def action_select_none(self) -> None:
        self.query_one(SelectionList).deselect_all()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "next":
            self.action_next()
        elif event.button.id == "extra" and self._extra:
            self._extra[2]()

    def action_next(self) -> None:
        chosen = sorted(self.query_one(SelectionList).selected)
        if not chosen:
            self.app.push_screen(
                InfoScreen("Nothing chosen", ["Tick at least one partition with the space bar."])
            )
            return
        self._on_pick(chosen)
