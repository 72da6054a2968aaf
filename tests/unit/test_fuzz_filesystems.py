"""Hostile partitions through the reader registry (issue 8): what a backup meets first.

The per-reader fuzzers (tests/unit/test_fs_ext4.py, test_fs_fat.py, test_fs_ntfs.py,
test_fs_swap.py) damage each reader's own images. What they leave out is the path a backup
takes when blkid names no type, or names the wrong one: :func:`open_filesystem` probes *every*
reader on the same bytes. Here every reader meets every other's images with random damage, and
random data with each reader's magic planted at its probe offset (so the fuzzer gets past the
magic check). Promise: a reader or None, or our own FileSystemError; extents sorted, disjoint,
inside the partition; no exception of another kind, no hang (each example has a deadline).
Bounded for CI (about 10 s).
"""

from __future__ import annotations

import shutil
import subprocess
from itertools import islice
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recovery.errors import FileSystemError
from recovery.filesystems.base import BytesSource, open_filesystem, readers

MiB = 1 << 20
SIZE = 4 * MiB

MKFS = {
    "ext4": ["mkfs.ext4", "-q", "-F", "-b", "1024"],
    "ext2": ["mkfs.ext2", "-q", "-F"],
    "vfat12": ["mkfs.vfat", "-F", "12"],
    "vfat16": ["mkfs.vfat", "-F", "16", "-s", "1"],
    "vfat32": ["mkfs.vfat", "-F", "32", "-S", "512", "-s", "1"],
    "ntfs": ["mkntfs", "-F", "-Q", "-q"],
    "swap": ["mkswap"],
}

# Where each on-disk format keeps the bytes a probe looks at first.
MAGICS = [
    (1024 + 0x38, b"\x53\xef"),  # ext2/3/4 superblock magic
    (3, b"NTFS    "),  # NTFS OEM id
    (0x36, b"FAT12   "),  # FAT12 file system type (informational, but mkfs writes it)
    (0x36, b"FAT16   "),  # FAT16 file system type
    (0x52, b"FAT32   "),  # FAT32 file system type
    (510, b"\x55\xaa"),  # boot sector signature
    (4096 - 10, b"SWAPSPACE2"),  # swap, 4 KiB pages
    (0, b"XFSB"),  # xfs superblock
]

FUZZ = settings(
    max_examples=150,
    deadline=5000,  # a reader that loops on damaged metadata fails here rather than hang CI
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("mkfs")
    out = {}
    for name, cmd in MKFS.items():
        if not shutil.which(cmd[0]):
            continue
        path = d / f"{name}.img"
        with open(path, "wb") as f:
            f.truncate(SIZE)
        subprocess.run([*cmd, str(path)], check=True, capture_output=True)
        out[name] = path.read_bytes()
    if len(out) < 4:
        pytest.skip("needs e2fsprogs, dosfstools, ntfs-3g and util-linux (mkswap)")
    return out


def probe_all(data: bytes, fstype: str | None) -> None:
    """Open with the registry and walk the extents; check what comes back."""
    try:
        fs = open_filesystem(BytesSource(data), fstype)
        if fs is None:
            return
        # Enough to reach every bitmap of a 4 MiB volume; a bounded walk on hostile sizes.
        extents = list(islice(fs.used_extents(), 100_000))
    except FileSystemError as e:
        assert e.message
        return
    end = -1
    for start, length in extents:
        assert start > end and length > 0, extents[:10]
        end = start + length - 1
    # Readers may report metadata up to the size they believe; it must stay inside the data
    # they were given, or inside what the file system claims when the partition is cut short.
    assert end < max(len(data), fs.geometry.fs_size), (end, len(data), fs.geometry)


def test_every_reader_finds_its_own_image(images: dict[str, bytes]) -> None:
    names = {cls.name for cls in readers()}
    for name, data in images.items():
        fs = open_filesystem(BytesSource(data), None)
        assert fs is not None and fs.name in names, name


@FUZZ
@given(
    name=st.sampled_from(sorted(MKFS)),
    fstype=st.sampled_from([None, "ext4", "ext2", "vfat", "ntfs", "swap"]),
    flips=st.lists(
        st.tuples(
            # Most damage where the metadata is: boot sectors, superblocks, the first tables.
            st.integers(0, 64 * 1024 - 1) | st.integers(0, SIZE - 1),
            st.integers(1, 255),
        ),
        min_size=1,
        max_size=8,
    ),
    cut=st.sampled_from([None, 512, 4096, 65536, SIZE // 2, SIZE - 1]),
)
def test_fuzz_registry_on_damaged_images(
    images: dict[str, bytes],
    name: str,
    fstype: str | None,
    flips: list[tuple[int, int]],
    cut: int | None,
) -> None:
    if name not in images:
        return
    data = bytearray(images[name])
    for offset, mask in flips:
        data[offset] ^= mask
    probe_all(bytes(data[:cut]), fstype)


@FUZZ
@given(
    base=st.binary(min_size=512, max_size=16384),
    magics=st.lists(st.sampled_from(MAGICS), min_size=1, max_size=3),
    fstype=st.sampled_from([None, "ext4", "vfat", "ntfs", "swap", "xfs"]),
)
def test_fuzz_registry_on_random_data_with_magics(
    base: bytes, magics: list[tuple[int, bytes]], fstype: str | None
) -> None:
    data = bytearray(base.ljust(16384, b"\0"))
    for offset, magic in magics:
        data[offset : offset + len(magic)] = magic
    probe_all(bytes(data), fstype)


def test_magics_are_where_the_readers_look(tmp_path: Path, images: dict[str, bytes]) -> None:
    """The planted magics match real images, so the random-data fuzzer reaches past them."""
    for name, data in images.items():
        assert any(data[o : o + len(m)] == m for o, m in MAGICS if m != b"\x55\xaa"), name
