"""What every step screen shares: the title bar, the key footer, Escape to go back, and jobs run
in thread workers whose result or error comes back as a message.

A job is any blocking call (the engine, udev, mount). It runs in a Textual thread worker and
always ends in exactly one :class:`WorkFinished` or :class:`WorkFailed` posted to the screen;
exceptions never escape the worker, so an engine error cannot end the app. A failed job shows
the error dialog, then :meth:`StepScreen.job_failed` lets the screen recover.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer

from recovery.tui.messages import WorkFailed, WorkFinished
from recovery.tui.widgets.titlebar import TitleBar

if TYPE_CHECKING:
    from recovery.tui.app import RecoveryApp


class StepScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "Back")]

    def __init__(self, *title: str) -> None:
        super().__init__()
        self.title_parts = title

    @property
    def rapp(self) -> RecoveryApp:
        from recovery.tui.app import RecoveryApp

        app = self.app
        assert isinstance(app, RecoveryApp)
        return app

    def compose(self) -> ComposeResult:
        yield TitleBar(*self.title_parts)
        yield from self.compose_body()
        yield Footer()

    def compose_body(self) -> Iterable[Widget]:
        return ()

    def action_back(self) -> None:
        self.app.pop_screen()

    @work(thread=True, exit_on_error=False, group="jobs")
    def run_job(self, tag: str, fn: Callable[..., object], *args: object) -> None:
        try:
            result = fn(*args)
        except Exception as e:  # every error ends in the dialog, never in the app's death
            self.post_message(WorkFailed(tag, e))
            return
        self.post_message(WorkFinished(tag, result))

    def on_work_finished(self, message: WorkFinished) -> None:
        message.stop()
        self.job_done(message.tag, message.result)

    def on_work_failed(self, message: WorkFailed) -> None:
        message.stop()
        self.job_failed(message.tag, message.error)

    # Subclasses override these, not the message handlers (Textual runs a handler of every
    # class in the MRO, so an override of a handler would not replace the base's).

    def job_done(self, tag: str, result: object) -> None:
        """A job of this screen finished with ``result``."""

    def job_failed(self, tag: str, error: BaseException) -> None:
        """A job of this screen failed: by default, the error dialog."""
        self.rapp.show_error(error)
