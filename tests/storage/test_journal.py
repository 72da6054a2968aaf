"""Crashed Linux (issue 15, part 2): an ext4 copied while mounted (its journal needs recovery)
is imaged by its used blocks with the journal replayed into the image, never writing the
source; a partition mounted read-write is refused unless --force."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import loopdev
from tests.storage.disks import REAL_FILES, MiB, ext4_digest, run_recovery, tree_digest


def sha256_of(dev: str) -> str:
    h = hashlib.sha256()
    with open(dev, "rb") as f:
        while chunk := f.read(8 * MiB):
            h.update(chunk)
    return h.hexdigest()


def repo_bytes(repo: Path) -> int:
    return sum(f.stat().st_size for f in (repo / "chunks").rglob("*") if f.is_file())


def superblock_features(part: str) -> str:
    out = loopdev.run("dumpe2fs", "-h", part).stdout
    return next(ln for ln in out.splitlines() if ln.startswith("Filesystem features:"))


@pytest.fixture
def live_ext4(loop, tmp_path: Path) -> Iterator[tuple[str, str, Path]]:  # type: ignore[no-untyped-def]
    """A GPT disk whose ext4 is mounted read-write with files written and synced: (disk,
    partition, mount point). Unmounted at the end if still mounted."""
    dev = loop(320 * MiB, "live.img")
    (part,) = loopdev.partition(dev, "label: gpt\ntype=linux, name=root\n")
    loopdev.mkfs(part, "ext4", "-L", "root")
    mnt = Path(tempfile.mkdtemp(prefix="recovery-test-live-"))
    loopdev.run("mount", part, str(mnt))
    try:
        copied = 0
        for src in REAL_FILES:
            if os.path.isdir(src) and copied < 60 * MiB:
                dst = mnt / Path(src).name
                shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
                copied += sum(f.stat().st_size for f in dst.rglob("*") if f.is_file())
        (mnt / "random.bin").write_bytes(os.urandom(20 * MiB))
        os.sync()
        yield dev, part, mnt
    finally:
        if os.path.ismount(mnt):
            loopdev.run("umount", str(mnt))
        mnt.rmdir()


def test_ext4_copied_while_mounted_is_imaged_replayed(loop, tmp_path: Path, live_ext4) -> None:  # type: ignore[no-untyped-def]
    dev, _part, mnt = live_ext4
    want = tree_digest(mnt)
    # The crash: the disk's bytes as they are while the file system is mounted.
    crashed_file = tmp_path / "crashed.img"
    backing = Path(loopdev.run("losetup", "-nO", "BACK-FILE", dev).stdout.strip())
    shutil.copyfile(backing, crashed_file)
    loopdev.run("umount", str(mnt))  # the original is now clean: the reference size
    clean_repo = tmp_path / "clean"
    run_recovery("backup", dev, "--to", str(clean_repo), "--name", "clean")

    crashed = loopdev.attach(crashed_file)
    try:
        loopdev.sync_partitions(crashed)  # this kernel reads no GPT by itself: BLKPG
        loopdev.settle(crashed)
        (cpart,) = loopdev.partition_paths(crashed)
        assert "needs_recovery" in superblock_features(cpart)
        before = sha256_of(crashed)

        repo = tmp_path / "repo"
        r = run_recovery("backup", crashed, "--to", str(repo), "--name", "crashed")
        out = r.stdout + r.stderr
        assert "journal needed recovery" in out and "replayed into the image" in out, out
        assert "every block" not in out, out
        # Used blocks only: within 5 % of the clean file system's image.
        assert abs(repo_bytes(repo) - repo_bytes(clean_repo)) <= repo_bytes(clean_repo) // 20, (
            repo_bytes(repo),
            repo_bytes(clean_repo),
        )
        assert sha256_of(crashed) == before  # not a byte of the source written

        target = loop(320 * MiB, "target.img")
        run_recovery("restore", f"{repo}::crashed", target, "--yes")
        (tpart,) = loopdev.partition_paths(target)
        assert "needs_recovery" not in superblock_features(tpart)
        loopdev.run("e2fsck", "-fn", tpart)
        assert ext4_digest(tpart) == want

        # The same through clone.
        clone_target = loop(320 * MiB, "clone.img")
        r = run_recovery("clone", crashed, clone_target, "--yes")
        assert "journal was replayed into the copy" in r.stdout + r.stderr
        (ctpart,) = loopdev.partition_paths(clone_target)
        loopdev.run("e2fsck", "-fn", ctpart)
        assert ext4_digest(ctpart) == want
        assert sha256_of(crashed) == before
    finally:
        loopdev.detach(crashed)


def test_mounted_read_write_is_refused_unless_forced(loop, tmp_path: Path, live_ext4) -> None:  # type: ignore[no-untyped-def]
    dev, _part, mnt = live_ext4
    repo = tmp_path / "repo"
    r = run_recovery("backup", dev, "--to", str(repo), check=False)
    assert r.returncode == 3, r.stderr
    assert f"is mounted read-write at {mnt}" in r.stderr
    assert "unmount it, or mount it read-only" in r.stderr
    assert not (repo / "images").exists() or not any((repo / "images").iterdir())
    target = loop(320 * MiB, "target.img")
    r = run_recovery("clone", dev, target, "--yes", check=False)
    assert r.returncode == 3 and f"mounted read-write at {mnt}" in r.stderr, r.stderr

    # --force: imaged, and the plan, the result and the image's record say it.
    r = run_recovery("backup", dev, "--to", str(repo), "--name", "live", "--force", "--json")
    result = json.loads(r.stdout[r.stdout.index("{\n") :])
    assert any("may be inconsistent" in n for n in result["notes"]), result["notes"]
    r = run_recovery("backup", dev, "--to", str(repo), "--name", "live2", "--force")
    assert "may be inconsistent" in r.stdout
    from recovery.repository.store import Repository

    body = Repository.open(str(repo)).read_manifest("live")
    assert [s.get("mounted_rw") for s in body["streams"] if s["id"] == "p1"] == [str(mnt)]
    from recovery.engine import api

    shown = "\n".join(api.restore_plan(str(repo), "live", target).describe())
    assert "the image may be inconsistent" in shown, shown

    # Read-only mounts are fine without --force.
    loopdev.run("mount", "-o", "remount,ro", str(mnt))
    run_recovery("backup", dev, "--to", str(repo), "--name", "ro")
    r = run_recovery("clone", dev, target, "--yes")
    assert "may be inconsistent" not in r.stdout + r.stderr
