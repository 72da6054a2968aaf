"""The plan, shown before anything is written: what is read, what is written where, what gets
resized, and the target's identity. Destructive plans ask again in a modal that focuses Cancel.

The plan is made by the engine in a worker (it reads devices and the repository); an engine
refusal (too small, mounted, holds the repository) lands in the error dialog, and the person
goes back to change the choice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.widget import Widget
from textual.widgets import Button, Static

from recovery.tui.backends import ShownPlan
from recovery.tui.screens.base import StepScreen
from recovery.tui.screens.dialogs import ConfirmScreen


def plan_lines(plan: ShownPlan) -> list[str]:
    return plan.describe()


class PlanScreen(StepScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("p", "extra", "Partitions"),
    ]

    def __init__(
        self,
        title: tuple[str, ...],
        header: list[str],
        make_plan: Callable[[], ShownPlan],
        start_label: str,
        on_start: Callable[[ShownPlan], None],
        *,
        confirm: Callable[[ShownPlan], tuple[str, list[str], str]] | None = None,
        extra: tuple[str, Callable[[], None]] | None = None,
    ) -> None:
        super().__init__(*title)
        self._header = header
        self._make_plan = make_plan
        self._start_label = start_label
        self._on_start = on_start
        self._confirm = confirm
        self._extra = extra
        """A button (and the key p) that changes the choice, e.g. which partitions."""
        self.plan: ShownPlan | None = None

    def compose_body(self) -> Iterable[Widget]:
        with VerticalScroll(id="plan-scroll"):
            yield Static("\n".join(self._header), id="plan-header", markup=False)
            yield Static("Working out the plan...", id="plan-body", markup=False)
        with Horizontal(id="buttons"):
            yield Button("Back", id="back")
            if self._extra:
                yield Button(self._extra[0], id="extra")
            yield Button(self._start_label, id="start", variant="primary", disabled=True)

    def on_mount(self) -> None:
        self.query_one("#back", Button).focus()
        self.run_job("plan", self._make_plan)

    def job_done(self, tag: str, result: object) -> None:
        assert isinstance(result, ShownPlan)  # what make_plan returned
        self.plan = result
        self.query_one("#plan-body", Static).update(
            "\n".join(["The plan:", *("  " + line for line in plan_lines(result))])
        )
        start = self.query_one("#start", Button)
        start.disabled = False
        start.focus()

    def job_failed(self, tag: str, error: BaseException) -> None:
        super().job_failed(tag, error)
        self.query_one("#plan-body", Static).update(
            "No plan: see the message. Go back and change the choice."
        )

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "back":
            self.app.pop_screen()
        elif event.button.id == "start" and self.plan is not None:
            self.start()
        elif event.button.id == "extra":
            self.action_extra()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return action != "extra" or self._extra is not None

    def action_extra(self) -> None:
        if self._extra:
            self._extra[1]()

    def start(self) -> None:
        plan = self.plan
        if plan is None:  # still being worked out
            return
        if self._confirm is None:
            self._on_start(plan)
            return
        title, lines, label = self._confirm(plan)

        def answered(yes: bool | None) -> None:
            if yes:
                self._on_start(plan)

        self.app.push_screen(ConfirmScreen(title, lines, confirm=label), answered)
