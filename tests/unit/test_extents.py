import itertools

from hypothesis import given
from hypothesis import strategies as st

from recovery.core.extents import Extent, clip, merge, total


def test_merge_touching_and_overlapping() -> None:
    assert list(merge([(0, 10), (10, 5), (12, 10), (40, 1)])) == [Extent(0, 22), Extent(40, 1)]


def test_clip() -> None:
    assert list(clip([(0, 10), (20, 10), (40, 5)], 25)) == [Extent(0, 10), Extent(20, 5)]


@given(st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 50))))
def test_merge_preserves_coverage(raw: list[tuple[int, int]]) -> None:
    raw.sort()
    covered = {i for s, n in raw for i in range(s, s + n)}
    merged = list(merge(raw))
    assert total(merged) == len(covered)
    assert all(a.end < b.start for a, b in itertools.pairwise(merged))
