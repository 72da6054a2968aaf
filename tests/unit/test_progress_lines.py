"""`--json` progress lines (commands/reporting.py): at most five a second, and a step's end once."""

from __future__ import annotations

import io
import json

from recovery.commands.reporting import JsonProgress


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_step_without_a_total_is_not_a_line_per_advance() -> None:
    out = io.StringIO()
    p = JsonProgress(out)
    p.step("checking the image before writing", 0)
    for _ in range(1000):
        p.advance(0)
    # The step itself, and at most the first rate-limited progress line.
    assert len(lines(out)) <= 2, lines(out)


def test_a_steps_end_is_told_once() -> None:
    out = io.StringIO()
    p = JsonProgress(out)
    p.step("restoring", 100)
    for _ in range(10):
        p.advance(10)
    p.advance(0)
    progress = [e for e in lines(out) if e["event"] == "progress"]
    assert progress[-1]["done"] == 100
    assert sum(1 for e in progress if e["done"] == 100) == 1
