"""Modal dialogs: the confirmation before anything destructive, and the error dialog.

The confirmation focuses Cancel, and Enter on it cancels: only a deliberate move to the
confirm button (Tab or the mouse) goes ahead. The error dialog is the one place the TUI turns an
exception into text: a :class:`recovery.errors.RecoveryError` shows its message (which says what
to do); anything else is a bug, written with its traceback to a log file the dialog names.
"""

from __future__ import annotations

import tempfile
import traceback
from pathlib import Path
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from recovery.errors import Cancelled, RecoveryError

ERROR_LOG = Path(tempfile.gettempdir()) / "recovery-tui-errors.log"


class ConfirmScreen(ModalScreen[bool]):
    """Ask before destructive work; dismisses with True only on the confirm button."""

    AUTO_FOCUS = "#cancel"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, lines: list[str], confirm: str, cancel: str = "Cancel") -> None:
        super().__init__()
        self._title = title
        self._lines = lines
        self._confirm = confirm
        self._cancel = cancel

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog -warning"):
            yield Static(self._title, id="dialog-title", markup=False)
            yield Static("\n".join(self._lines), id="dialog-body", markup=False)
            with Horizontal(id="dialog-buttons"):
                yield Button(self._cancel, id="cancel", variant="primary")
                yield Button(self._confirm, id="confirm", variant="error")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "confirm")

    def action_cancel(self) -> None:
        self.dismiss(False)


def explain(error: BaseException) -> tuple[str, str]:
    """(title, text) for the error dialog."""
    if isinstance(error, Cancelled):
        return "Cancelled", error.message
    if isinstance(error, RecoveryError):
        return "That did not work", error.message
    log = log_unexpected(error)
    return (
        "Unexpected error",
        f"{type(error).__name__}: {error}\n\n"
        "This is a bug in recovery, not something you did. The app keeps running; what was "
        "being done has stopped. The details are in "
        f"{log}; please include that file when you report it.",
    )


def log_unexpected(error: BaseException) -> Path:
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    try:
        with ERROR_LOG.open("a", encoding="utf-8") as f:
            f.write(text + "\n")
    except OSError:
        pass
    return ERROR_LOG


class ErrorScreen(ModalScreen[None]):
    """Shows what went wrong and what to do; any key that presses OK closes it."""

    AUTO_FOCUS = "#ok"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close")]

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self._title, self._text = explain(error)

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog -error"):
            yield Static(self._title, id="dialog-title", markup=False)
            yield Static(self._text, id="dialog-body", markup=False)
            with Horizontal(id="dialog-buttons"):
                yield Button("OK", id="ok", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)


class InfoScreen(ModalScreen[None]):
    """A short message with an OK button (results, notes)."""

    AUTO_FOCUS = "#ok"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close")]

    def __init__(self, title: str, lines: list[str]) -> None:
        super().__init__()
        self._title = title
        self._lines = lines

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Static(self._title, id="dialog-title", markup=False)
            yield Static("\n".join(self._lines), id="dialog-body", markup=False)
            with Horizontal(id="dialog-buttons"):
                yield Button("OK", id="ok", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)


class SecretScreen(ModalScreen[str | None]):
    """Asks for a passphrase or password, masked; dismisses with it, or None on Cancel.

    ``confirm``: a new secret is typed twice and must match (a typo would lock the person out
    of their own backups).
    """

    AUTO_FOCUS = "#secret"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self, title: str, lines: list[str], confirm: bool = False, placeholder: str = "passphrase"
    ) -> None:
        super().__init__()
        self._title = title
        self._lines = lines
        self._confirm = confirm
        self._placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Static(self._title, id="dialog-title", markup=False)
            yield Static("\n".join(self._lines), id="dialog-body", markup=False)
            yield Input(password=True, id="secret", placeholder=self._placeholder)
            if self._confirm:
                yield Input(password=True, id="again", placeholder="the same again")
            yield Static("", id="secret-problem", markup=False)
            with Horizontal(id="dialog-buttons"):
                yield Button("OK", id="ok", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self._confirm and event.input.id == "secret":
            self.query_one("#again", Input).focus()
            return
        self._finish()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "ok":
            self._finish()
        else:
            self.dismiss(None)

    def _finish(self) -> None:
        secret = self.query_one("#secret", Input).value
        problem = ""
        if not secret:
            problem = "Type it, or Cancel."
        elif self._confirm and self.query_one("#again", Input).value != secret:
            problem = "The two differ: type them again."
        if problem:
            self.query_one("#secret-problem", Static).update(problem)
            return
        self.dismiss(secret)

    def action_cancel(self) -> None:
        self.dismiss(None)
