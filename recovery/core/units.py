"""Sizes for people: integers in bytes in, short text out. The CLI, the engine's messages and
the TUI (through :mod:`recovery.tui.formatting`) all write sizes with :func:`human_size`."""

from __future__ import annotations

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(n: int, *, short: bool = False) -> str:
    """Binary units: ``1536`` -> ``"1.5 KiB"`` (one decimal), or with ``short`` at most three
    significant digits, ``"1.50 KiB"``, ``"15.0 KiB"``, ``"150 KiB"`` (the TUI's narrow
    columns, where the width should not jump as a number grows)."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    unit = 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    if not short:
        return f"{value:.1f} {_UNITS[unit]}"
    if value >= 100:
        return f"{value:.0f} {_UNITS[unit]}"
    if value >= 10:
        return f"{value:.1f} {_UNITS[unit]}"
    return f"{value:.2f} {_UNITS[unit]}"


def human_rate(bytes_per_second: float, *, short: bool = False) -> str:
    return human_size(int(bytes_per_second), short=short) + "/s"


def human_duration(seconds: float) -> str:
    s = int(seconds + 0.5)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
