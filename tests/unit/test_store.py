"""Repository format round trips and tamper detection (docs/FORMAT.md), without devices."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from recovery.errors import (
    ImageNotFound,
    IntegrityError,
    NotARepository,
    RepositoryLocked,
    UnsupportedVersion,
)
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
    decode_chunk,
    encode_chunk,
    hash_bytes,
    parse_manifest,
)


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


def test_manifest_round_trip_and_tamper(tmp_path: Path) -> None:
    r = Repository.open(tmp_path / "r", create=True)
    r.write_manifest("img-1", {"name": "img-1", "x": [1, 2]})
    assert r.read_manifest("img-1")["x"] == [1, 2]
    path = r.manifest_path("img-1")
    blob = bytearray(path.read_bytes())
    for offset in (0, 4, 8, 14, len(blob) - 1):
        bad = bytearray(blob)
        bad[offset] ^= 1
        with pytest.raises((IntegrityError, UnsupportedVersion)):
            parse_manifest(bytes(bad), "m")
    with pytest.raises(IntegrityError, match="truncated"):
        parse_manifest(bytes(blob[:-3]), "m")


def test_manifest_from_newer_version_is_refused_clearly() -> None:
    body = b"{}"
    head = MANIFEST_HEADER.pack(b"RIMG", 2, 0, len(body))
    blob = head + body + hash_bytes(head + body)
    with pytest.raises(UnsupportedVersion, match="newer recovery"):
        parse_manifest(blob, "m")


def test_missing_image_names_the_others(tmp_path: Path) -> None:
    r = Repository.open(tmp_path / "r", create=True)
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


def test_map_random_access(tmp_path: Path) -> None:
    r = Repository.open(tmp_path / "r", create=True)
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
