import random
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recovery.core import bitmap
from recovery.core.bitmap import clear_runs, set_runs


def reference_runs(data: bytes, nbits: int, value: int = 1) -> list[tuple[int, int]]:
    """Bit by bit, the obvious way."""
    out: list[tuple[int, int]] = []
    start = None
    for i in range(nbits):
        if (data[i >> 3] >> (i & 7)) & 1 == value:
            if start is None:
                start = i
        elif start is not None:
            out.append((start, i - start))
            start = None
    if start is not None:
        out.append((start, nbits - start))
    return out


def test_shapes() -> None:
    assert list(set_runs(b"")) == []
    assert list(set_runs(b"\x00\x00")) == []
    assert list(set_runs(b"\xff\xff")) == [(0, 16)]
    assert list(set_runs(b"\x01")) == [(0, 1)]
    assert list(set_runs(b"\x80\x01")) == [(7, 2)]
    assert list(set_runs(b"\xf0\xff\x0f")) == [(4, 16)]
    assert list(set_runs(b"\x55")) == [(0, 1), (2, 1), (4, 1), (6, 1)]
    assert list(set_runs(b"\x0f\xf0")) == [(0, 4), (12, 4)]
    assert list(set_runs(b"\xff\x00\xff")) == [(0, 8), (16, 8)]


def test_nbits_cuts_padding() -> None:
    # ext4 sets the padding bits past the end of the last group: they must not show.
    assert list(set_runs(b"\xff\xff", 12)) == [(0, 12)]
    assert list(set_runs(b"\x00\xff\xff", 8)) == []
    assert list(set_runs(b"\xff\xff\xff", 16)) == [(0, 16)]
    assert list(clear_runs(b"\x0f\xff", 10)) == [(4, 4)]
    with pytest.raises(ValueError):
        list(set_runs(b"\xff", 9))


@given(st.binary(max_size=300), st.data())
def test_matches_reference(data: bytes, draw: st.DataObject) -> None:
    nbits = draw.draw(st.integers(0, 8 * len(data)))
    assert list(set_runs(data, nbits)) == reference_runs(data, nbits)
    assert list(clear_runs(data, nbits)) == reference_runs(data, nbits, value=0)


# Bitmaps built from runs, so long 0x00/0xFF stretches and partial edge bytes all occur.
@st.composite
def run_bitmaps(draw: st.DrawFn) -> bytes:
    lengths = draw(st.lists(st.integers(1, 200), max_size=40))
    bits = []
    for i, n in enumerate(lengths):
        bits += [i % 2] * n
    bits += [0] * (-len(bits) % 8)
    return bytes(sum(bits[j + k] << k for k in range(8)) for j in range(0, len(bits), 8))


@given(run_bitmaps())
def test_run_shaped_bitmaps(data: bytes) -> None:
    assert list(set_runs(data)) == reference_runs(data, 8 * len(data))


def test_piece_boundaries_join(monkeypatch: pytest.MonkeyPatch) -> None:
    # Fragmented stretches are processed in pieces; runs crossing a piece must come out whole.
    monkeypatch.setattr(bitmap, "_PIECE", 3)
    rng = random.Random(7)
    for _ in range(200):
        data = bytes(rng.choice((0x55, 0xFE, 0x7F, 0xFF, 0x3C, 0x81)) for _ in range(20))
        assert list(set_runs(data)) == reference_runs(data, 160)


def test_speed_on_a_2tb_sized_bitmap() -> None:
    # 64 MiB: the block bitmaps of a 2 TB ext4 with 4 KiB blocks, half full, half empty, with
    # 3000 stretches of random bits (~300k runs).
    size = 64 << 20
    half = size // 2
    data = bytearray(size)
    data[:half] = b"\xff" * half
    rng = random.Random(1)
    for _ in range(3000):
        at = rng.randrange(size - 100)
        data[at : at + 50] = rng.randbytes(50)
    data = bytes(data)
    t = time.perf_counter()
    runs = sum(1 for _ in set_runs(data))
    elapsed = time.perf_counter() - t
    assert runs > 3000
    # A per-bit loop would take minutes; per-run work (~300k runs here) takes well under 1 s.
    assert elapsed < 3.0, elapsed
