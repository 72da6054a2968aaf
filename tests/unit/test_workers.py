"""The engine's bounded window of work in flight (engine/workers.py)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import closing

import pytest

from recovery.engine.progress import CancelToken
from recovery.engine.workers import in_order, window_size
from recovery.errors import Cancelled


def test_results_come_in_item_order_whatever_order_the_work_ends_in() -> None:
    def work(n: int) -> int:
        time.sleep(random.random() / 1000)
        return n * n

    with closing(in_order(work, range(200), 4, "t", CancelToken())) as done:
        assert list(done) == [(n, n * n) for n in range(200)]


def test_no_more_than_the_window_is_taken_ahead_of_the_caller() -> None:
    taken = 0

    def items() -> Iterator[int]:
        nonlocal taken
        for n in range(100):
            taken += 1
            yield n

    with closing(in_order(lambda n: n, items(), 2, "t", CancelToken())) as done:
        for n, _ in done:
            # Item n is handed back once the window is full (or the items ran out).
            assert taken <= n + window_size(2)
    assert taken == 100


def test_an_error_drops_queued_work_and_reaches_the_caller() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def work(n: int) -> int:
        with lock:
            started.append(n)
        if n == 3:
            raise ValueError("cell 3 is bad")
        time.sleep(0.01)
        return n

    with (
        pytest.raises(ValueError, match="cell 3 is bad"),
        closing(in_order(work, range(1000), 2, "t", CancelToken())) as done,
    ):
        for _ in done:
            pass
    assert len(started) < 20


def test_cancel_stops_taking_items() -> None:
    cancel = CancelToken()
    seen: list[int] = []
    with (
        pytest.raises(Cancelled),
        closing(in_order(lambda n: n, range(1000), 2, "t", cancel)) as done,
    ):
        for n, _ in done:
            seen.append(n)
            if n == 5:
                cancel.cancel()
    assert max(seen) < 5 + window_size(2)
