"""xfs and btrfs imaged by their used blocks (issue 16): size against partclone, restore checks.

A GPT disk with an xfs and a btrfs partition, each holding real files over deleted random data:
each partition's image must be no larger than 1.05x what `partclone.xfs`/`partclone.btrfs`
piped through `zstd -3` make of it; a restore of the disk must be clean for `xfs_repair -n` and
`btrfs check --readonly` with every file's bytes equal, and on a larger disk xfs grows.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests import loopdev
from tests.storage.disks import MiB, fill_ext4, run_recovery, tree_digest
from tests.storage.test_imaging import repo_size

pytestmark = pytest.mark.skipif(
    not all(
        loopdev.have(t)
        for t in ("mkfs.xfs", "mkfs.btrfs", "xfs_repair", "partclone.xfs", "partclone.btrfs")
    ),
    reason="needs xfsprogs, btrfs-progs and partclone",
)

TABLE = """label: gpt
size=340MiB, type=linux
size=300MiB, type=linux
"""


def digest(part: str, fstype: str) -> dict[str, str]:
    d = Path(loopdev.run("mktemp", "-d").stdout.strip())
    options = "ro,nouuid" if fstype == "xfs" else "ro"
    loopdev.run("mount", "-t", fstype, "-o", options, part, str(d))
    try:
        return tree_digest(d)
    finally:
        loopdev.run("umount", str(d))
        d.rmdir()


def partclone_zstd_size(fstype: str, part: str) -> int:
    clone = subprocess.Popen(
        [f"partclone.{fstype}", "-c", "-s", part, "-o", "-"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    zstd = subprocess.run(
        ["zstd", "-3", "-T0", "-c"], stdin=clone.stdout, capture_output=True, check=True
    )
    assert clone.wait() == 0
    return len(zstd.stdout)


def test_xfs_and_btrfs_by_used_blocks(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = loop(700 * MiB)
    parts = loopdev.partition(src, TABLE)
    loopdev.run("mkfs.xfs", "-q", "-f", "-L", "rootx", parts[0])
    loopdev.run("mkfs.btrfs", "-q", "-f", "-L", "rootb", parts[1])
    loopdev.settle(src)
    for part in parts:
        fill_ext4(part, real_mb=50, deleted_mb=120)
    want = {0: digest(parts[0], "xfs"), 1: digest(parts[1], "btrfs")}
    assert len(want[0]) > 100 and len(want[1]) > 100

    # Each partition alone, so neither image shares chunks with the other.
    for number, fstype in ((0, "xfs"), (1, "btrfs")):
        repo = tmp_path / f"repo-{fstype}"
        run_recovery("backup", parts[number], "--to", str(repo), "--name", fstype)
        ours = repo_size(repo)
        reference = partclone_zstd_size(fstype, parts[number])
        print(
            f"{fstype}: image {ours / MiB:.1f} MiB, partclone + zstd -3 {reference / MiB:.1f} MiB"
        )
        # The deleted random data (120 MiB, incompressible) is not stored.
        assert ours <= 1.05 * reference, (fstype, ours, reference)
        assert ours < 60 * MiB, ours

    repo = tmp_path / "repo"
    run_recovery("backup", src, "--to", str(repo), "--name", "lin")
    target = loop(700 * MiB)
    run_recovery("restore", f"{repo}::lin", target, "--yes")
    tparts = loopdev.partition_paths(target)
    loopdev.run("xfs_repair", "-n", tparts[0])
    loopdev.run("btrfs", "check", "--readonly", tparts[1])
    assert digest(tparts[0], "xfs") == want[0]
    assert digest(tparts[1], "btrfs") == want[1]

    # Larger: the main partition (xfs, the largest) grows, and xfs with it (mounted to grow).
    big = loop(1200 * MiB)
    r = run_recovery("restore", f"{repo}::lin", big, "--yes")
    assert "FAILED" not in r.stdout + r.stderr, r.stdout + r.stderr
    bparts = loopdev.partition_paths(big)
    size = int(loopdev.run("blockdev", "--getsize64", bparts[0]).stdout)
    assert size > 800 * MiB
    info = loopdev.run("xfs_db", "-r", "-c", "sb 0", "-c", "p dblocks blocksize", bparts[0])
    fields = dict(line.split(" = ") for line in info.stdout.splitlines())
    assert int(fields["dblocks"]) * int(fields["blocksize"]) == size, fields
    loopdev.run("xfs_repair", "-n", bparts[0])
    assert digest(bparts[0], "xfs") == want[0]
    assert digest(bparts[1], "btrfs") == want[1]
