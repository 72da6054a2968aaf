"""The pure parts of the image view (issue 12): disk.img assembly, the cell cache, pN:/path."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recovery.core.view import (
    CellCache,
    DiskLayout,
    Piece,
    Placed,
    ReadAhead,
    parse_image_path,
)
from recovery.errors import UsageError


def layout() -> DiskLayout:
    # A 100-byte disk: layout stream over 90 bytes, p1 at 10..30, p2 at 50..95 (past the
    # layout stream's end), nothing at 95..100.
    return DiskLayout(100, Placed("disk", 0, 90), [Placed("p2", 50, 45), Placed("p1", 10, 20)])


def test_pieces_of_the_whole_disk() -> None:
    assert list(layout().pieces(0, 100)) == [
        Piece("disk", 0, 10),
        Piece("p1", 0, 20),
        Piece("disk", 30, 20),
        Piece("p2", 0, 45),
        Piece(None, 0, 5),
    ]


def test_pieces_of_a_range_inside_and_past_the_end() -> None:
    lay = layout()
    assert list(lay.pieces(15, 20)) == [Piece("p1", 5, 15), Piece("disk", 30, 5)]
    assert list(lay.pieces(90, 50)) == [Piece("p2", 40, 5), Piece(None, 0, 5)]
    assert list(lay.pieces(100, 10)) == []


def test_no_layout_stream_reads_zeros_between_partitions() -> None:
    lay = DiskLayout(40, None, [Placed("p1", 8, 8)])
    assert list(lay.pieces(0, 40)) == [Piece(None, 0, 8), Piece("p1", 0, 8), Piece(None, 0, 24)]


def test_overlapping_partitions_are_refused() -> None:
    with pytest.raises(ValueError):
        DiskLayout(100, None, [Placed("p1", 0, 50), Placed("p2", 40, 20)])


@given(st.integers(0, 120), st.integers(0, 120))
def test_pieces_cover_exactly_the_range(offset: int, length: int) -> None:
    """Bytes assembled from the pieces equal a disk built by writing each stream in place."""
    disk = bytearray(100)
    streams = {"disk": bytes(range(100, 190)), "p1": bytes(range(20)), "p2": bytes(range(45))}
    disk[0:90] = streams["disk"]
    disk[10:30] = streams["p1"]
    disk[50:95] = streams["p2"]
    got = b"".join(
        bytes(p.length) if p.stream is None else streams[p.stream][p.offset : p.offset + p.length]
        for p in layout().pieces(offset, length)
    )
    assert got == bytes(disk[offset : offset + length])


def test_cache_is_bounded_by_bytes_and_evicts_least_recently_used() -> None:
    cache = CellCache(limit=10)
    loads: list[str] = []

    def load(key: str, size: int):  # type: ignore[no-untyped-def]
        def f() -> bytes:
            loads.append(key)
            return bytes(size)

        return f

    cache.get("a", load("a", 4))
    cache.get("b", load("b", 4))
    cache.get("a", load("a", 4))  # a is now the most recent
    cache.get("c", load("c", 4))  # 12 > 10: b goes
    assert cache.size == 8 and "a" in cache and "c" in cache and "b" not in cache
    assert loads == ["a", "b", "c"]
    cache.get("big", load("big", 11))  # larger than the whole cache: served, not kept
    assert "big" not in cache and cache.size == 8


def test_cache_loads_once_for_concurrent_readers_and_does_not_keep_errors() -> None:
    cache = CellCache(limit=100)
    calls = 0

    def slow() -> bytes:
        nonlocal calls
        calls += 1
        time.sleep(0.05)
        return b"x" * 10

    threads = [threading.Thread(target=cache.get, args=("k", slow)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == 1

    def broken() -> bytes:
        raise OSError(5, "Input/output error")

    for _ in range(2):
        with pytest.raises(OSError):
            cache.get("bad", broken)
    assert "bad" not in cache


def test_parse_image_path() -> None:
    assert parse_image_path("p2:/home/alice/thesis") == (2, "/home/alice/thesis")
    assert parse_image_path("p1:") == (1, "/")
    assert parse_image_path("p10:home//x/./y/") == (10, "/home/x/y")
    assert parse_image_path("p3:/../../etc") == (3, "/etc")
    for bad in ("/home", "2:/x", "p:/x", "px:/x", "disk:/x"):
        with pytest.raises(UsageError):
            parse_image_path(bad)


def _partition(fstype: str | None, method: str = "used-blocks") -> Any:
    from recovery.engine.view import Partition
    from recovery.repository.maps import StreamInfo

    stream = StreamInfo("p1", 1 << 20, 1, (bytes(32),), method, {"fstype": fstype})
    return Partition(1, stream, fstype)


@pytest.mark.parametrize(
    ("fstype", "method", "reason"),
    [
        ("swap", "swap-header", "a swap area holds no files"),
        (None, "raw", "no file system recognised (read pN.img as raw bytes)"),
        ("crypto_LUKS", "raw", "crypto_LUKS: no read-only mount known for this file system"),
    ],
)
def test_partitions_without_files_get_one_line_reason(
    fstype: str | None, method: str, reason: str
) -> None:
    """Decided before anything is run: no loop device, no mount, for these."""
    from recovery.engine.view import mount_partition

    p = _partition(fstype, method)
    mount_partition(p, "/nonexistent/p1.img", "/nonexistent/p1")
    assert (p.mounted, p.loop, p.reason) == (False, None, reason)


def test_every_mount_is_read_only_and_never_replays_or_clears() -> None:
    from recovery.filesystems.mounts import MOUNTS

    for fstype, ways in MOUNTS.items():
        for how, options in ways:
            opts = options.split(",")
            assert "ro" in opts, fstype
            assert "remove_hiberfile" not in opts and "rw" not in opts, fstype
            if how == "kernel" and fstype.startswith("ext"):
                assert "noload" in opts
    assert MOUNTS["xfs"][0][1] == "ro,norecovery"
    assert MOUNTS["btrfs"][0][1] == "ro,rescue=nologreplay"


def test_read_ahead_only_for_a_reader_going_on_in_order() -> None:
    ahead = ReadAhead(depth=3, after=2)
    # A small file crossing one cell boundary loads nothing beyond its cells.
    assert list(ahead.note("p1", 10)) == []
    assert list(ahead.note("p1", 11)) == []
    # A second boundary crossed in order: the next three cells.
    assert list(ahead.note("p1", 12)) == [13, 14, 15]
    # Requests arriving a little out of order neither start nor break the run.
    assert list(ahead.note("p1", 11)) == []
    assert list(ahead.note("p1", 12)) == []
    assert list(ahead.note("p1", 13)) == [14, 15, 16]
    # Each stream has its own run; a jump elsewhere starts a new one.
    assert list(ahead.note("p2", 13)) == []
    assert list(ahead.note("p1", 40)) == []
    assert list(ahead.note("p1", 41)) == []
    assert list(ahead.note("p1", 42)) == [43, 44, 45]
    # Repeated reads inside one cell (metadata) never read ahead.
    for _ in range(5):
        assert list(ahead.note("disk", 0)) == []
