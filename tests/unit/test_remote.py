"""What every network backend shares (recovery/repository/remote.py): bounded retries that end in
an OSError with an errno, and the lease lock of docs/FORMAT.md ("Network locations"), run here
over the in-memory backend (no server needed)."""

from __future__ import annotations

import errno
import json
import os
import socket

import pytest

from recovery.repository import remote
from recovery.repository.backend import LockHeld
from recovery.repository.remote import LOCKS_FOLDER, is_stale, lease, retrying
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
