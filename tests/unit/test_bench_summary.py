"""bench/summary.py: the one table of `make bench` (pure logic over a results dictionary)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import summary


def by_work(rows: list[summary.Row]) -> dict[str, summary.Row]:
    return {r.work: r for r in rows}


def test_every_target_has_a_row_and_missing_sections_say_not_measured() -> None:
    rows = summary.rows({})
    assert len(rows) == len(summary.TARGETS)
    assert {r.verdict for r in rows} == {"not measured"}


def test_every_run_must_meet_a_target() -> None:
    results = {
        "when": "2026-12-02T08:00:00+00:00",
        "runs": [
            {"ratios": {"backup_time": 0.48, "restore_time": 0.29, "backup_rss": 60.0}},
            {"ratios": {"backup_time": 0.52, "restore_time": 0.28, "backup_rss": 61.0}},
        ],
        "open_read": {"ratio": 1.27, "max_rss": 300 << 20, "when": "2026-12-02T07:16:00"},
        "network": {"ratios": {"local": {"backup": 1.0}, "smb": {"backup": 0.7, "restore": 0.45}}},
    }
    rows = by_work(summary.rows(results))
    backup = rows["backup time / partclone -c | zstd -T0 -3"]
    assert (backup.measured, backup.verdict) == ("0.48x, 0.52x", "MISSED")
    assert rows["restore time / zstd -d | partclone -r"].verdict == "met"
    assert rows["reading a file through open / zstd -d"].when == "2026-12-02 07:16"
    # At least 0.5x the local rate: the slowest location and direction counts.
    assert rows["network location / local folder (slowest)"].measured == "0.45x"
    assert rows["network location / local folder (slowest)"].verdict == "MISSED"
    # The largest peak of any process the bench watched.
    assert rows["peak memory of any of our processes"].measured == "300 MiB"
    assert rows["peak memory of any of our processes"].verdict == "met"


def test_the_table_lines_up() -> None:
    text = summary.render(summary.rows({"open_read": {"ratio": 1.4}}))
    lines = text.splitlines()
    assert len(lines) == len(summary.TARGETS) + 2
    assert lines[1].startswith("---")
