"""Building realistic test disks on loop devices, and comparing their contents.

Shared by the storage tests (imaging, clone, TUI). Every disk is a loop device attached by the
``loop`` fixture; file systems are made with the real mkfs tools; ext4 is filled through a real
mount, FAT through mtools (this kernel has no vfat).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests import loopdev

MiB = 1 << 20
REAL_FILES = [
    "/usr/lib/python3/dist-packages",
    "/usr/share/perl5",
    "/usr/lib/x86_64-linux-gnu/perl-base",
]
RECOVERY = ["python", "-m", "recovery"]


def recovery_cmd() -> list[str]:
    import sys

    return [sys.executable, "-m", "recovery"]


def run_recovery(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    r = subprocess.run([*recovery_cmd(), *args], capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise AssertionError(
            f"recovery {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
        )
    return r


@contextlib.contextmanager
def mounted(part: str, readonly: bool = False) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="recovery-test-mnt-"))
    opts = ["-o", "ro"] if readonly else []
    loopdev.run("mount", *opts, part, str(d))
    try:
        yield d
    finally:
        loopdev.run("umount", str(d))
        d.rmdir()


def fill_ext4(part: str, real_mb: int = 40, deleted_mb: int = 30) -> None:
    """Random data written then deleted (it stays in free blocks), then real files over it."""
    with mounted(part) as m:
        junk = m / "junk"
        with open(junk, "wb") as f:
            for _ in range(deleted_mb):
                f.write(os.urandom(MiB))
            f.flush()
            os.fsync(f.fileno())
        junk.unlink()
        copied = 0
        for src in REAL_FILES:
            if not os.path.isdir(src):
                continue
            dst = m / Path(src).name
            shutil.copytree(
                src,
                dst,
                symlinks=True,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("__pycache__"),
            )
            copied += tree_size(dst)
            if copied > real_mb * MiB:
                break
        (m / "etc").mkdir(exist_ok=True)
        (m / "etc" / "os-release").write_text('NAME="Test Linux"\nID=test\n')
        (m / "hole.bin").write_bytes(b"\0" * (3 * MiB))  # used blocks that are all zero


def tree_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())


def tree_digest(root: Path) -> dict[str, str]:
    out = {}
    for f in sorted(root.rglob("*")):
        rel = str(f.relative_to(root))
        if rel.startswith("lost+found"):
            continue
        if f.is_symlink():
            out[rel] = "link:" + os.readlink(f)
        elif f.is_file():
            out[rel] = hashlib.sha256(f.read_bytes()).hexdigest()
        elif f.is_dir():
            out[rel] = "dir"
    return out


def ext4_digest(part: str) -> dict[str, str]:
    with mounted(part, readonly=True) as m:
        return tree_digest(m)


def fat_put(part: str, name: str, data: bytes) -> None:
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
        subprocess.run(["mcopy", "-o", "-i", part, f.name, f"::/{name}"], check=True, env=env)


def fat_get(part: str, name: str) -> bytes:
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    return subprocess.run(
        ["mtype", "-i", part, f"::/{name}"], check=True, env=env, capture_output=True
    ).stdout


def blkid(part: str) -> dict[str, str]:
    out = loopdev.run("blkid", "-p", "-o", "export", part, check=False).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def sfdisk_dump(dev: str) -> list[str]:
    """The table as sfdisk sees it, with the device name taken out."""
    lines = loopdev.run("sfdisk", "--dump", dev).stdout.splitlines()
    return [ln.replace(dev, "DEV") for ln in lines if not ln.startswith("device:")]


def make_gpt_system_disk(loop, size: int = 512 * MiB) -> tuple[str, list[str]]:  # type: ignore[no-untyped-def]
    """ESP (FAT32) + ext4 root with real files over deleted data + swap."""
    dev = loop(size)
    parts = loopdev.partition(
        dev,
        "label: gpt\n"
        'size=40MiB, type=uefi, name="EFI system"\n'
        "size=300MiB, type=linux, name=root\n"
        "type=swap\n",
    )
    loopdev.mkfs(parts[0], "vfat", "-F", "32", "-n", "ESP")
    loopdev.mkfs(parts[1], "ext4", "-L", "root")
    loopdev.mkfs(parts[2], "swap", "-L", "swap0")
    fat_put(parts[0], "BOOTX64.EFI", os.urandom(300_000))
    fill_ext4(parts[1])
    loopdev.settle(dev)
    return dev, parts
