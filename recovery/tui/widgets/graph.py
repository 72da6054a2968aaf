"""A throughput graph drawn with half blocks, so it renders on the Linux console font.

``▄`` and ``█`` (and the space) are in every console font (CP437 and its Linux successors),
unlike the eighth blocks of Textual's Sparkline. Each row gives two levels, so a graph three
rows high shows six.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip
from textual.widget import Widget


class ThroughputGraph(Widget):
    DEFAULT_CSS = """
    ThroughputGraph {
        width: 1fr;
        height: 3;
        color: $success;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._values: list[float] = []

    def set_values(self, values: Sequence[float]) -> None:
        self._values = list(values)
        self.refresh()

    def render_line(self, y: int) -> Strip:
        width, height = self.size.width, self.size.height
        style = Style.from_color(self.rich_style.color, self.rich_style.bgcolor)
        values = self._values[-width:] if width else []
        top = max(values, default=0.0)
        levels = 2 * height
        chars = []
        for value in values:
            level = round(value / top * levels) if top > 0 else 0
            if value > 0 and level == 0:
                level = 1
            # Row y counts from the top; the bar fills from the bottom row up.
            from_bottom = height - 1 - y
            filled = level - 2 * from_bottom
            chars.append("\u2588" if filled >= 2 else "\u2584" if filled == 1 else " ")
        line = "".join(chars).rjust(width)
        return Strip([Segment(line, style)], width)
