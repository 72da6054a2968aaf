"""The engine's Progress, turned into throttled snapshots for the progress screen.

:class:`ThrottledProgress` is what a TUI worker hands to the engine: the engine calls ``step``,
``advance`` and ``log`` from its threads; the adapter keeps the counts under a lock and calls
``post`` (the screen's ``post_message``, which is thread-safe) with a :class:`ProgressSnapshot`
at most ``max_rate`` times a second, so a backup moving gigabytes a second cannot flood the UI.
A new step or a log line is posted as soon as the interval allows; ``flush()`` posts whatever is
pending (the worker calls it before it reports the end). :class:`RateMeter` turns snapshots into
a rate, the time left and a throughput history. Neither imports textual: both are unit-tested
with a fake clock.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ProgressSnapshot:
    step: str
    step_done: int
    step_total: int
    """0 when the engine did not say."""
    done: int
    """Bytes done over all steps so far."""
    at: float
    """The adapter's clock (seconds) when the snapshot was taken."""
    logs: tuple[str, ...] = ()
    """Log lines since the previous snapshot."""
    steps: int = 0
    """How many steps have started."""


class ThrottledProgress:
    """A :class:`recovery.engine.progress.Progress` that posts :class:`ProgressSnapshot`s."""

    def __init__(
        self,
        post: Callable[[ProgressSnapshot], object],
        clock: Callable[[], float],
        max_rate: float = 10.0,
    ) -> None:
        self._post = post
        self._clock = clock
        self._interval = 1.0 / max_rate
        self._lock = threading.Lock()
        self._step = ""
        self._step_done = 0
        self._step_total = 0
        self._done = 0
        self._steps = 0
        self._logs: list[str] = []
        self._last_post: float | None = None
        self._pending = False

    def step(self, name: str, total: int) -> None:
        with self._lock:
            self._step = name
            self._step_total = max(0, total)
            self._step_done = 0
            self._steps += 1
            self._pending = True
            snapshot = self._take_if_due()
        self._send(snapshot)

    def advance(self, nbytes: int) -> None:
        with self._lock:
            self._step_done += nbytes
            self._done += nbytes
            self._pending = True
            snapshot = self._take_if_due()
        self._send(snapshot)

    def log(self, message: str) -> None:
        with self._lock:
            self._logs.append(message)
            self._pending = True
            snapshot = self._take_if_due()
        self._send(snapshot)

    def flush(self) -> None:
        """Post what has not been posted yet, whatever the interval."""
        with self._lock:
            snapshot = self._take() if self._pending else None
        self._send(snapshot)

    def _take_if_due(self) -> ProgressSnapshot | None:
        now = self._clock()
        if self._last_post is not None and now - self._last_post < self._interval:
            return None
        return self._take(now)

    def _take(self, now: float | None = None) -> ProgressSnapshot:
        at = self._clock() if now is None else now
        snapshot = ProgressSnapshot(
            step=self._step,
            step_done=self._step_done,
            step_total=self._step_total,
            done=self._done,
            at=at,
            logs=tuple(self._logs),
            steps=self._steps,
        )
        self._logs.clear()
        self._last_post = at
        self._pending = False
        return snapshot

    def _send(self, snapshot: ProgressSnapshot | None) -> None:
        # Outside the lock: posting may block briefly, and the engine's threads must not wait.
        if snapshot is not None:
            self._post(snapshot)


class RateMeter:
    """Rate over a sliding window, time left for the current step, and a throughput history.

    ``history`` holds one rate per ``bucket`` seconds (the last ``keep`` of them) for the graph.
    """

    def __init__(self, window: float = 5.0, bucket: float = 1.0, keep: int = 60) -> None:
        self.window = window
        self.bucket = bucket
        self._samples: deque[tuple[float, int]] = deque()
        self.history: deque[float] = deque(maxlen=keep)
        self._bucket_start: tuple[float, int] | None = None
        self.started: float | None = None

    def add(self, at: float, done: int) -> None:
        if self.started is None:
            self.started = at
        self._samples.append((at, done))
        while len(self._samples) > 2 and at - self._samples[0][0] > self.window:
            self._samples.popleft()
        if self._bucket_start is None:
            self._bucket_start = (at, done)
        else:
            t0, d0 = self._bucket_start
            while at - t0 >= self.bucket:
                # Spread the bytes of a long gap evenly over the buckets it covers.
                buckets = int((at - t0) // self.bucket)
                per = (done - d0) / buckets / self.bucket
                for _ in range(buckets):
                    self.history.append(per)
                t0 = t0 + buckets * self.bucket
                d0 = done
            self._bucket_start = (t0, d0)

    @property
    def rate(self) -> float:
        """Bytes per second over the window; 0.0 before two samples."""
        if len(self._samples) < 2:
            return 0.0
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0

    def time_left(self, remaining: int) -> float | None:
        rate = self.rate
        if remaining <= 0:
            return 0.0
        return remaining / rate if rate > 0 else None

    def elapsed(self, now: float) -> float:
        return 0.0 if self.started is None else now - self.started
