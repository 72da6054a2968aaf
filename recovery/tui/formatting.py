"""How the TUI writes sizes, rates and durations: short, in binary units, the same everywhere.

Called by the screens and widgets of :mod:`recovery.tui`; pure functions of their arguments. Sizes
come from :func:`recovery.core.units.human_size` in its short form.
"""

from __future__ import annotations

from recovery.core import units


def human_size(nbytes: int) -> str:
    """``1536`` -> ``"1.50 KiB"``: three significant digits at most, binary units."""
    return units.human_size(nbytes, short=True)


def human_rate(bytes_per_second: float) -> str:
    return units.human_rate(bytes_per_second, short=True)


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
