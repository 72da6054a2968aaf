"""Plans refuse before writing when a program they will run is missing (issue: fail loudly)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.storage.disks import MiB, make_gpt_system_disk, run_recovery


def path_without(tmp_path: Path, *missing: str) -> str:
    """A PATH with every program of this machine's PATH except ``missing`` (symlinks)."""
    bin_dir = tmp_path / "path-without"
    bin_dir.mkdir()
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            link = bin_dir / name
            if name in missing or link.exists() or link.is_symlink():
                continue
            target = os.path.join(d, name)
            if os.path.isfile(target) and os.access(target, os.X_OK):
                link.symlink_to(target)
    return str(bin_dir)


def head(dev: str) -> bytes:
    with open(dev, "rb") as f:
        return f.read(1 * MiB)


def test_restore_that_grows_ext4_refuses_without_resize2fs(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src, _ = make_gpt_system_disk(loop)
    repo = tmp_path / "repo"
    run_recovery("backup", src, "--to", str(repo), "--name", "first")
    big = loop(1024 * MiB)
    before = head(big)
    env = dict(os.environ, PATH=path_without(tmp_path, "resize2fs"))

    r = run_recovery("restore", f"{repo}::first", big, "--yes", check=False, env=env)

    assert r.returncode == 9, r.stdout + r.stderr
    assert "resize2fs is needed to grow ext4 on the target: install e2fsprogs" in r.stderr
    assert "Traceback" not in r.stderr
    assert head(big) == before  # refused at plan time: nothing was written
    # The same restore onto a disk of the same size grows nothing, so it needs no resize2fs.
    same = loop(512 * MiB)
    run_recovery("restore", f"{repo}::first", same, "--yes", env=env)
