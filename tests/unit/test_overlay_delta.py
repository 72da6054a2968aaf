"""The pure parts of issue 15's journal replay (core/overlay.py) and delta restore
(engine/delta.py): pages laid over a source, and which cells a delta writes."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from recovery.core.overlay import PAGE, Overlay, OverlaySource, PageWriter
from recovery.engine.delta import MATCH, WRITE, Delta, StreamDelta, cover_overwritten
from recovery.filesystems.base import BytesSource

MiB = 1 << 20


def test_page_writer_keeps_writes_and_reads_through_them() -> None:
    base = os.urandom(64 * 1024)
    src = BytesSource(base)
    w = PageWriter(src, limit=3 * PAGE)
    assert w.write(b"x" * 10, 4090)  # across a page boundary: two pages
    assert len(w.pages) == 2
    want = bytearray(base)
    want[4090:4100] = b"x" * 10
    assert w.read(0, len(base)) == bytes(want)
    assert w.write(b"y" * PAGE, 3 * PAGE)
    assert not w.write(b"z", 9 * PAGE)  # a fourth page: over the limit, nothing kept
    assert not w.write(b"z", len(base))  # past the end
    assert len(w.pages) == 3
    view = OverlaySource(src, w.overlay())
    want[3 * PAGE : 4 * PAGE] = b"y" * PAGE
    assert view.pread(0, len(base)) == bytes(want)
    assert view.pread(4095, 3) == bytes(want[4095:4098])
    assert base == src.data  # the source itself never changes


@given(
    st.lists(st.tuples(st.integers(0, 60000), st.binary(min_size=1, max_size=9000)), max_size=12)
)
@settings(max_examples=100, deadline=None)
def test_overlay_equals_writes_applied_in_order(writes: list[tuple[int, bytes]]) -> None:
    base = bytes(range(256)) * 256  # 64 KiB
    w = PageWriter(BytesSource(base), limit=1 << 30)
    want = bytearray(base)
    for off, data in writes:
        data = data[: len(base) - off]
        if data and w.write(data, off):
            want[off : off + len(data)] = data
    ov = w.overlay()
    assert OverlaySource(BytesSource(base), ov).pread(0, len(base)) == bytes(want)
    buf = bytearray(base[1000:50000])
    ov.patch(buf, 1000)
    assert bytes(buf) == bytes(want[1000:50000])


def test_overlay_rejects_bad_pages() -> None:
    import pytest

    with pytest.raises(ValueError):
        Overlay({0: b"short"})


def test_delta_counts_and_cover() -> None:
    cell = 4 * MiB
    disk = StreamDelta(bytes([WRITE, 0, 0, MATCH]), 4 * MiB, 4 * MiB, 16 * MiB)
    part = StreamDelta(bytes([MATCH, MATCH, WRITE]), 8 * MiB + 1, 4 * MiB, 9 * MiB)
    d = Delta({"disk": disk, "p1": part}, 0.1)
    assert d.matching_bytes == 12 * MiB + 1 and d.write_bytes == 8 * MiB
    assert d.writes("disk", 0) and not d.writes("disk", 3) and d.writes("other", 5)
    # The layout stream's first cell is written: it zeroes bytes 1-4 MiB of the partition that
    # starts at 1 MiB, so the partition's cell 0 must be written again; cell 1 (5-9 MiB) stays.
    covered = cover_overwritten(d, "disk", 0, cell, {"p1": 1 * MiB})
    p1 = covered.streams["p1"]
    assert p1.flags == bytes([WRITE, MATCH, WRITE])
    assert (p1.matching, p1.writing) == (4 * MiB + 1, 8 * MiB)
    assert covered.write_bytes == 12 * MiB
    assert "already match" in covered.describe()[0]
