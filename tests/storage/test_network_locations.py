"""Backup locations on the network (issue 14, "Done when"), through the real CLI, against real
servers on loopback (tests/servers.py): for each of SMB, SFTP and S3, a real disk is backed up,
listed, verified, restored onto a blank disk with the same bytes; a second backup adds under 1 %;
remove frees the space; refused credentials are one clear line; no secret ever shows in a
process's command line or in any output; a server that dies mid-backup gives a clear error, and
a rerun succeeds.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import loopdev
from tests.servers import (
    S3_SECRET_KEY,
    SMB_PASSWORD,
    SSH_PASSPHRASE,
    descendants,
    s3_server,
    smb_server,
    ssh_server,
)
from tests.storage.disks import (
    MiB,
    ext4_digest,
    make_gpt_system_disk,
    mounted,
    recovery_cmd,
    sfdisk_dump,
)

__all__ = ["s3_server", "smb_server", "ssh_server"]

COMMAND_TIMEOUT = 240.0
"""A command still running after this is stopped with its threads' stacks shown (a hang)."""


@dataclass
class Location:
    kind: str
    address: str
    env: dict[str, str]
    options: list[str]
    """What the command needs beyond REPO (``--identity``, ``--accept-new-host-key``)."""
    secret: str
    wrong: dict[str, str]
    """The environment with a wrong secret."""
    stored: Path | None
    """The folder on the server holding the location (SFTP, SMB), or None (S3)."""
    server: object

    def stored_bytes(self) -> int:
        if self.stored is None:
            bucket, prefix = self.address.split("/", 3)[3].split("/", 1)
            return int(self.server.stored_bytes(bucket, prefix))  # type: ignore[attr-defined]
        chunks = self.stored / "chunks"
        return sum(f.stat().st_size for f in chunks.rglob("*") if f.is_file())


@pytest.fixture(params=["smb", "sftp", "s3"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Location:
    folder = f"pc-{uuid.uuid4().hex[:8]}"
    home = tmp_path / "home"
    home.mkdir()
    base = {"HOME": str(home)}  # known_hosts goes here, not into /root/.ssh
    if request.param == "smb":
        server = request.getfixturevalue("smb_server")
        return Location(
            "smb",
            server.address(folder),
            {**base, **server.env()},
            [],
            SMB_PASSWORD,
            {**base, "RECOVERY_PASSWORD": "wrong-password"},
            server.share / folder,
            server,
        )
    if request.param == "sftp":
        server = request.getfixturevalue("ssh_server")
        return Location(
            "sftp",
            server.address(folder),
            {**base, **server.env()},
            ["--identity", str(server.identity), "--accept-new-host-key"],
            SSH_PASSPHRASE,
            {**base, "RECOVERY_PASSWORD": "wrong-passphrase"},
            server.root / folder,
            server,
        )
    server = request.getfixturevalue("s3_server")
    return Location(
        "s3",
        server.address("backups", folder),
        {**base, **server.env()},
        [],
        S3_SECRET_KEY,
        {**base, **server.env(), "AWS_SECRET_ACCESS_KEY": "wrong-secret-key"},
        None,
        server,
    )


def cmdlines(root: int) -> list[str]:
    """The command lines of ``root`` and every process below it, now.

    Only that tree: reading another process's cmdline takes its memory map lock, and on this
    shared machine a process stuck on a FUSE file (another test's) would block the read.
    """
    found = []
    for pid in [root, *descendants(root)]:
        with contextlib.suppress(OSError):
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            found.append(raw.replace(b"\0", b" ").decode(errors="replace"))
    return found


def recovery(
    loc: Location, *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the CLI with ``loc``'s secrets in its environment, watching every process's command
    line meanwhile: the secret must never appear in one, nor in the output."""
    full_env = dict(os.environ, **(env if env is not None else loc.env), PYTHONFAULTHANDLER="1")
    # Output goes to files, not pipes: nothing reads a pipe while the command runs, and --json
    # progress fills one (64 KiB) long before a backup ends.
    with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
        proc = subprocess.Popen(
            [*recovery_cmd(), *args],
            stdout=out_f,
            stderr=err_f,
            stdin=subprocess.DEVNULL,
            text=True,
            env=full_env,
        )
        seen_secret = []
        deadline = time.monotonic() + COMMAND_TIMEOUT
        while proc.poll() is None:
            seen_secret += [c for c in cmdlines(proc.pid) if loc.secret in c]
            if time.monotonic() > deadline:
                proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
                proc.wait(30)
            time.sleep(0.05)
        out_f.seek(0)
        err_f.seek(0)
        out, err = out_f.read(), err_f.read()
    assert not seen_secret, seen_secret
    assert loc.secret not in out + err
    r = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    if check and r.returncode != 0:
        raise AssertionError(f"recovery {' '.join(args)} exited {r.returncode}:\n{out}\n{err}")
    return r


def test_backup_list_verify_restore_dedupe_remove(loop, location: Location) -> None:  # type: ignore[no-untyped-def]
    src, parts = make_gpt_system_disk(loop)
    want_files = ext4_digest(parts[1])
    loc = location
    repo = loc.address

    r = recovery(loc, "backup", src, "--to", repo, "--name", "first", "--json", *loc.options)
    result = json.loads(r.stdout[r.stdout.index("{\n") :])
    assert result["image"]["name"] == "first"
    stored = loc.stored_bytes()
    assert 0 < stored < 60 * MiB, stored

    listing = json.loads(recovery(loc, "images", repo, "--json", *loc.options).stdout)
    assert [i["name"] for i in listing["images"]] == ["first"]
    assert "intact" in recovery(loc, "verify", f"{repo}::first", *loc.options).stdout

    blank = loop(512 * MiB)
    recovery(loc, "restore", f"{repo}::first", blank, "--yes", *loc.options)
    assert sfdisk_dump(blank) == sfdisk_dump(src)
    bparts = loopdev.partition_paths(blank)
    assert ext4_digest(bparts[1]) == want_files
    loopdev.run("e2fsck", "-fn", bparts[1])

    recovery(loc, "backup", src, "--to", repo, "--name", "second", *loc.options)
    assert loc.stored_bytes() - stored < stored // 100, (stored, loc.stored_bytes())

    recovery(loc, "remove", f"{repo}::first", "--yes", *loc.options)
    assert "intact" in recovery(loc, "verify", f"{repo}::second", *loc.options).stdout
    recovery(loc, "remove", f"{repo}::second", "--yes", *loc.options)
    assert loc.stored_bytes() == 0
    listing = json.loads(recovery(loc, "images", repo, "--json", *loc.options).stdout)
    assert listing["images"] == []


def test_wrong_secret_is_one_clear_line(loop, location: Location) -> None:  # type: ignore[no-untyped-def]
    src = loop(8 * MiB)
    loc = location
    r = recovery(
        loc, "backup", src, "--to", loc.address, "--yes", *loc.options, env=loc.wrong, check=False
    )
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "refused" in lines[0] or "passphrase" in lines[0], lines[0]
    assert loc.address in lines[0]
    for secret in loc.wrong.values():
        if "wrong" in secret:
            assert secret not in r.stderr + r.stdout


def test_server_going_away_mid_backup_then_a_rerun_works(loop, location: Location) -> None:  # type: ignore[no-untyped-def]
    """The server is killed while chunks travel (several uploads in flight at once): one clear
    line, no image appears, the image already there still verifies, and a rerun succeeds."""
    src, _ = make_gpt_system_disk(loop)
    loc = location
    service = loc.server.service  # type: ignore[attr-defined]
    before = loop(64 * MiB)
    loopdev.run("dd", "if=/dev/urandom", f"of={before}", "bs=1M", "count=8", "conv=fsync")
    recovery(loc, "backup", before, "--to", loc.address, "--name", "before", *loc.options)
    stored_before = loc.stored_bytes()
    args = ["backup", src, "--to", loc.address, "--name", "gone", *loc.options]
    proc = subprocess.Popen(
        [*recovery_cmd(), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ, **loc.env),
    )
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if loc.stored_bytes() > stored_before:
                break
            time.sleep(0.02)
        service.stop()
        _, err = proc.communicate(timeout=180)
    finally:
        if service.proc is None:
            service.start()
    assert proc.returncode != 0, "the backup finished before the server was stopped"
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert "stopped answering" in last and loc.address in last, err
    assert loc.secret not in err

    listing = json.loads(recovery(loc, "images", loc.address, "--json", *loc.options).stdout)
    assert [i["name"] for i in listing["images"]] == ["before"]
    assert "intact" in recovery(loc, "verify", f"{loc.address}::before", *loc.options).stdout
    recovery(loc, *args)
    for name in ("before", "gone"):
        assert "intact" in recovery(loc, "verify", f"{loc.address}::{name}", *loc.options).stdout


@pytest.mark.parametrize("location", ["s3"], indirect=True)
def test_two_machines_backing_up_to_one_prefix_at_once(loop, location: Location) -> None:  # type: ignore[no-untyped-def]
    """Two processes start a backup to one location together, as two machines would (--wait):
    one waits for the other's lease and both finish; both images are whole. Without --wait the
    second is refused at once in one line naming the other writer (test_faults.py)."""
    loc = location
    disks = [make_gpt_system_disk(loop)[0] for _ in range(2)]
    recovery(loc, "backup", disks[0], "--to", loc.address, "--name", "first", *loc.options)
    runs = []
    with tempfile.TemporaryDirectory() as out:
        for i, disk in enumerate(disks):
            with open(f"{out}/err{i}", "w") as err:
                args = ["backup", disk, "--to", loc.address, "--name", f"pc{i}", "--wait", "600"]
                args += loc.options
                runs.append(
                    subprocess.Popen(
                        [*recovery_cmd(), *args],
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                        stdin=subprocess.DEVNULL,
                        env=dict(os.environ, **loc.env),
                    )
                )
        codes = [p.wait(300) for p in runs]
        errors = [Path(f"{out}/err{i}").read_text() for i in range(2)]
    assert codes == [0, 0], errors
    listing = json.loads(recovery(loc, "images", loc.address, "--json", *loc.options).stdout)
    names = sorted(i["name"] for i in listing["images"])
    assert names == sorted(["first"] + [f"pc{i}" for i, c in enumerate(codes) if c == 0])
    for name in names:
        assert "intact" in recovery(loc, "verify", f"{loc.address}::{name}", *loc.options).stdout


def test_open_reads_a_file_and_its_server_shows_no_secret(  # type: ignore[no-untyped-def]
    loop, location: Location, tmp_path: Path
) -> None:
    """``open`` on a network image: a file read through the view is the source's; the view's
    server (a daemon: not below the command, so checked by its pid), its children (FUSE
    drivers, mount) and its log file never hold the secret."""
    src, parts = make_gpt_system_disk(loop)
    loc = location
    with mounted(parts[1], readonly=True) as m:
        want = (m / "etc" / "os-release").read_bytes()
    recovery(loc, "backup", src, "--to", loc.address, "--name", "img", *loc.options)
    run_dir, view = tmp_path / "run", tmp_path / "view"
    view.mkdir()
    env = {**loc.env, "RECOVERY_RUN_DIR": str(run_dir)}
    r = recovery(loc, "open", f"{loc.address}::img", str(view), "--json", *loc.options, env=env)
    opened = json.loads(r.stdout[r.stdout.index("{") :])
    try:
        assert (view / "p2" / "etc" / "os-release").read_bytes() == want
        seen = cmdlines(int(opened["pid"]))
        assert seen and not [c for c in seen if loc.secret in c], seen
        logs = list(run_dir.rglob("*.log"))
        assert logs and all(loc.secret not in f.read_text(errors="replace") for f in logs)
    finally:
        recovery(loc, "close", str(view), env=env)
