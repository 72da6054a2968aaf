"""How the CLI shows long work and asks before destroying anything.

:class:`TerminalProgress` draws one updating line (step, done/total, rate, time left) on a
terminal's stderr; :class:`JsonProgress` prints one JSON object per line on stdout (``--json``).
:func:`confirm` implements the contract of PRODUCT.md: ``--yes`` skips the question; without a
terminal and without ``--yes`` a destructive command refuses.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from recovery.core.units import human_duration, human_rate, human_size
from recovery.errors import NotConfirmed

if TYPE_CHECKING:
    from recovery.engine.plans import ClonePlan, CloneResult, Question, RestorePlan, RestoreResult

    OverwriteResult = TypeVar("OverwriteResult", RestoreResult, CloneResult)


class TerminalProgress:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self._lock = threading.Lock()
        self.name = ""
        self.total = 0
        self.done = 0
        self._started = time.monotonic()
        self._last = 0.0

    def step(self, name: str, total: int) -> None:
        with self._lock:
            self._finish_line()
            self.name, self.total, self.done = name, total, 0
            self._started = time.monotonic()
            self._last = 0.0
            if not self.live:
                print(f"{name}...", file=self.stream, flush=True)
            else:
                self._draw(force=True)

    def advance(self, nbytes: int) -> None:
        with self._lock:
            self.done += nbytes
            self._draw()

    def log(self, message: str) -> None:
        with self._lock:
            self._finish_line()
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        with self._lock:
            self._finish_line()

    def _finish_line(self) -> None:
        if self.live and self.name:
            self._draw(force=True)
            self.stream.write("\n")
            self.stream.flush()
            self.name = ""

    def _draw(self, force: bool = False) -> None:
        if not self.live:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.2:
            return
        self._last = now
        elapsed = max(now - self._started, 1e-6)
        rate = self.done / elapsed
        text = f"\r{self.name}"
        if self.total:
            pct = 100 * self.done // max(self.total, 1)
            left = (self.total - self.done) / rate if rate > 0 else 0
            text += (
                f": {human_size(self.done)} / {human_size(self.total)} ({pct}%), "
                f"{human_rate(rate)}, {human_duration(left)} left"
            )
        self.stream.write(text[:200] + "\x1b[K")
        self.stream.flush()


class JsonProgress:
    """Progress as JSON lines: ``{"event": "step"|"progress"|"log", ...}``, at most 5 a second."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()
        self.name = ""
        self.total = 0
        self.done = 0
        self._last = 0.0

    def _emit(self, obj: dict[str, Any]) -> None:
        print(json.dumps(obj), file=self.stream, flush=True)

    def step(self, name: str, total: int) -> None:
        with self._lock:
            self.name, self.total, self.done = name, total, 0
            self._emit({"event": "step", "step": name, "total": total})

    def advance(self, nbytes: int) -> None:
        with self._lock:
            before = self.done
            self.done += nbytes
            now = time.monotonic()
            # The step's end is always told, once; a step without a total (0) has no end to
            # tell, and its many zero advances would otherwise each be a line.
            ended = self.total > 0 and before < self.total <= self.done
            if now - self._last >= 0.2 or ended:
                self._last = now
                self._emit(
                    {"event": "progress", "step": self.name, "done": self.done, "total": self.total}
                )

    def log(self, message: str) -> None:
        with self._lock:
            self._emit({"event": "log", "message": message})

    def close(self) -> None:
        pass


def progress_for(as_json: bool) -> TerminalProgress | JsonProgress:
    return JsonProgress() if as_json else TerminalProgress()


def confirm(lines: list[str], question: str, yes: bool, as_json: bool = False) -> None:
    """Show what will happen and ask; raises NotConfirmed unless the person agrees."""
    if yes:
        if not as_json:
            for line in lines:
                print(line, file=sys.stderr)
        return
    if not sys.stdin.isatty():
        raise NotConfirmed(
            "this would overwrite data and there is no terminal to ask: add --yes to confirm"
        )
    for line in lines:
        print(line, file=sys.stderr)
    print(f"{question} Type 'yes' to go on: ", end="", file=sys.stderr, flush=True)
    try:
        answer = sys.stdin.readline().strip().lower()
    except KeyboardInterrupt:
        answer = ""
    if answer != "yes":
        raise NotConfirmed("not confirmed: nothing was written")


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=1))


def terminal_question(yes: bool) -> Question | None:
    """A yes/no question on the terminal for the engine to ask mid-way, or None (go on) when
    ``--yes`` was given or there is no terminal to ask on."""
    if yes or not sys.stdin.isatty():
        return None

    def ask(question: str) -> bool:
        print(f"\n{question} [y/N] ", end="", file=sys.stderr, flush=True)
        try:
            return sys.stdin.readline().strip().lower() in ("y", "yes")
        except KeyboardInterrupt:
            return False

    return ask


def overwrite(
    args: argparse.Namespace,
    plan: RestorePlan | ClonePlan,
    execute: Callable[[TerminalProgress | JsonProgress], OverwriteResult],
    summary: Callable[[OverwriteResult], str],
) -> int:
    """The shape every disk-overwriting command shares: show the plan and confirm it, run it
    with progress, then print each check and a summary (or the JSON result). Exit code 8 when a
    check after writing failed."""
    confirm(
        plan.describe(), f"Everything on {args.target} will be overwritten.", args.yes, args.json
    )
    progress = progress_for(args.json)
    try:
        result = execute(progress)
    finally:
        progress.close()
    if args.json:
        print_json({"event": "result", **result.to_json()})
    else:
        for c in result.checks:
            print(c)
        print(summary(result) + ("." if result.ok else "; some checks FAILED (see above)."))
    return 0 if result.ok else 8
