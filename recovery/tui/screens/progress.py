"""Long work, watched: step, bytes done of total, rate, time left, a throughput graph, a log.

The work runs in a thread worker with a :class:`ThrottledProgress` that posts
:class:`ProgressUpdate` messages (at most ten a second) and a :class:`CancelToken` the screen
sets when the person confirms cancelling. While it runs the app knows (``app.work``), so quitting
asks first. The work returns the lines that sum up the result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import ClassVar

from textual import work
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Button, RichLog, Static

from recovery.engine.progress import CancelToken, Progress
from recovery.errors import Cancelled
from recovery.tui.formatting import human_duration, human_rate, human_size
from recovery.tui.messages import ProgressUpdate, WorkFailed, WorkFinished
from recovery.tui.progress import ProgressSnapshot, RateMeter, ThrottledProgress
from recovery.tui.screens.base import StepScreen
from recovery.tui.screens.dialogs import ConfirmScreen
from recovery.tui.widgets.graph import ThroughputGraph
from recovery.tui.widgets.meter import Meter

Work = Callable[[Progress, CancelToken], list[str]]


class ProgressScreen(StepScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel_or_close", "Cancel"),
        Binding("escape", "close", "Done"),
        Binding("c", "cancel_or_close", "Cancel", show=False),
    ]

    def __init__(
        self,
        title: tuple[str, ...],
        heading: str,
        job: Work,
        *,
        what: str = "the work",
        cancel_note: str = "",
        on_close: Callable[[], None] | None = None,
        autostart: bool = True,
        overall_total: int = 0,
    ) -> None:
        super().__init__(*title)
        self._heading = heading
        self._job = job
        self._what = what
        self._cancel_note = cancel_note
        self._on_close = on_close
        self._autostart = autostart
        self._overall_total = overall_total
        """Bytes all steps together will move (0: unknown); the total line shows a share."""
        self.token = CancelToken()
        self.meter = RateMeter()
        self.finished = False
        self.outcome: str | None = None
        """``done``, ``cancelled`` or ``failed`` once the work has ended."""

    def compose_body(self) -> Iterable[Widget]:
        yield Static(self._heading, id="heading", markup=False)
        yield Static("Starting...", id="step", markup=False)
        yield Meter(id="meter")
        yield Static("", id="numbers", markup=False)
        yield ThroughputGraph(id="graph")
        yield RichLog(id="log", wrap=True, markup=False, highlight=False, min_width=20)
        with Horizontal(id="buttons"):
            yield Button("Cancel", id="cancel", variant="error")

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()
        if self._autostart:
            self.start()

    def start(self) -> None:
        self.rapp.work = self.token
        self.run_work()

    @work(thread=True, exit_on_error=False, group="jobs")
    def run_work(self) -> None:
        progress = ThrottledProgress(
            lambda s: self.post_message(ProgressUpdate(s)), self.rapp.backends.clock
        )
        try:
            lines = self._job(progress, self.token)
        except Exception as e:  # the dialog shows it; the app lives on
            progress.flush()
            self.post_message(WorkFailed("work", e))
            return
        progress.flush()
        self.post_message(WorkFinished("work", lines))

    # Progress -----------------------------------------------------------------------------

    def on_progress_update(self, message: ProgressUpdate) -> None:
        message.stop()
        self.show_snapshot(message.snapshot)

    def show_snapshot(self, s: ProgressSnapshot) -> None:
        self.meter.add(s.at, s.done)
        prefix = f"Step {s.steps}: " if s.steps else ""
        if not self.finished:
            self.query_one("#step", Static).update(prefix + (s.step or "working"))
        self.query_one(Meter).update(s.step_done, s.step_total)
        parts = []
        if s.step_total:
            parts.append(f"{human_size(s.step_done)} of {human_size(s.step_total)}")
        else:
            parts.append(human_size(s.step_done))
        rate = self.meter.rate
        if rate > 0:
            parts.append(human_rate(rate))
        remaining = s.step_total - s.step_done
        left = self.meter.time_left(remaining) if s.step_total and remaining > 0 else None
        if left is not None:
            parts.append(f"{human_duration(left)} left")
        parts.append(f"elapsed {human_duration(self.meter.elapsed(s.at))}")
        if self._overall_total > 0:
            share = min(100, s.done * 100 // self._overall_total)
            parts.append(f"all steps {share}%")
        else:
            parts.append(f"total {human_size(s.done)}")
        self.query_one("#numbers", Static).update("   ".join(parts))
        self.query_one(ThroughputGraph).set_values(list(self.meter.history))
        log = self.query_one(RichLog)
        for line in s.logs:
            log.write(line)

    # The end ------------------------------------------------------------------------------

    def job_done(self, tag: str, result: object) -> None:
        # The job's summary lines (see __init__'s ``job``).
        self.end("done", "Finished.", [str(x) for x in result] if isinstance(result, list) else [])

    def job_failed(self, tag: str, error: BaseException) -> None:
        if isinstance(error, Cancelled):
            self.end("cancelled", "Cancelled.", [error.message])
            return
        self.end("failed", "Stopped by an error.", [getattr(error, "message", str(error))])
        self.rapp.show_error(error)

    def end(self, outcome: str, status: str, lines: list[str]) -> None:
        self.finished = True
        self.outcome = outcome
        if self.rapp.work is self.token:
            self.rapp.work = None
        self.query_one("#step", Static).update("\n".join([status, *lines]))
        button = self.query_one("#cancel", Button)
        button.label = "Done"
        button.variant = "primary"
        button.focus()
        self.refresh_bindings()
        self.rapp.refresh_disks()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_or_close":
            return not self.finished
        if action == "close":
            return self.finished
        return True

    def action_close(self) -> None:
        self.action_cancel_or_close()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_cancel_or_close()

    def action_cancel_or_close(self) -> None:
        if self.finished:
            if self._on_close:
                self._on_close()
            else:
                self.rapp.go_home()
            return
        if self.token.cancelled:
            return

        def answered(yes: bool | None) -> None:
            if yes and not self.finished:
                self.token.cancel()
                self.query_one("#step", Static).update("Cancelling...")

        lines = [f"Stop {self._what} now?"]
        if self._cancel_note:
            lines.append(self._cancel_note)
        self.app.push_screen(
            ConfirmScreen(f"Cancel {self._what}?", lines, confirm="Stop it", cancel="Keep going"),
            answered,
        )

    def action_back(self) -> None:
        self.action_cancel_or_close()
