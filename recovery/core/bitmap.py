"""Allocation bitmaps turned into runs of set bits, fast.

Called by the file system readers (ext4 block bitmaps; anything else that keeps one bit per
allocation unit). Bit order is LSB-first: bit ``i`` is ``(data[i // 8] >> (i % 8)) & 1``, as in
ext2/3/4 and NTFS.

Promise: :func:`set_runs` yields every maximal run of set bits among the first ``nbits`` bits,
in order, as ``(first_bit, count)``; bits at or beyond ``nbits`` are ignored. The work per call is
a few C-level scans of the data (``re``, ``bytes.count``) plus Python work per *run*, never per
bit or per byte: all-zero and all-one stretches are skipped in bulk, so a 64 MiB bitmap (a 2 TB
ext4) costs tens of milliseconds when it is mostly empty or mostly full.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

# Alternating zero and non-zero stretches. Every position starts a match, so the engine never
# searches byte by byte (a searched-for character class costs ~10 ns a byte; a greedy run ~1 ns).
_STRETCH = re.compile(rb"\x00+|[^\x00]+")


def _single_run(byte: int) -> tuple[int, int] | None:
    """(first bit, count) when the set bits of ``byte`` form one contiguous run, else None."""
    if byte == 0:
        return None
    low = (byte & -byte).bit_length() - 1
    shifted = byte >> low
    if shifted & (shifted + 1):
        return None
    return low, shifted.bit_length()


# For a byte whose set bits are one run: that run. A run that starts in a byte and goes on into
# the next must reach bit 7 ("head" bytes 0x80, 0xC0, ..., 0xFF); one that comes from the
# previous byte must start at bit 0 ("tail" bytes 0x01, 0x03, ..., 0xFF).
_SINGLE: tuple[tuple[int, int] | None, ...] = tuple(_single_run(b) for b in range(256))
_HEAD_START: tuple[int, ...] = tuple(
    r[0] if (r := _SINGLE[b]) is not None and r[0] + r[1] == 8 else -1 for b in range(256)
)
_TAIL_COUNT: tuple[int, ...] = tuple(
    r[1] if (r := _SINGLE[b]) is not None and r[0] == 0 else -1 for b in range(256)
)
_BIT_POSITIONS: tuple[tuple[int, ...], ...] = tuple(
    tuple(i for i in range(8) if b >> i & 1) for b in range(256)
)


def _positions(value: int, nbytes: int) -> list[int]:
    """Indices of the set bits of a non-negative int, ascending (Python work per set bit)."""
    raw = value.to_bytes(nbytes, "little")
    out: list[int] = []
    for m in _STRETCH.finditer(raw):
        a, b = m.span()
        if raw[a]:
            out += [i * 8 + k for i in range(a, b) for k in _BIT_POSITIONS[raw[i]]]
    return out


# Fragmented stretches are cut into pieces of this many bytes so that the lists of run
# boundaries stay small (a 64 KiB piece has at most 256 Ki runs).
_PIECE = 64 * 1024


def _runs_of_span(span: bytes, offset: int) -> Iterator[tuple[int, int]]:
    """Runs inside a stretch of non-zero bytes of arbitrary pattern (the fragmented case).

    The starts of runs are the set bits whose lower neighbour is clear; the ends, those whose
    upper neighbour is clear. Both are found with whole-int operations in C, so Python only
    touches each run once. A run cut at a piece boundary is joined again before it is yielded.
    """
    carry: tuple[int, int] | None = None
    for p in range(0, len(span), _PIECE):
        piece = span[p : p + _PIECE]
        x = int.from_bytes(piece, "little")
        nbytes = len(piece) + 1
        base = offset + p * 8
        starts = _positions(x & ~(x << 1), nbytes)
        ends = _positions(x & ~(x >> 1), nbytes)
        runs = [(base + s, e - s + 1) for s, e in zip(starts, ends, strict=True)]
        if carry is not None:
            if runs and runs[0][0] == carry[0] + carry[1]:
                runs[0] = (carry[0], carry[1] + runs[0][1])
            else:
                yield carry
        carry = runs.pop() if runs else None
        yield from runs
    if carry is not None:
        yield carry


def _runs(data: bytes) -> Iterator[tuple[int, int]]:
    for m in _STRETCH.finditer(data):
        a, b = m.span()
        if not data[a]:
            continue
        if b - a == 1:
            single = _SINGLE[data[a]]
            if single is not None:
                yield a * 8 + single[0], single[1]
                continue
        else:
            head = _HEAD_START[data[a]]
            tail = _TAIL_COUNT[data[b - 1]]
            # The common shape: a partial head byte, 0xFF bytes, a partial tail byte.
            if head >= 0 and tail >= 0 and data.count(255, a + 1, b - 1) == b - a - 2:
                yield a * 8 + head, (b - a - 1) * 8 - head + tail
                continue
        yield from _runs_of_span(data[a:b], a * 8)


def set_runs(data: bytes, nbits: int | None = None) -> Iterator[tuple[int, int]]:
    """Maximal runs of set bits as ``(first_bit, count)``, ascending, among the first ``nbits``.

    ``nbits`` defaults to ``8 * len(data)``; it may not exceed it.
    """
    total = 8 * len(data)
    if nbits is None:
        nbits = total
    if not 0 <= nbits <= total:
        raise ValueError(f"nbits {nbits} outside 0..{total}")
    full, rest = divmod(nbits, 8)
    if rest:
        data = data[:full] + bytes((data[full] & ((1 << rest) - 1),))
    elif full < len(data):
        data = data[:full]
    return _runs(data)


def clear_runs(data: bytes, nbits: int | None = None) -> Iterator[tuple[int, int]]:
    """Maximal runs of clear bits among the first ``nbits`` (the complement of set_runs)."""
    total = 8 * len(data)
    if nbits is None:
        nbits = total
    pos = 0
    for start, count in set_runs(data, nbits):
        if start > pos:
            yield pos, start - pos
        pos = start + count
    if pos < nbits:
        yield pos, nbits - pos
