"""What every network backend shares (recovery/repository/remote.py): bounded retries that end in
an OSError with an errno, background uploads whose failures always reach the flush, and the
lease lock of docs/FORMAT.md ("Network locations"), run here over the in-memory backend (no
server needed)."""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
from collections.abc import Callable

import pytest

from recovery.repository import remote
from recovery.repository.backend import LockHeld
from recovery.repository.remote import LOCKS_FOLDER, Uploads, is_stale, lease, retrying
from tests.unit.memory_backend import MemoryBackend


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(remote, "FIRST_WAIT", 0.0)
    monkeypatch.setattr(remote.time, "sleep", lambda s: None)
    monkeypatch.setattr(remote.random, "uniform", lambda a, b: 0.0)


def test_transient_failures_are_retried_then_succeed() -> None:
    calls: list[int] = []
    reconnects: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("dropped")
        return "ok"

    assert retrying("read x", flaky, lambda e: None, lambda: reconnects.append(1)) == "ok"
    assert len(calls) == 3 and len(reconnects) == 2


def test_a_server_that_stays_away_is_eio_after_bounded_tries() -> None:
    calls: list[int] = []

    def down() -> None:
        calls.append(1)
        raise TimeoutError("no answer")

    with pytest.raises(OSError) as failed:
        retrying("write chunks/ab/x", down, lambda e: None)
    assert failed.value.errno == errno.EIO
    assert len(calls) == remote.TRIES
    assert "write chunks/ab/x" in str(failed.value.strerror)


def test_a_final_failure_is_not_retried() -> None:
    calls: list[int] = []

    def refused() -> None:
        calls.append(1)
        raise ValueError("library detail")

    denied = PermissionError(errno.EACCES, "the server refused user bob")
    with pytest.raises(PermissionError) as failed:
        retrying("open", refused, lambda e: denied)
    assert failed.value is denied and len(calls) == 1


def test_one_writer_holds_the_lease_and_releases_it() -> None:
    b = MemoryBackend()
    with lease(b, json.dumps({"operation": "backup a"})):
        (held,) = list(b.list(LOCKS_FOLDER))
        body = json.loads(b.read(held.name))
        assert body["operation"] == "backup a" and body["pid"] == os.getpid()
        assert held.name == f"{LOCKS_FOLDER}/{body['owner']}.lock"
        with pytest.raises(LockHeld, match="backup a"), lease(b, "backup b"):
            pass
        assert [f.name for f in b.list(LOCKS_FOLDER)] == [held.name]  # the loser left nothing
    assert not list(b.list(LOCKS_FOLDER))


@pytest.mark.parametrize(
    "body",
    [
        {"host": "elsewhere", "pid": 1, "refreshed": "2020-01-01T00:00:00Z"},  # not refreshed
        {"host": socket.gethostname(), "pid": 2**22 + 7, "refreshed": remote._now()},  # dead pid
        "not a lease",
    ],
)
def test_stale_leases_are_broken(body: object) -> None:
    b = MemoryBackend()
    b.write(f"{LOCKS_FOLDER}/old.lock", json.dumps(body).encode())
    assert is_stale(json.loads(json.dumps(body)))
    with lease(b, "backup"):
        assert f"{LOCKS_FOLDER}/old.lock" not in [f.name for f in b.list(LOCKS_FOLDER)]


def test_a_fresh_lease_of_another_machine_is_respected() -> None:
    b = MemoryBackend()
    other = {"host": "pc2", "pid": 1, "operation": "backup pc2", "refreshed": remote._now()}
    b.write(f"{LOCKS_FOLDER}/pc2.lock", json.dumps(other).encode())
    assert not is_stale(other)
    with pytest.raises(LockHeld, match="pc2"), lease(b, "backup"):
        pass


def test_uploads_run_behind_the_caller_and_are_read_back() -> None:
    started, release = threading.Event(), threading.Event()
    stored: dict[str, bytes] = {}

    def slow(name: str, data: bytes) -> Callable[[], None]:
        def upload() -> None:
            started.set()
            release.wait(10)
            stored[name] = data

        return upload

    u = Uploads(threads=2, queued=4)
    u.submit("chunks/a", slow("chunks/a", b"A"))
    assert started.wait(10) and "chunks/a" not in stored  # submit did not wait
    release.set()
    u.wait_for("chunks/a")  # what every read, size and delete of the backends does first
    assert stored == {"chunks/a": b"A"}
    u.flush()


def test_a_failed_upload_stops_the_rest_and_reaches_the_flush_once() -> None:
    ran: list[str] = []

    def fails() -> None:
        raise OSError(errno.EIO, "no answer to 'write chunks/a' after 5 tries")

    u = Uploads(threads=1, queued=4)
    u.submit("chunks/a", fails)
    u.wait_all()
    with pytest.raises(OSError, match="no answer"):
        u.submit("chunks/b", lambda: ran.append("b"))  # the backup stops early
    with pytest.raises(OSError, match="no answer") as flushed:
        u.flush()  # before a manifest: it never names a chunk that did not arrive
    assert flushed.value.errno == errno.EIO
    u.flush()  # told once
    assert ran == []


def test_a_failure_is_not_lost_to_a_durable_write_and_a_new_writer_starts_clean() -> None:
    u = Uploads(threads=1, queued=2)

    def fails() -> None:
        raise ConnectionResetError(errno.ECONNRESET, "reset")

    u.submit("chunks/a", fails)
    with pytest.raises(OSError):
        u.settle()  # what a durable write does: refused, and the failure stays
    with pytest.raises(OSError):
        u.settle()  # (a lease refresh ignores it; the manifest's write would not)
    with pytest.raises(OSError):
        u.flush()
    u.submit("chunks/a", fails)
    u.forget()  # what taking the lock does: the writer before was told
    u.flush()
