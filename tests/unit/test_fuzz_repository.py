"""Hostile backup locations (issue 8): fuzzing every parser of what a repository holds.

A backup location is read by whoever plugs it in, so chunk files, manifests, maps and the
repository header are untrusted input. For each parser the promise is: any input gives a correct
result or one of our own errors (:class:`recovery.errors.RecoveryError`), never another
exception, a hang or an allocation beyond the format's limits. Bounded for CI: every test here
runs a fixed number of examples (the whole file takes a few seconds).

Damage the parsers must also *detect* (not just survive) is checked as a property: any byte
flipped in a valid chunk or manifest is reported, never accepted.

Inputs a fuzzer once found to break a parser are kept below as plain examples, so the fix
stays fixed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import zstandard
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from recovery.engine.images import cell_size_of, image_info, list_images, streams_of, verify_image
from recovery.engine.progress import CancelToken, NullProgress
from recovery.errors import IntegrityError, RecoveryError, UnsupportedVersion
from recovery.repository.maps import (
    DATA,
    RECORD,
    RECORDS_PER_MAP_CHUNK,
    ZERO,
    MapWriter,
    StreamInfo,
    StreamReader,
)
from recovery.repository.store import (
    CHUNK_HEADER,
    MANIFEST_HEADER,
    Repository,
    decode_chunk,
    encode_chunk,
    hash_bytes,
    parse_manifest,
)

FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
FEW = settings(FUZZ, max_examples=60)
# For a fuzzer that is expected to fail until a known bug is fixed: no time spent shrinking.
NO_SHRINK = settings(FUZZ, phases=[Phase.explicit, Phase.generate])

CELL = 65536

# JSON as json.loads gives it back (NaN and Infinity included: Python's json accepts them).
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["", "0", "p1", "disk", "a" * 64, "00" * 32, "zz" * 32, "-1", "1e9"])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def ours(fn: Any, *args: Any) -> Any:
    """Call ``fn``; our own errors are a fine answer to hostile input, nothing else is."""
    try:
        return fn(*args)
    except RecoveryError as e:
        assert e.message  # every error says something
        return None


def manifest_blob(body: bytes, version: int = 1, length: int | None = None) -> bytes:
    head = MANIFEST_HEADER.pack(b"RIMG", version, 0, len(body) if length is None else length)
    return head + body + hash_bytes(head + body)


# -- a real repository with one real image, shared by the tests ---------------------------------


class Sample:
    def __init__(self, repo: Repository, body: dict[str, Any], map_chunk: bytes) -> None:
        self.repo = repo
        self.body = body
        self.map_chunk = map_chunk


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    repo = Repository.open(tmp_path_factory.mktemp("fuzz") / "repo", create=True)
    size = 5 * CELL - 123
    w = MapWriter(repo, 1)
    for i in range(5):
        length = min(CELL, size - i * CELL)
        if i in (1, 4):
            data = bytes([i]) * 100 + os.urandom(length - 100)
            d = hash_bytes(data)
            repo.put_chunk(d, data, 1)
            w.add(DATA, length, d)
        else:
            w.add(ZERO if i == 2 else 0, length)
    hashes = w.finish()
    body = {
        "name": "img",
        "created": "2026-01-01T00:00:00Z",
        "tool": "recovery 0.1.0",
        "cell_size": CELL,
        "source": {"path": "/dev/sda", "model": "m", "serial": "s", "size": 10 * CELL},
        "table": {"label": "gpt", "id": "X", "sectorsize": 512, "partitions": []},
        "whole_disk": True,
        "streams": [
            {
                "id": "p1",
                "number": 1,
                "start": 0,
                "size": size,
                "method": "raw",
                "cells": 5,
                "map": hashes,
                "data_bytes": 2 * CELL,
            }
        ],
        "unreadable": [["p1", 4096, 4096]],
    }
    repo.write_manifest("img", body)
    return Sample(repo, body, repo.get_chunk(bytes.fromhex(hashes[0])))


def test_sample_is_sound(sample: Sample) -> None:
    info = image_info(sample.repo, "img", sample.body)
    assert info.data_size == 2 * CELL and info.partitions[0].number == 1
    assert verify_image(sample.repo.location, "img", NullProgress(), CancelToken()).ok


# -- chunk files --------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=200), st.binary(min_size=32, max_size=32))
def test_fuzz_decode_chunk_random_bytes(blob: bytes, expected: bytes) -> None:
    ours(decode_chunk, blob, expected, "fuzz")


@FUZZ
@given(
    magic=st.sampled_from([b"RCK1", b"RCK2", b"\0\0\0\0"]),
    version=st.integers(0, 255),
    compression=st.integers(0, 255),
    reserved=st.integers(0, 65535),
    raw_length=st.integers(0, 2**32 - 1),
    payload=st.binary(max_size=300)
    | st.builds(lambda n: zstandard.compress(bytes(n)), st.integers(0, 1 << 20)),
    stored_delta=st.integers(-3, 3),
)
def test_fuzz_decode_chunk_headers(
    magic: bytes,
    version: int,
    compression: int,
    reserved: int,
    raw_length: int,
    payload: bytes,
    stored_delta: int,
) -> None:
    """Any header field value, zstd frames that lie about their size (or expand to 1 MiB of
    zeros from a few bytes): our error or the exact bytes, and never more memory than the
    64 MiB a chunk may hold."""
    stored = max(0, len(payload) + stored_delta)
    blob = CHUNK_HEADER.pack(magic, version, compression, reserved, raw_length, stored) + payload
    raw = ours(decode_chunk, blob, hash_bytes(b"whatever"), "fuzz")
    assert raw is None  # the hash can never match


@FUZZ
@given(st.binary(min_size=1, max_size=5000), st.data())
def test_any_flipped_chunk_byte_is_detected(raw: bytes, data: st.DataObject) -> None:
    blob = bytearray(encode_chunk(raw, 3))
    at = data.draw(st.integers(0, len(blob) - 1))
    blob[at] ^= data.draw(st.integers(1, 255))
    with pytest.raises(IntegrityError):
        decode_chunk(bytes(blob), hash_bytes(raw), "fuzz")


@FUZZ
@given(st.binary(min_size=1, max_size=5000), st.integers(0, 5020))
def test_truncated_chunk_is_detected(raw: bytes, keep: int) -> None:
    blob = encode_chunk(raw, 3)
    if keep >= len(blob):
        return
    with pytest.raises(IntegrityError):
        decode_chunk(blob[:keep], hash_bytes(raw), "fuzz")


# -- manifests ----------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_parse_manifest_random_bytes(blob: bytes) -> None:
    ours(parse_manifest, blob, "fuzz")


@FUZZ
@given(st.binary(max_size=300), st.integers(0, 65535), st.integers(0, 2**32 - 1) | st.none())
def test_fuzz_parse_manifest_bodies(body: bytes, version: int, length: int | None) -> None:
    """A correct trailing hash over any body, version and length field."""
    result = ours(parse_manifest, manifest_blob(body, version, length), "fuzz")
    assert result is None or isinstance(result, dict)


@FUZZ
@given(json_values)
def test_fuzz_parse_manifest_json(value: Any) -> None:
    body = json.dumps(value).encode()
    result = ours(parse_manifest, manifest_blob(body), "fuzz")
    if isinstance(value, dict):
        assert result is not None
    else:
        assert result is None


@FUZZ
@given(st.data())
def test_any_flipped_manifest_byte_is_detected(sample: Sample, data: st.DataObject) -> None:
    blob = bytearray(manifest_blob(json.dumps(sample.body).encode()))
    at = data.draw(st.integers(0, len(blob) - 1))
    blob[at] ^= data.draw(st.integers(1, 255))
    with pytest.raises((IntegrityError, UnsupportedVersion)):
        parse_manifest(bytes(blob), "fuzz")


def test_deeply_nested_manifest_body_is_our_error() -> None:
    """Found by fuzzing: json.loads raises RecursionError on deep nesting (a crafted manifest
    of 200 KB)."""
    depth = 100_000
    blob = manifest_blob(b"[" * depth + b"]" * depth)
    with pytest.raises(IntegrityError):
        parse_manifest(blob, "fuzz")


# -- stream descriptions and maps ---------------------------------------------------------------

stream_keys = st.sampled_from(["id", "size", "cells", "map", "method", "number", "start"])


@st.composite
def mutated_stream(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    s = dict(base)
    for _ in range(draw(st.integers(1, 3))):
        key = draw(stream_keys)
        if draw(st.booleans()):
            s[key] = draw(json_values)
        else:
            s.pop(key, None)
    return s


@FUZZ
@given(st.data())
def test_fuzz_stream_info(sample: Sample, data: st.DataObject) -> None:
    s = data.draw(mutated_stream(sample.body["streams"][0]) | json_values)
    info = ours(StreamInfo.from_manifest, s, CELL, "fuzz")
    if info is not None:
        assert info.cells == -(-info.size // CELL) and info.size >= 0


def test_stream_size_infinity_is_our_error() -> None:
    s = {"id": "p1", "size": math.inf, "cells": 1, "map": [], "method": "raw"}
    with pytest.raises(IntegrityError):
        StreamInfo.from_manifest(s, CELL, "fuzz")


@FUZZ
@given(st.data())
def test_fuzz_map_records(sample: Sample, data: st.DataObject) -> None:
    """Random map bytes (any kind, length and hash per record, any total length) read through
    StreamReader: records, cell data and byte ranges are right or our error."""
    cells = data.draw(st.integers(1, 8))
    records = data.draw(st.integers(0, 9))
    raw = b"".join(
        RECORD.pack(
            data.draw(st.sampled_from([0, 1, 2, 3, 255])),
            data.draw(st.sampled_from([0, 1, CELL - 123, CELL, CELL + 1, 2**32 - 1])),
            data.draw(st.sampled_from([bytes(32), hash_bytes(b"x"), *sample_hashes(sample)])),
        )
        for _ in range(records)
    )
    raw += data.draw(st.binary(max_size=3))
    if not raw:
        return
    digest = hash_bytes(raw)
    sample.repo.put_chunk(digest, raw, 1)
    size = data.draw(st.integers((cells - 1) * CELL + 1, cells * CELL))
    info = StreamInfo.from_manifest(
        {"id": "p9", "size": size, "cells": cells, "map": [digest.hex()], "method": "raw"},
        CELL,
        "fuzz",
    )
    reader = StreamReader(sample.repo, info, CELL, "fuzz")
    for cell in range(cells):
        rec = ours(reader.record, cell)
        if rec is not None:
            assert rec.kind in (0, 1, 2) and rec.length == min(CELL, size - cell * CELL)
            got = ours(reader.cell_data, cell)
            assert got is None or len(got) == rec.length
    offset = data.draw(st.integers(0, size))
    length = data.draw(st.integers(0, 3 * CELL))
    got = ours(reader.pread, offset, length)
    assert got is None or len(got) == min(length, size - offset)


def sample_hashes(sample: Sample) -> list[bytes]:
    return [digest for kind, _, digest in RECORD.iter_unpack(sample.map_chunk) if kind == DATA]


def test_map_chunk_count_must_fit_cells(sample: Sample) -> None:
    s = dict(sample.body["streams"][0], cells=RECORDS_PER_MAP_CHUNK + 1)
    s["size"] = s["cells"] * CELL
    with pytest.raises(IntegrityError, match="map list"):
        StreamInfo.from_manifest(s, CELL, "fuzz")


# -- whole manifest bodies: images, verify, restore notes --------------------------------------

body_keys = st.sampled_from(
    ["cell_size", "streams", "source", "table", "created", "unreadable", "whole_disk", "name"]
)


@st.composite
def mutated_body(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    body = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            body["streams"] = [draw(mutated_stream(base["streams"][0]))]
        elif draw(st.booleans()):
            body[draw(body_keys)] = draw(json_values)
        else:
            body["source"] = {
                draw(st.sampled_from(["path", "model", "serial", "size"])): draw(json_values)
            }
    return body


@NO_SHRINK
@given(st.data())
def test_fuzz_image_info(sample: Sample, data: st.DataObject) -> None:
    body = data.draw(mutated_body(sample.body))
    ours(streams_of, body, "fuzz")
    ours(cell_size_of, body, "fuzz")
    ours(image_info, sample.repo, "img", body)


@pytest.mark.parametrize(
    "change",
    [
        {"source": ["/dev/sda"]},
        {"source": {"size": "big"}},
        {"source": {"size": math.inf}},
        {"streams": [{"number": "one"}]},
        {"streams": [{"data_bytes": None}]},
    ],
)
def test_image_info_on_odd_field_types_is_our_error(sample: Sample, change: dict[str, Any]) -> None:
    body = json.loads(json.dumps(sample.body))
    for key, value in change.items():
        if key == "streams":
            body["streams"][0].update(value[0])
        else:
            body[key] = value
    with pytest.raises(RecoveryError):
        image_info(sample.repo, "img", body)


@settings(NO_SHRINK, max_examples=60)
@given(st.data())
def test_fuzz_listing_and_verifying_a_hostile_repository(
    sample: Sample, data: st.DataObject
) -> None:
    """Crafted manifests with correct hashes in a real repository: ``images`` lists every image
    (a bad one as damaged), ``verify`` answers with our error or a result."""
    body = data.draw(mutated_body(sample.body))
    sample.repo.write_manifest("hostile", body)
    try:
        names = [i.name for i in list_images(sample.repo.location)]
        assert names == ["hostile", "img"]
        ours(verify_image, sample.repo.location, "hostile", NullProgress(), CancelToken())
    finally:
        sample.repo.backend.delete("images/hostile.image")
        sample.repo.backend.delete("images/hostile.verified")


@NO_SHRINK
@given(json_values | st.lists(st.lists(json_values, min_size=3, max_size=3), max_size=3))
def test_fuzz_restore_image_notes(value: Any) -> None:
    """The restore plan's notes about how an image was taken (unreadable areas, a replayed
    journal, a read-write mount) from hostile manifest fields."""
    from recovery.engine.plans import image_notes

    for body in ({"unreadable": value}, {"streams": value}, {"streams": [value, {"number": 1}]}):
        notes = ours(image_notes, body)
        assert notes is None or all(isinstance(n, str) for n in notes)


def test_unreadable_note_with_a_text_length_is_our_error() -> None:
    from recovery.engine.plans import image_notes

    # A damaged entry is left out of the note (or is our error), never a traceback.
    with contextlib.suppress(RecoveryError):
        image_notes({"unreadable": [["p1", 0, "x"]]})


# -- the repository header and the .verified note -----------------------------------------------


@settings(NO_SHRINK, max_examples=60)
@given(json_values | st.binary(max_size=100).map(lambda b: b.decode("latin-1")))
def test_fuzz_repository_header(tmp_path_factory: pytest.TempPathFactory, value: Any) -> None:
    d = tmp_path_factory.mktemp("hdr")
    Repository.open(d / "r", create=True)
    text = value if isinstance(value, str) else json.dumps(value)
    (d / "r" / "recovery-repo").write_text(text, encoding="utf-8", errors="surrogateescape")
    repo = ours(Repository.open, d / "r")
    if repo is not None:
        (d / "r" / "images" / "x.verified").write_text(text, errors="surrogateescape")
        assert repo.verified_at("x") is None or isinstance(repo.verified_at("x"), str)
    depth = 50_000
    (d / "r" / "recovery-repo").write_text("[" * depth + "]" * depth)
    ours(Repository.open, d / "r")


def test_repository_header_examples(tmp_path: Path) -> None:
    Repository.open(tmp_path / "r", create=True)
    header = tmp_path / "r" / "recovery-repo"
    for text in (
        "",
        "[]",
        '{"format": "recovery-repository"}',
        '{"format": 1, "version": 1}',
        '{"format": "recovery-repository", "version": Infinity}',
        "\udcff",
    ):
        header.write_text(text, errors="surrogateescape")
        with pytest.raises(RecoveryError):
            Repository.open(tmp_path / "r")
