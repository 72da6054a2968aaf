"""Fuzzing the parsers that network locations and `open` added (issues 12, 14).

What a person types (addresses, ``pN:/path``) and what another writer left in a location (the
lease files of ``locks/``) are untrusted input. For each: any input gives a result or our own
error, never another exception.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recovery.core.view import parse_image_path
from recovery.errors import RecoveryError
from recovery.repository import remote
from recovery.repository.address import parse_address
from recovery.repository.backend import LockHeld
from tests.unit.memory_backend import MemoryBackend

FUZZ = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**80), 2**80)
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(["2026-12-01T00:00:00Z", "9999-99-99T99:99:99Z", "localhost"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
lease_bodies = st.fixed_dictionaries(
    {},
    optional={
        "refreshed": st.sampled_from([remote._now(), "2000-01-01T00:00:00Z"]) | json_values,
        "pid": st.integers(-(2**70), 2**70) | json_values,
        "host": st.sampled_from(["", "elsewhere"]) | json_values,
        "owner": json_values,
    },
)


@FUZZ
@given(
    st.sampled_from(["smb://", "sftp://", "s3://", "s3+http://", "nfs://", "ftp://", ""]).flatmap(
        lambda scheme: st.text(max_size=60).map(lambda rest: scheme + rest)
    )
    | st.text(max_size=80)
)
def test_fuzz_addresses(text: str) -> None:
    try:
        where = parse_address(text)
    except RecoveryError:
        return
    assert where.kind in ("smb", "sftp", "s3", "s3+http", "nfs")
    assert where.port is None or 0 < where.port < 65536
    str(where)


@FUZZ
@given(st.text(max_size=60))
def test_fuzz_image_paths(text: str) -> None:
    try:
        number, path = parse_image_path(text)
    except RecoveryError:
        return
    assert number >= 0 and path.startswith("/") and "/../" not in path + "/"


@FUZZ
@given(lease_bodies | json_values)
def test_fuzz_lease_staleness(body: Any) -> None:
    assert remote.is_stale(body, host="elsewhere") in (True, False)
    assert remote.is_stale(body) in (True, False)


@settings(FUZZ, max_examples=80)
@given(files=st.lists(st.binary(max_size=200) | lease_bodies.map(lambda b: json.dumps(b).encode())))
def test_fuzz_hostile_lock_files(files: list[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever another writer (or an attacker) left in ``locks/``: the lease is taken or
    refused with LockHeld, never another exception."""
    monkeypatch.setattr(remote, "STEP_BACK_TRIES", 1)
    backend = MemoryBackend()
    for i, data in enumerate(files):
        backend.write(f"{remote.LOCKS_FOLDER}/other{i}.lock", data)
    backend.write(f"{remote.LOCKS_FOLDER}/deep.lock", b"[" * 100_000 + b"]" * 100_000)
    try:
        with remote.lease(backend, json.dumps({"operation": "backup"})):
            pass
    except LockHeld:
        pass


def test_lease_examples() -> None:
    fresh = {"refreshed": remote._now(), "host": "elsewhere", "pid": 1}
    assert not remote.is_stale(fresh, host="here")
    for pid in (2**70, -1, 0, True):
        body = {**fresh, "host": "here", "pid": pid}
        assert remote.is_stale(body, host="here") in (True, False)


ip_like = st.text(alphabet="0123456789abcdef.:/ ,\n[]=", max_size=40)


@FUZZ
@given(st.text(max_size=20), ip_like | st.text(max_size=30), ip_like, ip_like)
def test_fuzz_static_address_fields(name: str, address: str, gateway: str, dns: str) -> None:
    """The Network form's fields (issue 14): refused with one line per wrong field, or a
    networkd file with exactly one Name= and Address= line and nothing that could start another
    line or section of it."""
    from recovery.core.network import InvalidSettings, check_static, network_file_text

    try:
        settings = check_static(name, address, gateway, dns)
    except InvalidSettings as e:
        assert e.problems and all("\n" not in p for p in e.problems)
        return
    text = network_file_text(settings)
    lines = text.splitlines()
    assert sum(line.startswith("Name=") for line in lines) == 1
    assert sum(line.startswith("Address=") for line in lines) == 1
    assert [line for line in lines if line.startswith("[")] == ["[Match]", "[Link]", "[Network]"]
