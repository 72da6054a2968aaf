"""A table whose column widths are set with its rows, to fit the width it has.

Textual's DataTable measures auto-width columns only when it is next idle, and draws new rows
with the widths it had before until then: the location picker, refilled after disks changed,
showed "/dev/loop", "vf" and "not sea" (columns as wide as their headings) on the 80x25
console. Here each width is fixed when the rows are set. When the rows are wider than the
table, the columns named ``shrink`` give way in that order, each down to its floor (its
heading, or more when the caller says so), and their cells are cut with "~" (an ASCII mark the
console font has): at the end, or for a column of paths at the start, whose end says most.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from rich.cells import cell_len
from textual import events
from textual.widgets import DataTable

CUT = "~"
INDENT = " \u2514\u251c\u2502\u2500"
"""What a cell cut at its start keeps at its start: spaces and light tree marks (└├│─)."""
SCROLLBAR = 2
"""Columns kept free for the vertical scrollbar, which appears when the rows outgrow the table."""


class Column(NamedTuple):
    key: str
    heading: str
    cut_start: bool = False
    """Cut a long cell at its start (after its indentation: spaces and tree marks) rather
    than at its end."""


def fit_widths(
    headings: Sequence[str],
    rows: Sequence[Sequence[str]],
    room: int,
    shrink: Sequence[int],
    floors: Mapping[int, int] | None = None,
) -> list[int]:
    """Each column's width: as wide as its widest cell, narrowed in ``shrink`` order while the
    sum is above ``room``, never below its floor (at least its heading)."""
    widths = [max([cell_len(h), *(cell_len(r[i]) for r in rows)]) for i, h in enumerate(headings)]
    over = sum(widths) - room
    for i in shrink:
        if over <= 0:
            break
        floor = max(cell_len(headings[i]), (floors or {}).get(i, 0))
        give = max(0, min(over, widths[i] - floor))
        widths[i] -= give
        over -= give
    return widths


def cut(text: str, width: int, at_start: bool = False) -> str:
    """``text`` in at most ``width`` cells, CUT in place of what was cut."""
    if cell_len(text) <= width:
        return text
    if not at_start:
        while text and cell_len(text) > width - 1:
            text = text[:-1]
        return text + CUT
    body = text.lstrip(INDENT)
    indent = text[: len(text) - len(body)]
    while body and cell_len(indent + CUT + body) > width:
        body = body[1:]
    return (indent + CUT + body)[: max(width, 0)]


class FittedTable(DataTable[str]):
    """A row-cursor DataTable filled by :meth:`set_rows`, with fixed column widths."""

    def __init__(
        self, columns: Sequence[Column], *, shrink: Sequence[str] = (), id: str | None = None
    ) -> None:
        super().__init__(id=id, cursor_type="row")
        self._columns = list(columns)
        self._index = {c.key: i for i, c in enumerate(self._columns)}
        self._shrink = [self._index[k] for k in shrink]
        self._rows: list[tuple[str, tuple[str, ...]]] = []
        self._floors: dict[int, int] = {}
        self._room = 0

    def on_mount(self) -> None:
        self._fill()

    def room(self) -> int:
        """Cells the columns may take in all: the table's width (the screen's before the
        first layout), less each column's padding and the scrollbar."""
        width = self.size.width or self.app.size.width - 2
        return width - 2 * self.cell_padding * len(self._columns) - SCROLLBAR

    def set_rows(
        self, rows: Sequence[tuple[str, Sequence[str]]], floors: Mapping[str, int] | None = None
    ) -> None:
        """Replace the rows, given as (key, cells); ``floors`` are widths a shrinking column
        keeps (the cells that must stay whole). The cursor goes back to the first row."""
        self._rows = [(key, tuple(cells)) for key, cells in rows]
        self._floors = {self._index[k]: w for k, w in (floors or {}).items()}
        self._fill()

    def _fill(self) -> None:
        self._room = self.room()
        headings = [c.heading for c in self._columns]
        cells = [c for _, c in self._rows]
        widths = fit_widths(headings, cells, self._room, self._shrink, self._floors)
        self.clear(columns=True)
        for column, width in zip(self._columns, widths, strict=True):
            self.add_column(column.heading, width=width, key=column.key)
        for key, row in self._rows:
            self.add_row(
                *(
                    cut(text, width, column.cut_start)
                    for text, width, column in zip(row, widths, self._columns, strict=True)
                ),
                key=key,
            )

    def on_resize(self, event: events.Resize) -> None:
        if self.room() != self._room:
            row = self.cursor_row
            self._fill()
            if self._rows:
                self.move_cursor(row=min(row, len(self._rows) - 1))
