"""Loop devices for tests: real block devices over files the test made, and nothing else.

Every helper here refuses to touch a device that is not a loop device attached by this module in
this process, so a test cannot write to the machine's own disks. See ../shared/ENVIRONMENT.md for
the traps handled here: udevd's watch (a ``nowatch`` rule), a stale udev database (a change
event after each write), udev probing while we write (``flock`` on the whole disk), and missing
partition nodes (BLKPG through ``partx``, never BLKRRPART).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

NOWATCH_RULE = Path("/etc/udev/rules.d/60-recovery-tests-nowatch.rules")
NOWATCH_TEXT = 'ACTION!="remove", SUBSYSTEM=="block", KERNEL=="loop*", OPTIONS+="nowatch"\n'

_ATTACHED: set[str] = set()


def run(
    *cmd: str, input: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, input=input, text=True, capture_output=True, check=check)


def udev_running() -> bool:
    return subprocess.run(["pgrep", "-x", "systemd-udevd"], capture_output=True).returncode == 0


def ensure_udev() -> None:
    """Install the nowatch rule and start udevd if it is not running (idempotent)."""
    if not NOWATCH_RULE.exists() or NOWATCH_RULE.read_text() != NOWATCH_TEXT:
        NOWATCH_RULE.write_text(NOWATCH_TEXT)
        if udev_running():
            run("udevadm", "control", "--reload")
    if not udev_running():
        run("/lib/systemd/systemd-udevd", "--daemon")
        run("udevadm", "trigger", "--subsystem-match=block", "--action=add", check=False)
    run("udevadm", "settle", "--timeout=30", check=False)


def _check_ours(dev: str) -> None:
    if dev not in _ATTACHED:
        raise AssertionError(f"refusing to touch {dev}: not a loop device this test attached")
    if not stat.S_ISBLK(os.stat(dev).st_mode):
        raise AssertionError(f"{dev} is not a block device")


def attach(image: Path, readonly: bool = False) -> str:
    """``image`` as a loop device (``readonly``: the kernel refuses every write to it)."""
    ro = ["--read-only"] if readonly else []
    dev = run("losetup", "--find", "--show", *ro, str(image)).stdout.strip()
    _ATTACHED.add(dev)
    settle(dev)
    return dev


def detach(dev: str) -> None:
    _check_ours(dev)
    with contextlib.suppress(subprocess.CalledProcessError):
        run("partx", "-d", dev)
    for _ in range(50):
        if run("losetup", "-d", dev, check=False).returncode == 0:
            break
        time.sleep(0.1)
    _ATTACHED.discard(dev)
    run("udevadm", "settle", "--timeout=30", check=False)


@contextlib.contextmanager
def loop_disk(directory: Path, size: int, name: str = "disk.img") -> Iterator[str]:
    """A sparse file of ``size`` bytes in ``directory`` attached as a loop device."""
    image = directory / name
    with open(image, "wb") as f:
        f.truncate(size)
    dev = attach(image)
    try:
        yield dev
    finally:
        detach(dev)


@contextlib.contextmanager
def disk_lock(dev: str) -> Iterator[int]:
    """systemd's block-device locking convention: udev leaves a disk alone while it is held."""
    fd = os.open(dev, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def settle(dev: str) -> None:
    """Refresh udev's database for ``dev`` and its partitions and wait for it."""
    run("udevadm", "trigger", "--action=change", dev, check=False)
    run("udevadm", "settle", "--timeout=30", check=False)


def partition(dev: str, sfdisk_script: str) -> list[str]:
    """Write a table with sfdisk, tell the kernel through BLKPG, return the partition paths."""
    _check_ours(dev)
    with disk_lock(dev):
        for attempt in range(10):
            r = run(
                "sfdisk",
                "--no-reread",
                "--no-tell-kernel",
                "-q",
                "-w",
                "always",
                dev,
                input=sfdisk_script,
                check=False,
            )
            if r.returncode == 0:
                break
            time.sleep(0.2 * (attempt + 1))
        else:
            raise RuntimeError(f"sfdisk failed on {dev}: {r.stderr}")
        sync_partitions(dev)
    settle(dev)
    return partition_paths(dev)


def sync_partitions(dev: str) -> None:
    _check_ours(dev)
    # -d then -a: partx -u does not add partitions the kernel has never seen on some versions.
    run("partx", "-d", dev, check=False)
    run("partx", "-a", dev, check=False)


def partition_paths(dev: str) -> list[str]:
    base = Path(dev).name
    sysdir = Path("/sys/class/block") / base
    parts = sorted(
        (int((p / "partition").read_text()), f"/dev/{p.name}")
        for p in sysdir.iterdir()
        if (p / "partition").exists()
    )
    paths = [path for _, path in parts]
    for p in paths:
        for _ in range(100):
            if os.path.exists(p) and stat.S_ISBLK(os.stat(p).st_mode):
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"partition node {p} did not appear")
    return paths


def mkfs(part: str, fstype: str, *args: str) -> None:
    """Make a file system on a partition of one of our loop devices."""
    disk = "/dev/" + Path(f"/sys/class/block/{Path(part).name}/..").resolve().name
    _check_ours(disk)
    tools = {
        "ext4": ["mkfs.ext4", "-q", "-F"],
        "ext2": ["mkfs.ext2", "-q", "-F"],
        "ext3": ["mkfs.ext3", "-q", "-F"],
        "vfat": ["mkfs.vfat"],
        "ntfs": ["mkfs.ntfs", "-Q", "-F"],
        "swap": ["mkswap"],
    }
    run(*tools[fstype], *args, part)
    settle(disk)


def have(tool: str) -> bool:
    return shutil.which(tool) is not None
