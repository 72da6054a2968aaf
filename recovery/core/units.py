"""Sizes for people: integers in bytes in, short text out."""

from __future__ import annotations


def human_size(n: int) -> str:
    """``1536`` -> ``"1.5 KiB"``; binary units, one decimal."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def human_rate(bytes_per_second: float) -> str:
    return human_size(int(bytes_per_second)) + "/s"


def human_duration(seconds: float) -> str:
    s = int(seconds + 0.5)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
