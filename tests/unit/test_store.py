"""Repository format round trips and tamper detection (docs/FORMAT.md), without devices.

Tests that take ``new_repo`` run twice: over a local folder and over :class:`MemoryBackend`
(no rename, no flock, no folder), which keeps every format rule above the storage backend.
"""

from __future__ import annotations

import json
import os
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from recovery.errors import (
    ImageNotFound,
    IntegrityError,
    NotARepository,
    RepositoryError,
    RepositoryLocked,
    UnsupportedVersion,
    UsageError,
)
from recovery.repository.images import collect_garbage, remove_image
from recovery.repository.kinds import open_backend
from recovery.repository.maps import (
    DATA,
    RECORDS_PER_MAP_CHUNK,
    ZERO,
    MapWriter,
    StreamInfo,
    StreamReader,
)
from recovery.repository.store import (
    MANIFEST_HEADER,
    Repository,
    chunk_name,
    decode_chunk,
    encode_chunk,
    hash_bytes,
    parse_manifest,
)
from tests.unit.memory_backend import MemoryBackend

NewRepo = Callable[[], Repository]


@pytest.fixture(params=["folder", "memory"])
def new_repo(request: pytest.FixtureRequest, tmp_path: Path) -> NewRepo:
    """Makes a new repository on the backend under test."""
    count = iter(range(1000))

    def make() -> Repository:
        if request.param == "folder":
            return Repository.open(tmp_path / f"r{next(count)}", create=True)
        return Repository.open(MemoryBackend(f"memory://r{next(count)}"), create=True)

    return make


def test_new_repository_in_missing_or_empty_dir(tmp_path: Path) -> None:
    r = Repository.open(tmp_path / "new", create=True)
    assert (tmp_path / "new" / "recovery-repo").exists()
    assert Repository.open(tmp_path / "new").info.id == r.info.id
    (tmp_path / "empty").mkdir()
    Repository.open(tmp_path / "empty", create=True)


def test_refuses_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"x")
    with pytest.raises(NotARepository, match="not empty"):
        Repository.open(tmp_path / "photos", create=True)
    assert os.listdir(tmp_path / "photos") == ["cat.jpg"]


def test_refuses_newer_repository(tmp_path: Path) -> None:
    Repository.open(tmp_path / "r", create=True)
    (tmp_path / "r" / "recovery-repo").write_text(
        json.dumps({"format": "recovery-repository", "version": 9})
    )
    with pytest.raises(UnsupportedVersion, match="newer recovery"):
        Repository.open(tmp_path / "r")


@pytest.mark.parametrize("data", [b"a" * 100000, os.urandom(5000), b"\0" * 7])
def test_chunk_round_trip(data: bytes) -> None:
    digest = hash_bytes(data)
    assert decode_chunk(encode_chunk(data, 3), digest, "t") == data


@pytest.mark.parametrize("offset", [0, 5, 9, 13, 16, 40, -1])
def test_flipped_chunk_byte_is_detected(offset: int) -> None:
    data = b"hello world " * 5000
    blob = bytearray(encode_chunk(data, 3))
    blob[offset] ^= 0x40
    with pytest.raises(IntegrityError, match=hash_bytes(data).hex()):
        decode_chunk(bytes(blob), hash_bytes(data), "t")


def test_truncated_chunk() -> None:
    data = os.urandom(3000)
    with pytest.raises(IntegrityError, match="truncated"):
        decode_chunk(encode_chunk(data, 3)[:-1], hash_bytes(data), "t")


def test_manifest_round_trip_and_tamper(new_repo: NewRepo) -> None:
    r = new_repo()
    r.write_manifest("img-1", {"name": "img-1", "x": [1, 2]})
    assert r.read_manifest("img-1")["x"] == [1, 2]
    blob = bytearray(r.backend.read("images/img-1.image"))
    for offset in (0, 4, 8, 14, len(blob) - 1):
        bad = bytearray(blob)
        bad[offset] ^= 1
        with pytest.raises((IntegrityError, UnsupportedVersion)):
            parse_manifest(bytes(bad), "m")
    with pytest.raises(IntegrityError, match="truncated"):
        parse_manifest(bytes(blob[:-3]), "m")


def test_manifest_from_newer_version_is_refused_clearly() -> None:
    body = b"{}"
    # Version 2 is a file image's (FORMAT.md, "File images"): 3 is the first one unknown.
    head = MANIFEST_HEADER.pack(b"RIMG", 3, 0, len(body))
    blob = head + body + hash_bytes(head + body)
    with pytest.raises(UnsupportedVersion, match="newer recovery"):
        parse_manifest(blob, "m")


def test_missing_image_names_the_others(new_repo: NewRepo) -> None:
    r = new_repo()
    r.write_manifest("one", {})
    with pytest.raises(ImageNotFound, match="one"):
        r.read_manifest("two")


def test_lock_is_exclusive_and_dies_with_holder(tmp_path: Path) -> None:
    r = Repository.open(tmp_path / "r", create=True)
    with r.locked("test"):
        other = Repository.open(tmp_path / "r")
        pid = os.fork()
        if pid == 0:  # a separate process: flock conflicts across open file descriptions
            try:
                with other.locked("second"):
                    os._exit(1)
            except RepositoryLocked:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    with r.locked("again"):
        pass


def test_a_writer_asked_to_wait_waits_for_the_lock(new_repo: NewRepo) -> None:
    """With --wait, a second writer waits (told once) and then works; nothing overlaps."""
    from recovery.repository.store import wait_for_writers

    r = new_repo()
    holding, release = threading.Event(), threading.Event()
    order: list[str] = []

    def first() -> None:
        with r.locked("first"):
            order.append("first in")
            holding.set()
            release.wait(10)
            order.append("first out")

    t = threading.Thread(target=first)
    t.start()
    holding.wait(10)
    told: list[str] = []

    def tell(line: str) -> None:  # the first lets go only once the second was told it waits
        told.append(line)
        release.set()

    wait_for_writers(30, tell)
    try:
        with r.locked("second"):
            order.append("second in")
    finally:
        wait_for_writers(0)
        t.join()
    assert order == ["first in", "first out", "second in"]
    assert len(told) == 1 and "waiting for it" in told[0] and "first" in told[0]


def test_map_random_access(new_repo: NewRepo) -> None:
    r = new_repo()
    cell = 65536
    cells = RECORDS_PER_MAP_CHUNK + 10
    size = cells * cell - 100
    w = MapWriter(r, 3)
    payloads = {}
    for i in range(cells):
        length = min(cell, size - i * cell)
        if i % 1000 == 7 or i == cells - 1:
            data = bytes([i % 251]) * length
            d = hash_bytes(data)
            r.put_chunk(d, data, 3)
            payloads[i] = data
            w.add(DATA, length, d)
        else:
            w.add(ZERO if i % 2 else 0, length)
    hashes = w.finish()
    assert len(hashes) == 2
    info = StreamInfo.from_manifest(
        {"id": "p1", "size": size, "cells": cells, "map": hashes, "method": "raw"}, cell, "t"
    )
    reader = StreamReader(r, info, cell, "img")
    last = cells - 1
    assert reader.pread(last * cell, 10) == payloads[last][:10]
    assert reader.pread(7 * cell - 5, 10) == b"\0" * 5 + payloads[7][:5]
    assert reader.pread(size - 3, 100) == payloads[last][-3:]
    assert reader.record(RECORDS_PER_MAP_CHUNK + 1).kind == ZERO


def test_map_record_struct_is_40_bytes() -> None:
    from recovery.repository.maps import RECORD

    assert RECORD.size == 40
    assert struct.calcsize("<4sBBHII") == 16


def test_lock_refuses_a_second_writer(new_repo: NewRepo) -> None:
    r = new_repo()
    with r.locked("first"), pytest.raises(RepositoryLocked, match="first"), r.locked("second"):
        pass
    with r.locked("again"):
        pass


def test_lock_clears_temporaries_but_not_removal_markers(new_repo: NewRepo) -> None:
    r = new_repo()
    r.backend.write("tmp/half-a-chunk.123", b"x")
    r.backend.write("tmp/gone.image.removing", b"x")
    with r.locked("t"):
        pass
    assert [f.name for f in r.backend.list("tmp")] == ["tmp/gone.image.removing"]


def _image(r: Repository, name: str, payloads: list[bytes]) -> None:
    cell = 65536
    w = MapWriter(r, 1)
    for data in payloads:
        d = hash_bytes(data)
        r.put_chunk(d, data, 1)
        w.add(DATA, cell, d)
    stream = {"id": "p1", "size": cell * len(payloads), "cells": len(payloads), "method": "raw"}
    r.flush()
    r.write_manifest(name, {"cell_size": cell, "streams": [{**stream, "map": w.finish()}]})


def test_put_chunk_is_written_once(new_repo: NewRepo) -> None:
    r = new_repo()
    data = os.urandom(1000)
    d = hash_bytes(data)
    assert r.put_chunk(d, data, 3) > 0
    assert r.put_chunk(d, data, 3) == 0
    assert r.has_chunk(d)
    assert r.get_chunk(d) == data
    assert [digest for digest, _ in r.iter_chunks()] == [d]


def test_remove_frees_only_what_no_other_image_uses(new_repo: NewRepo) -> None:
    r = new_repo()
    shared, only_a, only_b = (bytes([i]) * 65536 for i in (1, 2, 3))
    _image(r, "a", [shared, only_a])
    _image(r, "b", [shared, only_b])
    before = {d for d, _ in r.iter_chunks()}
    freed = remove_image(r, "a")
    after = {d for d, _ in r.iter_chunks()}
    assert freed > 0
    assert len(before - after) == 2  # a's own data chunk and its map chunk
    assert hash_bytes(only_a) not in after
    assert {hash_bytes(shared), hash_bytes(only_b)} <= after
    assert r.image_names() == ["b"]
    assert not list(r.backend.list("tmp"))
    with pytest.raises(ImageNotFound, match="b"):
        remove_image(r, "a")


def test_interrupted_removal_is_finished_by_the_next(new_repo: NewRepo) -> None:
    """A crash after the manifest went (FORMAT.md, "Removing an image", step 2) loses nothing:
    the image is gone, and removing it again sweeps its chunks."""
    r = new_repo()
    _image(r, "a", [b"\1" * 65536])
    _image(r, "b", [b"\2" * 65536])
    with r.locked("remove a"):
        assert r.retire_manifest("a")
    assert r.image_names() == ["b"]
    assert r.has_chunk(hash_bytes(b"\1" * 65536))
    remove_image(r, "a")
    assert not r.has_chunk(hash_bytes(b"\1" * 65536))
    assert r.has_chunk(hash_bytes(b"\2" * 65536))
    assert r.read_manifest("b")


def test_garbage_collection_keeps_every_referenced_chunk(new_repo: NewRepo) -> None:
    r = new_repo()
    _image(r, "a", [os.urandom(65536) for _ in range(3)])
    stray = os.urandom(100)
    r.put_chunk(hash_bytes(stray), stray, 1)
    with r.locked("gc"):
        assert collect_garbage(r) > 0
    assert not r.has_chunk(hash_bytes(stray))
    assert len(list(r.iter_chunks())) == 4  # 3 data + 1 map


def test_full_location_is_one_clear_error(tmp_path: Path) -> None:
    backend = MemoryBackend()
    r = Repository.open(backend, create=True)
    backend.full = True
    data = os.urandom(100)
    with pytest.raises(RepositoryError, match="is full"):
        r.put_chunk(hash_bytes(data), data, 1)


def test_backend_without_rename_removes_through_a_durable_marker() -> None:
    backend = MemoryBackend()
    r = Repository.open(backend, create=True)
    r.write_manifest("a", {})
    assert "images/a.image" in backend.durable
    with r.locked("remove a"):
        r.retire_manifest("a")
        assert "tmp/a.image.removing" in backend.durable
        assert backend.size("images/a.image") is None


@pytest.mark.parametrize("kind", ["folder", "memory"])
def test_backend_reads_are_sized_by_the_file(kind: str, tmp_path: Path) -> None:
    """read() returns at most what is there however large ``length`` is (a chunk is read with
    the largest chunk's size as its length); read_into() fills a reused buffer or says how
    large it must be."""
    from recovery.repository.local import LocalFolder

    b = LocalFolder(tmp_path / "b") if kind == "folder" else MemoryBackend()
    b.create()
    data = os.urandom(300_000)
    b.write("chunks/ab/x", data)
    assert b.read("chunks/ab/x") == data
    assert b.read("chunks/ab/x", 0, 64 << 20) == data
    assert b.read("chunks/ab/x", 1000, 10) == data[1000:1010]
    assert b.read("chunks/ab/x", 299_990, 100) == data[299_990:]
    assert b.read("chunks/ab/x", 400_000, 100) == b""
    buf = bytearray(b"\xff" * 400_000)
    assert b.read_into("chunks/ab/x", buf) == len(data)
    assert buf[: len(data)] == data
    small = bytearray(1000)
    assert b.read_into("chunks/ab/x", small) == len(data)  # too small: nothing promised
    b.write("chunks/ab/empty", b"")
    assert b.read("chunks/ab/empty") == b"" and b.read_into("chunks/ab/empty", buf) == 0
    with pytest.raises(FileNotFoundError):
        b.read("chunks/ab/missing")
    with pytest.raises(FileNotFoundError):
        b.read_into("chunks/ab/missing", buf)


def test_chunks_read_through_reused_buffers_stay_intact(new_repo: NewRepo) -> None:
    """get_chunk reads each chunk file into a buffer its thread reuses: what it returned before
    must not change when the next chunk is read, in one thread or many, whatever the sizes
    (a raw chunk larger than the first buffer makes it grow)."""
    r = new_repo()
    payloads = [os.urandom(3 << 20), b"small" * 100, os.urandom(1 << 20) * 2, b"\0x" * 70000]
    payloads += [os.urandom(n) for n in (10, 700_000, 2_500_000)]
    digests = [r.hash(p) for p in payloads]
    for d, p in zip(digests, payloads, strict=True):
        r.put_chunk(d, p, 1)
    got = [r.get_chunk(d, "t") for d in digests]
    assert got == payloads
    with ThreadPoolExecutor(3) as pool:
        for _ in range(3):
            assert list(pool.map(lambda d: r.get_chunk(d, "t"), digests * 3)) == payloads * 3
    assert got == payloads


def test_chunk_names_follow_the_format() -> None:
    d = bytes(range(32))
    assert chunk_name(d) == f"chunks/00/{d.hex()}"


@pytest.mark.parametrize("address", ["ftp://host/x", "smbb://typo/x", "nfs://host"])
def test_unknown_location_kind_is_refused_before_anything_is_made(
    address: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=r"smb://|EXPORT") as refused:
        open_backend(address)
    assert "\n" not in str(refused.value)
    with pytest.raises(UsageError):
        Repository.open(address, create=True)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "entries", [["lost+found"], ["System Volume Information", "$RECYCLE.BIN", ".Trash-1000"]]
)
def test_a_fresh_file_systems_root_counts_as_empty(entries: list[str], tmp_path: Path) -> None:
    for e in entries:
        (tmp_path / "stick" / e).mkdir(parents=True)
    r = Repository.open(tmp_path / "stick", create=True)
    assert Repository.open(tmp_path / "stick").info.id == r.info.id
    # "lock": creating a location takes the writers' lock (FORMAT.md, "Locking").
    expected = [*entries, "lock", "recovery-repo", "tmp"]
    assert sorted(os.listdir(tmp_path / "stick")) == sorted(expected)


def test_threads_reading_one_cell_at_once_fetch_it_once(new_repo: NewRepo) -> None:
    """StreamReader.cell_data: the threads that ask for a cell while another fetches it wait
    for that one (the ext4 delta reads two inode tables of one cell on two threads)."""
    r = new_repo()
    cell = 65536
    data = os.urandom(cell)
    digest = hash_bytes(data)
    r.put_chunk(digest, data, 3)
    w = MapWriter(r, 3)
    w.add(DATA, cell, digest)
    info = StreamInfo.from_manifest(
        {"id": "p1", "size": cell, "cells": 1, "map": w.finish(), "method": "raw"}, cell, "t"
    )
    reader = StreamReader(r, info, cell, "img")
    reader.record(0)  # the map chunk, fetched before the threads start
    fetched: list[bytes] = []
    started = threading.Event()
    get_chunk = r.get_chunk

    def slow_get_chunk(d: bytes, where: str = "", stored: bytes | None = None) -> bytes:
        fetched.append(d)
        started.set()
        time.sleep(0.2)
        return get_chunk(d, where, stored)

    r.get_chunk = slow_get_chunk  # type: ignore[method-assign]
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(reader.pread, 0, 100)
        started.wait()
        rest = [pool.submit(reader.pread, k * 1000, 100) for k in range(1, 4)]
        got = [first.result()] + [f.result() for f in rest]
    assert fetched == [digest]
    assert got == [data[k * 1000 : k * 1000 + 100] for k in range(4)]
