"""Encrypted repositories (docs/FORMAT.md, "Encrypted repositories"), without devices.

Each test runs over a local folder and over the in-memory backend. The Argon2id parameters are
lowered here (the format allows 8 MiB) so the suite stays quick; the CLI uses the defaults.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recovery.errors import (
    ImageNotFound,
    IntegrityError,
    NotARepository,
    PassphraseNeeded,
    RecoveryError,
    UnsupportedVersion,
    UsageError,
    WrongPassphrase,
)
from recovery.repository import sealing, secrets
from recovery.repository.backend import Backend
from recovery.repository.images import remove_image
from recovery.repository.local import LocalFolder
from recovery.repository.maps import DATA, MapWriter, StreamInfo, StreamReader
from recovery.repository.store import Repository
from tests.unit.memory_backend import MemoryBackend

SECRET = b"The quarterly figures of ACME-7731 are confidential. " * 2000


class Fixed:
    def __init__(self, value: str | None) -> None:
        self.value = value

    def passphrase(self, location: str, new: bool) -> str | None:
        return self.value


@pytest.fixture(autouse=True)
def quick_kdf(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(sealing, "KDF_MEMORY_KIB", 8 * 1024)
    monkeypatch.setattr(sealing, "KDF_ITERATIONS", 1)
    before = secrets.current()
    secrets.use(Fixed("correct horse"))
    yield
    secrets.use(before)


@pytest.fixture(params=["folder", "memory"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "folder":
        return LocalFolder(tmp_path / "enc")
    return MemoryBackend()


def all_bytes(backend: Backend) -> bytes:
    return b"".join(backend.read(f.name) for f in backend.list(""))


def make_image(r: Repository, name: str, payloads: list[bytes]) -> None:
    cell = 65536
    w = MapWriter(r, 1)
    for data in payloads:
        d = r.hash(data)
        r.put_chunk(d, data, 1)
        w.add(DATA, len(data), d)
    size = sum(len(p) for p in payloads)
    stream = {"id": "p1", "size": size, "cells": len(payloads), "method": "raw"}
    r.flush()
    r.write_manifest(
        name,
        {
            "name": name,
            "cell_size": cell,
            "source": {"path": "/dev/sdz", "serial": "SERIAL-XYZZY"},
            "streams": [{**stream, "map": w.finish()}],
        },
    )


def read_back(r: Repository, name: str) -> bytes:
    body = r.read_manifest(name)
    info = StreamInfo.from_manifest(body["streams"][0], 65536, "t")
    return StreamReader(r, info, 65536, name).pread(0, info.size)


def test_round_trip_and_nothing_readable_at_rest(backend: Backend) -> None:
    r = Repository.open(backend, create=True, encrypt=True)
    assert r.info.encrypted and r.info.version == 2
    payload = SECRET[:65536]
    make_image(r, "laptop-of-alice", [payload, bytes(range(256)) * 256])
    r.mark_verified("laptop-of-alice")
    again = Repository.open(backend)
    assert again.image_names() == ["laptop-of-alice"]
    assert read_back(again, "laptop-of-alice")[:65536] == payload
    assert again.verified_at("laptop-of-alice")
    stored = all_bytes(backend) + "".join(f.name for f in backend.list("")).encode()
    for leak in (b"ACME-7731", b"laptop-of-alice", b"SERIAL-XYZZY", b"/dev/sdz", b"streams"):
        assert leak not in stored
    # Chunk names are keyed: the plain BLAKE3 of the content names nothing.
    from recovery.repository.store import hash_bytes

    assert hash_bytes(payload).hex() not in stored.decode(errors="replace")


def test_wrong_or_missing_passphrase_is_one_clear_error(backend: Backend) -> None:
    Repository.open(backend, create=True, encrypt=True)
    secrets.use(Fixed("wrong"))
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        Repository.open(backend)
    secrets.use(Fixed(None))
    with pytest.raises(PassphraseNeeded, match="RECOVERY_PASSPHRASE"):
        Repository.open(backend)


def test_new_encrypted_location_needs_a_passphrase(backend: Backend) -> None:
    secrets.use(Fixed(None))
    with pytest.raises(PassphraseNeeded, match="nothing was created"):
        Repository.open(backend, create=True, encrypt=True)
    assert backend.is_empty()


def test_encrypt_is_refused_on_an_existing_plain_location(backend: Backend) -> None:
    Repository.open(backend, create=True)
    with pytest.raises(UsageError, match="without encryption"):
        Repository.open(backend, create=True, encrypt=True)


@pytest.mark.parametrize("offset", [0, 3, 4, 10, 16, 40, -1])
def test_a_flipped_byte_in_a_chunk_is_damage_not_wrong_bytes(backend: Backend, offset: int) -> None:
    r = Repository.open(backend, create=True, encrypt=True)
    make_image(r, "a", [SECRET[:65536]])
    body = r.read_manifest("a")
    data_digest = next(d for d, _ in r.iter_chunks() if d.hex() not in body["streams"][0]["map"])
    name = f"chunks/{data_digest.hex()[:2]}/{data_digest.hex()}"
    blob = bytearray(backend.read(name))
    blob[offset] ^= 0x20
    backend.write(name, bytes(blob))
    with pytest.raises(IntegrityError, match=data_digest.hex()):
        read_back(r, "a")


def test_a_chunk_moved_under_another_name_fails_authentication(backend: Backend) -> None:
    r = Repository.open(backend, create=True, encrypt=True)
    one, two = SECRET[:65536], bytes(65536 - 1) + b"x"
    make_image(r, "a", [one, two])
    n1, n2 = (f"chunks/{r.hash(x).hex()[:2]}/{r.hash(x).hex()}" for x in (one, two))
    backend.write(n1, backend.read(n2))
    with pytest.raises(IntegrityError, match="authentication"):
        r.get_chunk(r.hash(one))


@pytest.mark.parametrize("offset", [0, 4, 16, 40, -1])
def test_the_check_before_writing_authenticates_each_chunk_file(
    backend: Backend, offset: int
) -> None:
    """A restore's check pass (authenticate_chunk_file): intact chunks pass, and their stored
    bytes are handed back for keeping only where reading again costs a transfer (not a folder
    here); a flipped byte anywhere, or a chunk under another's name, is damage. What was kept
    is opened and checked again when it is written."""
    r = Repository.open(backend, create=True, encrypt=True)
    one, two = SECRET[:65536], os.urandom(3 << 20)
    for data in (one, two):
        r.put_chunk(r.hash(data), data, 1)
        kept = r.authenticate_chunk_file(r.hash(data), "t")
        assert (kept is None) == isinstance(backend, LocalFolder)
        assert r.get_chunk(r.hash(data), "t", kept) == data
    name = f"chunks/{r.hash(one).hex()[:2]}/{r.hash(one).hex()}"
    good = backend.read(name)
    bad = bytearray(good)
    bad[offset] ^= 0x01
    backend.write(name, bytes(bad))
    with pytest.raises(IntegrityError, match=r.hash(one).hex()):
        r.authenticate_chunk_file(r.hash(one), "t")
    with pytest.raises(IntegrityError, match=r.hash(one).hex()):
        r.get_chunk(r.hash(one), "t", bytes(bad))  # a kept copy is no more trusted
    other = f"chunks/{r.hash(two).hex()[:2]}/{r.hash(two).hex()}"
    backend.write(name, backend.read(other))
    with pytest.raises(IntegrityError, match="authentication"):
        r.authenticate_chunk_file(r.hash(one), "t")


def test_sealed_files_open_into_a_reused_buffer() -> None:
    keys = sealing.Keys(os.urandom(64))
    buf = bytearray(1 << 20)
    for data in (b"", b"x" * 1000, os.urandom(700_000)):
        sealed = keys.seal(data, b"aad")
        assert len(sealed) == len(data) + sealing.SEAL_OVERHEAD
        assert bytes(keys.open_into(sealed, b"aad", "x", buf)) == data
        assert keys.open(bytes(sealed), b"aad", "x") == data
    with pytest.raises(ValueError, match="does not fit"):
        keys.open_into(keys.seal(bytes(2 << 20), b"aad"), b"aad", "x", buf)
    with pytest.raises(IntegrityError):
        keys.open_into(keys.seal(b"data", b"aad"), b"other", "x", buf)


def test_a_flipped_byte_in_a_manifest_is_reported(backend: Backend) -> None:
    r = Repository.open(backend, create=True, encrypt=True)
    make_image(r, "a", [SECRET[:65536]])
    (f,) = [f for f in backend.list("images") if f.name.endswith(".image")]
    blob = bytearray(backend.read(f.name))
    blob[len(blob) // 2] ^= 1
    backend.write(f.name, bytes(blob))
    with pytest.raises(IntegrityError, match="authentication"):
        r.read_manifest("a")
    (listed,) = r.image_names()
    assert listed.startswith("unreadable-")
    with pytest.raises(IntegrityError):
        r.read_manifest(listed)


def test_change_passphrase_rewrites_only_the_header(backend: Backend) -> None:
    r = Repository.open(backend, create=True, encrypt=True)
    make_image(r, "a", [SECRET[:65536]])
    before = {f.name: backend.read(f.name) for f in backend.list("")}
    r.change_passphrase("new one")
    after = {f.name: backend.read(f.name) for f in backend.list("")}
    changed = {n for n in after if before.get(n) != after[n]}
    assert changed == {"recovery-repo"}
    with pytest.raises(WrongPassphrase):
        Repository.open(backend)
    secrets.use(Fixed("new one"))
    assert read_back(Repository.open(backend), "a")[:100] == SECRET[:100]


def test_remove_in_an_encrypted_location(backend: Backend) -> None:
    r = Repository.open(backend, create=True, encrypt=True)
    make_image(r, "a", [SECRET[:65536]])
    make_image(r, "b", [bytes(range(256)) * 256])
    assert remove_image(r, "a") > 0
    assert r.image_names() == ["b"]
    with pytest.raises(ImageNotFound):
        r.read_manifest("a")
    assert read_back(r, "b")[:256] == bytes(range(256))


def test_two_creators_at_once_share_one_key(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes that found a new location empty at the same moment: the second opens
    what the first created instead of replacing its header (and with it the key the first
    one's chunks are sealed with)."""
    both_found_it_empty = threading.Barrier(2, timeout=10)
    create = backend.create

    def create_when_both_checked() -> None:
        both_found_it_empty.wait()
        create()

    monkeypatch.setattr(backend, "create", create_when_both_checked)
    opened: list[Repository] = []
    failed: list[BaseException] = []

    def creator() -> None:
        try:
            opened.append(Repository.open(backend, create=True, encrypt=True))
        except BaseException as e:  # reported below, in the test's thread
            failed.append(e)

    threads = [threading.Thread(target=creator) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failed, failed
    first, second = opened
    assert first.keys is not None and second.keys is not None
    assert first.keys.master == second.keys.master
    make_image(first, "one", [SECRET[:65536]])
    make_image(second, "two", [bytes(range(256)) * 256])
    again = Repository.open(backend)
    assert read_back(again, "one")[:100] == SECRET[:100]
    assert read_back(again, "two")[:256] == bytes(range(256))


def test_two_threads_derive_keys_at_once() -> None:
    """Argon2id in two threads at once hung for good (cryptography 50.0.2, lanes > 1): the
    TUI opens locations from worker threads."""
    params = [sealing.KdfParams(os.urandom(16), 1, 4, 8 * 1024) for _ in range(2)]
    out: list[bytes] = []
    threads = [
        threading.Thread(
            target=lambda p=p: out.extend(p.derive("pw") for _ in range(3)), daemon=True
        )
        for p in params
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)  # a liveness check, not a timing one: it takes milliseconds
    assert not any(t.is_alive() for t in threads), "key derivation hung"
    assert len(out) == 6


def test_the_key_is_derived_once_per_process(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Argon2id runs once per header and passphrase (a restore opens its location twice or
    more); a wrong passphrase still fails every time, and a changed one is derived anew."""
    derived: list[str] = []
    derive = sealing.KdfParams.derive

    def counting(self: sealing.KdfParams, passphrase: str) -> bytes:
        derived.append(passphrase)
        return derive(self, passphrase)

    monkeypatch.setattr(sealing.KdfParams, "derive", counting)
    r = Repository.open(backend, create=True, encrypt=True)
    for _ in range(3):
        assert Repository.open(backend).keys.master == r.keys.master  # type: ignore[union-attr]
    assert derived == ["correct horse"]
    secrets.use(Fixed("wrong"))
    for _ in range(2):
        with pytest.raises(WrongPassphrase):
            Repository.open(backend)
    assert derived == ["correct horse", "wrong", "wrong"]
    r.change_passphrase("new one")
    secrets.use(Fixed("correct horse"))
    with pytest.raises(WrongPassphrase):
        Repository.open(backend)
    secrets.use(Fixed("new one"))
    assert Repository.open(backend).keys.master == r.keys.master  # type: ignore[union-attr]


def test_lock_note_names_no_image(backend: Backend) -> None:
    r = Repository.open(backend, create=True, encrypt=True)
    with r.locked("backup secret-name"):
        if isinstance(backend, LocalFolder):
            note = json.loads((backend.root / "lock").read_text())
            assert note["operation"] == "backup"


def test_plain_locations_are_unchanged(tmp_path: Path) -> None:
    r = Repository.open(tmp_path / "plain", create=True)
    header = json.loads((tmp_path / "plain" / "recovery-repo").read_text())
    assert header["version"] == 1 and "encryption" not in header
    make_image(r, "a", [SECRET[:65536]])
    assert (tmp_path / "plain" / "images" / "a.image").exists()


def test_version_1_reader_would_refuse_an_encrypted_header(backend: Backend) -> None:
    Repository.open(backend, create=True, encrypt=True)
    header = json.loads(backend.read("recovery-repo"))
    header["version"] = 3
    backend.write("recovery-repo", json.dumps(header).encode())
    with pytest.raises(UnsupportedVersion):
        Repository.open(backend)


# -- fuzzing the header's encryption object -----------------------------------------------------

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=10,
)


@settings(max_examples=150, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "cipher": st.sampled_from(["aes-256-gcm", "rot13"]) | values,
            "kdf": st.fixed_dictionaries(
                {},
                optional={
                    "name": st.sampled_from(["argon2id"]) | values,
                    "salt": st.binary(min_size=0, max_size=70).map(bytes.hex) | values,
                    "iterations": st.integers(-3, 100) | values,
                    "lanes": st.integers(-3, 100) | values,
                    "memory_kib": st.integers(-3, 10 << 20) | values,
                },
            )
            | values,
            "key": st.binary(max_size=120).map(bytes.hex) | values,
        },
    )
    | values
)
def test_fuzz_encryption_header(value: object) -> None:
    """Any ``encryption`` object is accepted as well-formed or refused with our error; a
    well-formed one never unlocks with a passphrase it was not made with."""
    try:
        kdf, wrapped = sealing.check_encryption(value, "t")
    except RecoveryError:
        return
    assert 1 <= kdf.iterations <= 64 and 8 * 1024 <= kdf.memory_kib <= 4 << 20
    assert len(wrapped) == 92


def test_unlock_examples() -> None:
    enc, keys = sealing.new_encryption("pw")
    assert sealing.unlock(enc, "pw", "t").master == keys.master
    with pytest.raises(WrongPassphrase):
        sealing.unlock(enc, "pW", "t")
    for broken in ({**enc, "key": enc["key"][:-2]}, {**enc, "cipher": "x"}, {**enc, "kdf": {}}):
        with pytest.raises(NotARepository):
            sealing.unlock(broken, "pw", "t")


def test_sealed_open_rejects_short_and_foreign_blobs() -> None:
    keys = sealing.Keys(os.urandom(64))
    sealed = keys.seal(b"hello", b"aad")
    assert keys.open(sealed, b"aad", "x") == b"hello"
    for bad in (b"", sealed[:10], b"XXXX" + sealed[4:], sealed[:-1]):
        with pytest.raises(IntegrityError):
            keys.open(bad, b"aad", "x")
    with pytest.raises(IntegrityError):
        keys.open(sealed, b"other", "x")
