"""The file system readers on real partitions of a loop device, read as the engine reads them:
through FileSource over the whole disk, from each partition's start."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery.core.extents import Extent, total
from recovery.filesystems.base import FileSource, FileSystem, open_filesystem
from recovery.filesystems.ext4 import Ext4
from recovery.filesystems.fat import Fat
from recovery.filesystems.swap import Swap
from tests import loopdev
from tests.unit.test_fs_ext4 import complement, dumpe2fs_free, rdump, same_trees
from tests.unit.test_fs_ext4 import make_tree as make_ext_tree
from tests.unit.test_fs_fat import expected_extents, files_of, reference_used
from tests.unit.test_fs_fat import make_tree as make_fat_tree

MiB = 1 << 20
SWAP_UUID = "7d3b1c2a-0f4e-4a5b-8c6d-9e0f1a2b3c4d"

TABLE = """label: gpt
size=100MiB, type=uefi
size=300MiB, type=linux
size=40MiB, type=linux
size=32MiB, type=swap
size=120MiB, type=linux
"""


def mtools(*args: str) -> None:
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    subprocess.run(args, check=True, capture_output=True, env=env)


def blkid(part: str) -> dict[str, str]:
    r = subprocess.run(["blkid", "-p", "-o", "export", part], capture_output=True, text=True)
    return dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)


def span(part: str) -> tuple[int, int]:
    sysdir = Path("/sys/class/block") / Path(part).name
    return int((sysdir / "start").read_text()) * 512, int((sysdir / "size").read_text()) * 512


@pytest.fixture
def disk(loop, tmp_path: Path) -> Iterator[tuple[str, list[str]]]:  # type: ignore[no-untyped-def]
    dev = loop(1024 * MiB)
    parts = loopdev.partition(dev, TABLE)
    assert len(parts) == 5
    ext_tree = make_ext_tree(tmp_path / "ext-tree")
    fat_tree = make_fat_tree(tmp_path / "fat-tree")
    loopdev.mkfs(parts[0], "vfat", "-F", "32", "-n", "EFI")
    mtools("mcopy", "-s", "-i", parts[0], *map(str, sorted(fat_tree.iterdir())), "::/")
    mtools("mdel", "-i", parts[0], "::/dir1/file3.dat")
    loopdev.mkfs(parts[1], "ext4", "-L", "root", "-d", str(ext_tree))
    loopdev.mkfs(parts[2], "vfat", "-F", "16")
    mtools("mcopy", "-s", "-i", parts[2], *map(str, sorted(fat_tree.iterdir())), "::/")
    loopdev.mkfs(parts[3], "swap", "-L", "swap0", "-U", SWAP_UUID)
    loopdev.mkfs(parts[4], "ext2", "-b", "4096", "-d", str(ext_tree))
    # Delete files on the ext2 file system, so there is freed space to leave out.
    subprocess.run(["debugfs", "-w", "-R", "rm big", parts[4]], check=True, capture_output=True)
    loopdev.settle(dev)
    yield dev, parts


def open_part(fd: int, part: str) -> FileSystem:
    start, size = span(part)
    fs = open_filesystem(FileSource(fd, start, size), blkid(part).get("TYPE"))
    assert fs is not None, part
    return fs


def copy_used(part: str, extents: list[Extent], dest: Path) -> Path:
    _, size = span(part)
    with open(part, "rb") as src, open(dest, "wb") as out:
        out.truncate(size)
        for start, length in extents:
            src.seek(start)
            out.seek(start)
            out.write(src.read(length))
    return dest


def test_readers_on_partitions(disk: tuple[str, list[str]], tmp_path: Path) -> None:
    dev, parts = disk
    fd = os.open(dev, os.O_RDONLY)
    try:
        readers = [open_part(fd, p) for p in parts]
        used = [list(fs.used_extents()) for fs in readers]
    finally:
        os.close(fd)
    efi, root, data, swap, old = readers
    assert [type(fs) for fs in readers] == [Fat, Ext4, Fat, Swap, Ext4]

    # FAT32 and FAT16: exactly the clusters the FAT marks, and a copy of them is the volume.
    for fs, part, extents, bits in ((efi, parts[0], used[0], 32), (data, parts[2], used[2], 16)):
        assert isinstance(fs, Fat) and fs.fat_bits == bits
        raw = Path(part).read_bytes()
        assert extents == expected_extents(fs, reference_used(fs, raw))
        copy = copy_used(part, extents, tmp_path / f"fat{bits}.img")
        subprocess.run(["fsck.fat", "-n", str(copy)], check=True, capture_output=True)
        same_trees(
            files_of(Path(part), tmp_path / f"o{bits}"), files_of(copy, tmp_path / f"c{bits}")
        )
    assert efi.geometry.label == "EFI"
    assert efi.geometry.uuid == blkid(parts[0])["UUID"]

    # ext4 and ext2: exactly what dumpe2fs does not list as free; a copy is the same fs.
    for fs, part, extents, name in (
        (root, parts[1], used[1], "ext4"),
        (old, parts[4], used[4], "ext2"),
    ):
        free, size = dumpe2fs_free(Path(part))
        assert fs.geometry.fs_size == size
        assert complement(extents, size) == free
        assert total(extents) < size // 2
        copy = copy_used(part, extents, tmp_path / f"{name}.img")
        subprocess.run(["e2fsck", "-fn", str(copy)], check=True, capture_output=True)
        same_trees(rdump(Path(part), tmp_path / f"o-{name}"), rdump(copy, tmp_path / f"c-{name}"))
    assert root.geometry.label == "root"
    assert root.geometry.uuid == blkid(parts[1])["UUID"]

    # Swap: the header page, and what mkswap needs to make it again.
    assert used[3] == [Extent(0, 4096)]
    assert swap.restore_note() == "recreate"
    assert (swap.geometry.uuid, swap.geometry.label) == (SWAP_UUID, "swap0")
    assert swap.geometry.fs_size == span(parts[3])[1]
