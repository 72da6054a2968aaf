"""The repository's format tests (tests/unit/test_store.py, every test that takes ``new_repo``)
run again over each network backend, against real servers on loopback (tests/servers.py): the
format must hold on SFTP, SMB and S3 exactly as on a folder. Plus what only a network location
has: the lease lock between two writers, and refused credentials as one clear line.
"""

from __future__ import annotations

import inspect
import random
import uuid
from pathlib import Path

import pytest

from recovery.errors import RepositoryError, RepositoryLocked
from recovery.repository.address import parse_address
from recovery.repository.backend import Backend
from recovery.repository.remote import LOCKS_FOLDER
from recovery.repository.secrets import EnvironmentSecrets
from recovery.repository.store import Repository
from tests.servers import (
    S3_SECRET_KEY,
    SMB_PASSWORD,
    SSH_PASSPHRASE,
    s3_server,
    smb_server,
    ssh_server,
)
from tests.unit import test_store
from tests.unit.test_store import NewRepo

__all__ = ["s3_server", "smb_server", "ssh_server"]

KINDS = ["s3", "sftp", "smb"]

for _name, _test in vars(test_store).items():
    if _name.startswith("test_") and "new_repo" in inspect.signature(_test).parameters:
        globals()[_name] = _test


class Given(EnvironmentSecrets):
    """Credentials a test gives explicitly (the CLI's provider reads the terminal instead)."""

    def __init__(self, password: str | None = None, identity: str | None = None) -> None:
        super().__init__()
        self._password = password
        self._identity = identity

    def password(self, location: str) -> str | None:
        return self._password

    def accept_host_key(self, host: str, key_type: str, fingerprint: str) -> bool:
        return True

    def identity(self, location: str) -> str | None:
        return self._identity


def backend_for(kind: str, request: pytest.FixtureRequest, folder: str, **override: str) -> Backend:
    if kind == "s3":
        from recovery.repository.s3 import S3Backend

        server = request.getfixturevalue("s3_server")
        mp = request.getfixturevalue("monkeypatch")
        for k, v in {**server.env(), **override}.items():
            mp.setenv(k, v)
        return S3Backend(parse_address(server.address("repos", folder)), Given())
    if kind == "sftp":
        from recovery.repository.sftp import SftpBackend

        server = request.getfixturevalue("ssh_server")
        home = request.getfixturevalue("tmp_path_factory").mktemp("home")
        request.getfixturevalue("monkeypatch").setenv("HOME", str(home))
        given = Given(override.get("password", SSH_PASSPHRASE), str(server.identity))
        return SftpBackend(parse_address(server.address(folder)), given)
    if kind == "smb":
        from recovery.repository.smb import SmbBackend

        server = request.getfixturevalue("smb_server")
        given = Given(override.get("password", SMB_PASSWORD))
        return SmbBackend(parse_address(server.address(folder)), given)
    raise AssertionError(kind)


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def new_repo(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> NewRepo:
    def make() -> Repository:
        return Repository.open(backend_for(kind, request, uuid.uuid4().hex), create=True)

    return make


def test_two_writers_one_waits_for_the_other(kind: str, request: pytest.FixtureRequest) -> None:
    folder = uuid.uuid4().hex
    r = Repository.open(backend_for(kind, request, folder), create=True)
    other = Repository.open(backend_for(kind, request, folder))
    with r.locked("backup a"):
        assert [f.name for f in r.backend.list(LOCKS_FOLDER)]
        with pytest.raises(RepositoryLocked, match="backup a"), other.locked("backup b"):
            pass
    assert not list(r.backend.list(LOCKS_FOLDER))
    with other.locked("backup b"):
        pass


def test_a_stale_lease_of_a_dead_writer_is_broken(
    kind: str, request: pytest.FixtureRequest
) -> None:
    folder = uuid.uuid4().hex
    r = Repository.open(backend_for(kind, request, folder), create=True)
    dead = '{"owner":"x","host":"elsewhere","pid":1,"refreshed":"2020-01-01T00:00:00Z"}'
    r.backend.write(f"{LOCKS_FOLDER}/dead.lock", dead.encode())
    with r.locked("backup"):
        names = [f.name for f in r.backend.list(LOCKS_FOLDER)]
        assert f"{LOCKS_FOLDER}/dead.lock" not in names and len(names) == 1


def test_wrong_credentials_are_one_clear_line(kind: str, request: pytest.FixtureRequest) -> None:
    bad = {
        "s3": {"AWS_SECRET_ACCESS_KEY": "wrong-" + S3_SECRET_KEY},
        "sftp": {"password": "wrong-" + SSH_PASSPHRASE},
        "smb": {"password": "wrong-" + SMB_PASSWORD},
    }[kind]
    with pytest.raises(RepositoryError) as refused:
        Repository.open(backend_for(kind, request, uuid.uuid4().hex, **bad), create=True)
    message = str(refused.value)
    assert "\n" not in message, message
    assert "refused" in message or "passphrase" in message, message
    assert all(s not in message for s in (S3_SECRET_KEY, SSH_PASSPHRASE, SMB_PASSWORD))


def test_ssh_host_keys_unknown_refused_accepted_remembered_changed_refused(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recovery.repository.sftp import SftpBackend

    server = request.getfixturevalue("ssh_server")
    monkeypatch.setenv("HOME", str(tmp_path))
    address = parse_address(server.address(uuid.uuid4().hex))
    known = tmp_path / ".ssh" / "known_hosts"

    class Wary(Given):
        def accept_host_key(self, host: str, key_type: str, fingerprint: str) -> bool:
            return False

    def backend(given: Given) -> SftpBackend:
        return SftpBackend(address, given)

    with pytest.raises(RepositoryError, match=r"is unknown \(its ssh-ed25519 key is SHA256:"):
        Repository.open(backend(Wary(SSH_PASSPHRASE, str(server.identity))), create=True)
    assert not known.exists()
    Repository.open(backend(Given(SSH_PASSPHRASE, str(server.identity))), create=True)
    assert known.read_text().startswith(f"[127.0.0.1]:{server.port} ssh-ed25519 ")
    Repository.open(backend(Wary(SSH_PASSPHRASE, str(server.identity))))  # known now: no question
    other = (server.identity.parent / "id_ed25519.pub").read_text().split()[1]
    known.write_text(f"[127.0.0.1]:{server.port} ssh-ed25519 {other}\n")
    with pytest.raises(RepositoryError, match="different ssh-ed25519 key"):
        Repository.open(backend(Given(SSH_PASSPHRASE, str(server.identity))))


def test_many_threads_read_one_file_at_once(kind: str, request: pytest.FixtureRequest) -> None:
    """A disk repeats content, so restore's workers read the same chunk together (SMB refused
    the second open with a sharing violation until reads were opened shared)."""
    from concurrent.futures import ThreadPoolExecutor

    b = backend_for(kind, request, uuid.uuid4().hex)
    b.create()
    blob = bytes(range(256)) * 4096
    b.write("chunks/00/same", blob)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: b.read("chunks/00/same"), range(48)))
    assert all(g == blob for g in got)


def test_reads_and_heads_of_every_size(kind: str, request: pytest.FixtureRequest) -> None:
    """Whole files, ranges and heads (size and first bytes, what restore's check asks of each
    chunk) agree with what was written, whichever way the backend takes them: SMB reads a file
    in one compound request up to its largest read (8 MiB with Samba), larger ones the long way;
    SFTP's head sends its read with the stat; S3's reads the size from one ranged GET."""
    b = backend_for(kind, request, uuid.uuid4().hex)
    b.create()
    sizes = {"empty": 0, "one": 1, "small": 5000, "big": (8 << 20) + 12345}
    blobs = {name: random.Random(n).randbytes(n) for name, n in sizes.items()}
    for name, blob in blobs.items():
        b.write(f"f/{name}", blob)
    b.flush()
    for name, blob in blobs.items():
        assert b.read(f"f/{name}") == blob
        assert b.read(f"f/{name}", 0, 1 << 30) == blob
        assert b.read(f"f/{name}", 0, 16) == blob[:16]
        assert b.read(f"f/{name}", 3, 100_000) == blob[3:100_003]
        assert b.head(f"f/{name}", 16) == (len(blob), blob[:16])
        assert b.size(f"f/{name}") == len(blob)
    assert b.head("f/missing", 16) is None
    assert b.size("f/missing") is None
    with pytest.raises(FileNotFoundError):
        b.read("f/missing")
