"""A GPT disk with an EFI partition (FAT32), an ext4 root and an NTFS data partition, each
holding known files, for the open/extract tests (issue 12) and `make bench`'s open ratio."""

from __future__ import annotations

import os
import random
import subprocess
import tempfile
from pathlib import Path

from tests import loopdev
from tests.storage.disks import MiB, mounted

BIG = 200 * MiB


def compressible(size: int, seed: int = 1) -> bytes:
    """Bytes that zstd compresses about 3:1 (words, not random noise), like real files."""
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randrange(3, 12)).hex() for _ in range(4096)]
    out = bytearray()
    while len(out) < size:
        out += (" ".join(rng.choices(words, k=4096)) + "\n").encode()
    return bytes(out[:size])


def make_open_disk(loop, big: int = BIG) -> tuple[str, list[str]]:  # type: ignore[no-untyped-def]
    """The disk of issue 12's "Done when"; returns the disk and its partitions."""
    dev = loop(big + 256 * MiB)
    parts = loopdev.partition(
        dev,
        "label: gpt\n"
        'size=40MiB, type=uefi, name="EFI system"\n'
        f"size={big // MiB + 100}MiB, type=linux, name=root\n"
        "type=linux, name=data\n",
    )
    loopdev.mkfs(parts[0], "vfat", "-F", "32", "-n", "ESP")
    loopdev.mkfs(parts[1], "ext4", "-L", "root")
    loopdev.mkfs(parts[2], "ntfs", "-L", "data")
    fill_fat(parts[0])
    fill_ext4_open(parts[1], big)
    fill_ntfs(parts[2])
    loopdev.settle(dev)
    return dev, parts


def fill_fat(part: str) -> None:
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    with tempfile.TemporaryDirectory() as t:
        root = Path(t) / "EFI"
        (root / "BOOT").mkdir(parents=True)
        (root / "BOOT" / "BOOTX64.EFI").write_bytes(os.urandom(300_000))
        (root / "BOOT" / "grub.cfg").write_text("set timeout=1\n")
        (root / "debian").mkdir()
        (root / "debian" / "shimx64.efi").write_bytes(compressible(900_000, 2))
        subprocess.run(["mcopy", "-s", "-m", "-i", part, str(root), "::/"], check=True, env=env)


def fill_ext4_open(part: str, big: int) -> None:
    with mounted(part) as m:
        home = m / "home" / "alice"
        home.mkdir(parents=True)
        (home / "big.bin").write_bytes(compressible(big, 3))
        (home / "notes.txt").write_text("thesis notes\n" * 100)
        os.chmod(home / "notes.txt", 0o640)
        os.chown(home / "notes.txt", 1000, 1000)
        os.link(home / "notes.txt", home / "notes-hardlink.txt")
        os.symlink("notes.txt", home / "latest")
        os.symlink("/etc/does-not-exist", home / "dangling")
        (home / "tagged.txt").write_text("has an xattr\n")
        os.setxattr(home / "tagged.txt", "user.origin", b"issue-12")
        sub = home / "deep" / "er"
        sub.mkdir(parents=True)
        (sub / "leaf.dat").write_bytes(os.urandom(70_000))
        os.utime(sub / "leaf.dat", ns=(1_600_000_000_123_456_789, 1_500_000_000_987_654_321))
        os.chmod(home / "deep", 0o700)
        (m / "etc").mkdir()
        (m / "etc" / "hostname").write_text("testbox\n")


def fill_ntfs(part: str) -> None:
    d = Path(tempfile.mkdtemp(prefix="recovery-test-ntfs-"))
    loopdev.run("ntfs-3g", part, str(d))
    try:
        docs = d / "Users" / "bob" / "Documents"
        docs.mkdir(parents=True)
        (docs / "report.docx").write_bytes(compressible(2_500_000, 4))
        (docs / "small.txt").write_text("hello from ntfs\n")
        os.link(docs / "small.txt", docs / "small-link.txt")
        os.utime(docs / "small.txt", ns=(1_600_000_000_000_000_000, 1_550_000_000_000_000_000))
    finally:
        loopdev.run("umount", str(d))
        d.rmdir()


def left_behind(directory: Path, pid: int) -> list[str]:
    """What a closed view left behind: a mount or loop device under ``directory``, its server
    process ``pid``, or files in the folder (empty when it closed cleanly)."""
    problems = []
    mounts = Path("/proc/self/mounts").read_text()
    if str(directory) in mounts:
        problems.append("a mount is left: " + mounts)
    loops = subprocess.run(["losetup", "-l", "-n"], capture_output=True, text=True).stdout
    if str(directory) in loops:
        problems.append("a loop device is left: " + loops)
    if Path(f"/proc/{pid}").exists():
        problems.append(f"the server {pid} still runs")
    if any(directory.iterdir()):
        problems.append(f"{directory} is not empty: {list(directory.iterdir())}")
    return problems
