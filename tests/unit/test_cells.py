from hypothesis import given
from hypothesis import strategies as st

from recovery.core.cells import cells, gaps
from recovery.core.extents import merge


def test_cells_split_at_boundaries() -> None:
    got = list(cells([(100, 2000), (5000, 10)], 1024, 6000))
    assert [c.number for c in got] == [0, 1, 2, 4]
    assert got[0].pieces == ((100, 924),)
    assert got[2].pieces == ((0, 52),)
    assert got[3].pieces == ((904, 10),)
    assert got[3].size == 1024


def test_last_cell_short() -> None:
    (c,) = list(cells([(0, 10)], 1024, 10))
    assert c.size == 10


@given(st.lists(st.tuples(st.integers(0, 5000), st.integers(1, 700)), max_size=20))
def test_cells_cover_exactly_the_extents(raw: list[tuple[int, int]]) -> None:
    ext = list(merge(sorted(raw)))
    size = 6000
    want = {i for s, n in ext for i in range(s, min(s + n, size))}
    got = {
        c.number * 512 + o + k for c in cells(ext, 512, size) for o, n in c.pieces for k in range(n)
    }
    assert got == want


def test_gaps_caps_large_ones() -> None:
    assert gaps(100, [(10, 20), (40, 10)], cap=1000, keep=5) == [(0, 10), (30, 10), (50, 50)]
    assert gaps(100, [(10, 20)], cap=30, keep=5) == [(0, 10), (30, 5), (95, 5)]
