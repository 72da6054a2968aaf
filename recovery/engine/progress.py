"""How long work reports progress: the engine calls, the UI decides how to draw it.

The CLI renders events as a progress line on a terminal or as JSON lines with ``--json``;
the TUI posts them as Textual messages from its worker thread.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

from recovery.errors import Cancelled


@dataclass(frozen=True)
class ProgressEvent:
    step: str
    """What is being done now, e.g. ``"backup /dev/sdb2 (ext4)"``."""
    done: int
    """Bytes done in this step."""
    total: int
    """Bytes this step will do (0 when unknown)."""
    overall_done: int
    overall_total: int


class Progress(Protocol):
    def step(self, name: str, total: int) -> None:
        """A new step starts; ``total`` bytes will be processed in it."""

    def advance(self, nbytes: int) -> None:
        """``nbytes`` more were processed in the current step. Called from worker threads."""

    def log(self, message: str) -> None:
        """A line worth showing to the person watching."""


class NullProgress:
    def step(self, name: str, total: int) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass

    def log(self, message: str) -> None:
        pass


class CancelToken:
    """Set from the UI thread; the engine checks it between chunks and raises ``Cancelled``."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled("Cancelled by the user. The backup location is left valid.")
