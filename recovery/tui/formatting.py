"""How the TUI writes sizes, rates and durations: short, in binary units, the same everywhere.

Called by the screens and widgets of :mod:`recovery.tui`; pure functions of their arguments.
"""

from __future__ import annotations

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(nbytes: int) -> str:
    """``1536`` -> ``"1.5 KiB"``; three significant digits at most, binary units."""
    if nbytes < 1024:
        return f"{nbytes} B"
    value = float(nbytes)
    unit = 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    if value >= 100:
        return f"{value:.0f} {_UNITS[unit]}"
    if value >= 10:
        return f"{value:.1f} {_UNITS[unit]}"
    return f"{value:.2f} {_UNITS[unit]}"


def human_rate(bytes_per_second: float) -> str:
    return human_size(int(bytes_per_second)) + "/s"


def human_duration(seconds: float) -> str:
    """``75`` -> ``"1:15"``, ``3725`` -> ``"1:02:05"``."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def short_date(iso: str) -> str:
    """``2024-05-01T10:20:30Z`` -> ``"2024-05-01 10:20"`` (the stored time, UTC)."""
    text = iso.replace("T", " ")
    return text[:16] if len(text) >= 16 else text
