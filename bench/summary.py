"""The last step of `make bench`: one table of every figure of PRODUCT.md's performance targets.

Each part of `make bench` (bench.py, increment.py, open_read.py, file_backup.py,
delta_restore.py, network.py) writes its section of ``bench/last-results.json`` with the time it
was measured; this reads them all and prints, one row per target: the figure of each run, the
target, and whether every run met it. The live ISO's rows come from the last ``make iso-test``
(``build/boot-test/timings.json``) and ``dist/recovery.iso``. A section missing from the file
shows as "not measured"; a row whose measurement does not exist yet says so. Reads only; run it
alone with ``.venv/bin/python bench/summary.py``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "last-results.json"
TIMINGS = ROOT / "build" / "boot-test" / "timings.json"
ISO = ROOT / "dist" / "recovery.iso"
MiB = 1 << 20


@dataclass(frozen=True)
class Row:
    work: str
    target: str
    measured: str
    verdict: str
    """"met", "MISSED" or "not measured"."""
    when: str


@dataclass(frozen=True)
class Target:
    work: str
    limit: float
    at_most: bool
    """True: the figure must be at most ``limit``; False: at least."""
    values: Callable[[dict[str, Any]], list[float] | None]
    """The figure of each run from the results, or None when its section is missing."""
    section: str
    """The key of the results whose "when"/"measured" dates the row ("" for the top level)."""
    shown: Callable[[float], str] = lambda v: f"{v:.2f}x"
    not_built: str = ""
    """Set when nothing measures this target yet: the row says so."""

    def target_text(self) -> str:
        return f"{'≤' if self.at_most else '≥'} {self.shown(self.limit)}"


def _ext4(key: str) -> Callable[[dict[str, Any]], list[float] | None]:
    def values(results: dict[str, Any]) -> list[float] | None:
        runs = results.get("runs")
        if not runs:
            return None
        got = [r["ratios"].get(key) for r in runs]
        return [v for v in got if v is not None] or None

    return values


def _field(section: str, *path: str) -> Callable[[dict[str, Any]], list[float] | None]:
    def values(results: dict[str, Any]) -> list[float] | None:
        node: Any = results.get(section)
        for p in path:
            if not isinstance(node, dict) or p not in node:
                return None
            node = node[p]
        return [float(node)] if node is not None else None

    return values


def _network(results: dict[str, Any]) -> list[float] | None:
    ratios = (results.get("network") or {}).get("ratios")
    if not ratios:
        return None
    got = [v for kind, ops in ratios.items() if kind != "local" for v in ops.values()]
    return [min(v for v in got if v is not None)] if got else None


def _peak(results: dict[str, Any]) -> list[float] | None:
    """The largest peak of any of our processes the bench measured, in MiB."""
    peaks: list[float] = []
    for run in results.get("runs") or []:
        r = run.get("ratios", {})
        peaks += [v for k in ("backup_rss", "restore_rss", "clone_rss") if (v := r.get(k))]
    for section in ("open_read", "file_backup", "delta_restore"):
        rss = (results.get(section) or {}).get("max_rss")
        if rss:
            peaks.append(rss / MiB)
    return [max(peaks)] if peaks else None


def _mib(v: float) -> str:
    return f"{v:.0f} MiB"


def _share(v: float) -> str:
    return f"{v:.1%}"


def _seconds(v: float) -> str:
    return f"{v:.1f} s"


def _mb(v: float) -> str:
    return f"{v:.0f} MB"


TARGETS: tuple[Target, ...] = (
    Target("backup time / partclone -c | zstd -T0 -3", 0.5, True, _ext4("backup_time"), ""),
    Target("backup size / partclone -c | zstd -T0 -3", 1.0, True, _ext4("backup_size"), ""),
    Target("restore time / zstd -d | partclone -r", 0.3, True, _ext4("restore_time"), ""),
    Target("unchanged 2nd image time / partclone backup", 0.1, True, _ext4("second_time"), ""),
    Target("unchanged 2nd image, new bytes / image", 0.01, True, _ext4("second_bytes"), "", _share),
    Target(
        "image after ~60 MB of changes, new bytes / image",
        0.05,
        True,
        _field("increment", "share"),
        "increment",
        _share,
    ),
    Target("clone time / partclone.ext4 -b", 0.5, True, _ext4("clone_time"), ""),
    Target(
        "delta restore (3 % changed) / full restore",
        0.25,
        True,
        _field("delta_restore", "ratio"),
        "delta_restore",
    ),
    Target(
        "reading a file through open / zstd -d",
        1.5,
        True,
        _field("open_read", "ratio"),
        "open_read",
    ),
    Target(
        "file backup, first / restic (time)",
        0.7,
        True,
        _field("file_backup", "ratios", "first_time_vs_restic"),
        "file_backup",
    ),
    Target(
        "file backup, first / restic (size)",
        1.0,
        True,
        _field("file_backup", "ratios", "first_size_vs_restic"),
        "file_backup",
    ),
    Target(
        "file backup, unchanged 2nd / first (time)",
        0.1,
        True,
        _field("file_backup", "ratios", "second_time_vs_first"),
        "file_backup",
    ),
    Target("network location / local folder (slowest)", 0.5, False, _network, "network"),
    Target(
        "encrypted / plain backup (best)",
        1.1,
        True,
        _field("encryption", "summary", "backup", "ratio_best"),
        "encryption",
    ),
    Target(
        "encrypted / plain restore (best)",
        1.1,
        True,
        _field("encryption", "summary", "restore", "ratio_best"),
        "encryption",
    ),
    Target("peak memory of any of our processes", 400.0, True, _peak, "", _mib),
    Target("live ISO size", 200.0, True, _field("iso", "megabytes"), "iso", _mb),
    Target(
        "power-on to the TUI under TCG (slowest mode)",
        60.0,
        True,
        _field("iso", "slowest_tui_seconds"),
        "iso",
        _seconds,
    ),
)


def _when(results: dict[str, Any], section: str) -> str:
    node = results if not section else results.get(section) or {}
    when = str(node.get("when") or node.get("measured") or "")
    return when[:16].replace("T", " ")


def rows(results: dict[str, Any], targets: Sequence[Target] = TARGETS) -> list[Row]:
    out = []
    for t in targets:
        if t.not_built:
            out.append(Row(t.work, t.target_text(), t.not_built, "not measured", ""))
            continue
        values = t.values(results)
        if not values:
            out.append(Row(t.work, t.target_text(), "-", "not measured", ""))
            continue
        met = all(v <= t.limit if t.at_most else v >= t.limit for v in values)
        out.append(
            Row(
                t.work,
                t.target_text(),
                ", ".join(t.shown(v) for v in values),
                "met" if met else "MISSED",
                _when(results, t.section),
            )
        )
    return out


def iso_section() -> dict[str, Any] | None:
    """The live ISO's figures from the last `make iso-test` and the ISO in dist/, if any."""
    if not TIMINGS.exists() or not ISO.exists():
        return None
    timings = json.loads(TIMINGS.read_text())
    tui = [m["tui_on_tty1_s"] for m in timings.values() if "tui_on_tty1_s" in m]
    mtime = TIMINGS.stat().st_mtime
    return {
        "when": datetime.fromtimestamp(mtime, UTC).isoformat(timespec="seconds"),
        "megabytes": ISO.stat().st_size / 1e6,
        "slowest_tui_seconds": max(tui) if tui else None,
    }


def render(table: list[Row]) -> str:
    head = Row("PRODUCT.md target", "target", "measured (each run)", "verdict", "measured at")
    cells = [(r.work, r.target, r.measured, r.verdict, r.when) for r in [head, *table]]
    widths = [max(len(row[i]) for row in cells) for i in range(5)]
    lines = []
    for i, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> int:
    results: dict[str, Any] = {}
    try:
        results = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        print(
            f"{RESULTS.relative_to(ROOT)} is missing or unreadable: run make bench", file=sys.stderr
        )
    iso = iso_section()
    if iso is not None:
        results["iso"] = iso
    table = rows(results)
    print("\nEvery performance target of PRODUCT.md, from this machine's last runs:\n")
    print(render(table))
    missed = sum(r.verdict == "MISSED" for r in table)
    unmeasured = sum(r.verdict == "not measured" for r in table)
    print(f"\n{len(table) - missed - unmeasured} met, {missed} missed, {unmeasured} not measured")
    return 0


if __name__ == "__main__":
    sys.exit(main())
