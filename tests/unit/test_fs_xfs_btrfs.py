"""The xfs and btrfs used-block readers on images made by the real mkfs, and their fuzzers.

Images are sparse files; they are kept in memory as their non-zero 4 KiB blocks (a btrfs must be
at least 109 MiB), and the fuzzers damage those blocks: that is where the metadata is. Promise:
the reader opens, or raises our own FileSystemError; the extents it gives are sorted, disjoint
and inside the file system; nothing else escapes and nothing hangs.
"""

from __future__ import annotations

import os
import re
import subprocess
from itertools import islice
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recovery.core.extents import total
from recovery.errors import DamagedFileSystem, FileSystemError, NotThisFileSystem
from recovery.filesystems.base import open_filesystem
from recovery.filesystems.btrfs import Btrfs
from recovery.filesystems.xfs import Xfs
from tests.loopdev import have

MiB = 1 << 20
BLOCK = 4096
XFS_SMALL = {"TEST_DIR": "1", "TEST_DEV": "1", "QA_CHECK_FS": "1"}  # mkfs.xfs below 300 MB

pytestmark = pytest.mark.skipif(
    not (have("mkfs.xfs") and have("mkfs.btrfs")), reason="needs xfsprogs and btrfs-progs"
)


class SparseSource:
    """A BlockSource over the non-zero 4 KiB blocks of an image (zeros elsewhere)."""

    def __init__(self, blocks: dict[int, bytes], size: int) -> None:
        self.blocks = blocks
        self.size = size

    @classmethod
    def of_file(cls, path: Path) -> SparseSource:
        blocks = {}
        size = path.stat().st_size
        with open(path, "rb") as f:
            for i in range(size // BLOCK):
                data = f.read(BLOCK)
                if data.count(0) != BLOCK:
                    blocks[i] = data
        return cls(blocks, size)

    def pread(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        out = bytearray(length)
        first, last = offset // BLOCK, (offset + length - 1) // BLOCK
        for i in range(first, last + 1) if length else ():
            block = self.blocks.get(i)
            if block is None:
                continue
            lo = max(offset, i * BLOCK)
            hi = min(offset + length, (i + 1) * BLOCK)
            out[lo - offset : hi - offset] = block[lo - i * BLOCK : hi - i * BLOCK]
        return bytes(out)


def make_tree(root: Path) -> Path:
    root.mkdir()
    (root / "small").write_bytes(os.urandom(3000))
    (root / "big").write_bytes(os.urandom(3 * MiB))
    (root / "dir").mkdir()
    for i in range(300):
        (root / "dir" / f"f{i}").write_bytes(os.urandom(100 + i * 37))
    (root / "link").symlink_to("small")
    return root


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SparseSource]:
    d = tmp_path_factory.mktemp("mkfs")
    out = {}
    xfs = d / "xfs.img"
    with open(xfs, "wb") as f:
        f.truncate(32 * MiB)
    subprocess.run(
        ["mkfs.xfs", "-q", "-f", "-L", "tiny", str(xfs)],
        check=True,
        capture_output=True,
        env={**os.environ, **XFS_SMALL},
    )
    out["xfs"] = SparseSource.of_file(xfs)
    xfs4 = d / "xfs4.img"
    with open(xfs4, "wb") as f:
        f.truncate(32 * MiB)
    subprocess.run(
        ["mkfs.xfs", "-q", "-f", "-m", "crc=0", "-b", "size=1024", str(xfs4)],
        check=True,
        capture_output=True,
        env={**os.environ, **XFS_SMALL},
    )
    out["xfs4"] = SparseSource.of_file(xfs4)
    btrfs = d / "btrfs.img"
    with open(btrfs, "wb") as f:
        f.truncate(128 * MiB)
    subprocess.run(
        ["mkfs.btrfs", "-q", "-f", "-L", "tiny", "--rootdir", str(make_tree(d / "t")), str(btrfs)],
        check=True,
        capture_output=True,
    )
    out["btrfs"] = SparseSource.of_file(btrfs)
    images_path["btrfs"] = btrfs
    return out


images_path: dict[str, Path] = {}


def walk(source: SparseSource, fstype: str | None) -> list[tuple[int, int]] | None:
    fs = open_filesystem(source, fstype)
    if fs is None:
        return None
    extents = list(islice(fs.used_extents(), 100_000))
    end = -1
    for start, length in extents:
        assert start > end and length > 0, extents[:10]
        end = start + length - 1
    assert end < max(source.size, fs.geometry.fs_size)
    return extents


def test_xfs_used_blocks_are_the_complement_of_its_free_space(
    images: dict[str, SparseSource],
) -> None:
    for name in ("xfs", "xfs4"):
        fs = open_filesystem(images[name], "xfs")
        assert isinstance(fs, Xfs)
        used = total(fs.used_extents())
        free = sum(count for ag in range(fs.sb.ag_count) for _, count in fs.free_extents(ag))
        assert used + free * fs.sb.block_size == fs.geometry.fs_size
        # The superblock, the AG headers and the internal log are in use.
        extents = list(fs.used_extents())
        assert extents[0].start == 0
        log = fs.sb.log_start * fs.sb.block_size  # one AG here: AG-relative = absolute
        assert any(s <= log < s + n for s, n in extents)
    assert open_filesystem(images["xfs"], None).geometry.label == "tiny"  # type: ignore[union-attr]


def test_btrfs_used_blocks_hold_every_extent_and_no_free_chunk_space(
    images: dict[str, SparseSource],
) -> None:
    fs = open_filesystem(images["btrfs"], "btrfs")
    assert isinstance(fs, Btrfs) and fs.geometry.label == "tiny"
    extents = list(fs.used_extents())
    used = total(extents)
    # bytes_used counts one copy of metadata; DUP metadata is stored twice; plus the first MiB.
    assert used >= fs.sb.bytes_used
    assert used < fs.sb.bytes_used * 2 + 2 * MiB
    allocated = sum(c.stripe_length * len(c.stripes) for c in fs.chunks)
    assert used < allocated
    # Every extent btrfs-progs lists (both copies of DUP metadata) lies inside a used range.
    listing = subprocess.run(
        ["btrfs", "inspect-internal", "dump-tree", "-t", "extent", str(images_path["btrfs"])],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = re.findall(r"key \((\d+) (EXTENT_ITEM|METADATA_ITEM) (\d+)\)", listing)
    assert len(found) > 5
    for bytenr, kind, offset in found:
        length = int(offset) if kind == "EXTENT_ITEM" else fs.sb.node_size
        chunk = fs.chunk_at(int(bytenr))
        for _, stripe in chunk.stripes:
            at = stripe + int(bytenr) - chunk.logical
            assert any(s <= at and at + length <= s + n for s, n in extents), (bytenr, kind)


def test_other_data_is_not_taken_for_xfs_or_btrfs(images: dict[str, SparseSource]) -> None:
    with pytest.raises(NotThisFileSystem):
        Xfs.open(images["btrfs"])
    with pytest.raises(NotThisFileSystem):
        Btrfs.open(images["xfs"])


def test_cut_short_partition_is_damaged(images: dict[str, SparseSource]) -> None:
    for name, cls in (("xfs", Xfs), ("btrfs", Btrfs)):
        src = images[name]
        with pytest.raises(DamagedFileSystem):
            cls.open(SparseSource(src.blocks, src.size // 2))


FUZZ = settings(
    max_examples=200,
    deadline=5000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def damaged(source: SparseSource, flips: list[tuple[int, int, int]]) -> SparseSource:
    blocks = dict(source.blocks)
    keys = sorted(blocks)
    for pick, offset, mask in flips:
        i = keys[pick % len(keys)]
        data = bytearray(blocks[i])
        data[offset % BLOCK] ^= mask
        blocks[i] = bytes(data)
    return SparseSource(blocks, source.size)


@FUZZ
@given(
    name=st.sampled_from(["xfs", "xfs4", "btrfs"]),
    fstype=st.sampled_from([None, "xfs", "btrfs"]),
    flips=st.lists(
        st.tuples(st.integers(0, 1 << 20), st.integers(0, BLOCK - 1), st.integers(1, 255)),
        min_size=1,
        max_size=6,
    ),
)
def test_fuzz_damaged_xfs_and_btrfs(
    images: dict[str, SparseSource],
    name: str,
    fstype: str | None,
    flips: list[tuple[int, int, int]],
) -> None:
    try:
        walk(damaged(images[name], flips), fstype)
    except FileSystemError as e:
        assert e.message


def test_damaged_tree_blocks_are_caught(images: dict[str, SparseSource]) -> None:
    """Damage in a tree block (not the superblock) is caught by the tree checks."""
    src = images["btrfs"]
    fs = Btrfs.open(src)
    for logical in (fs.sb.chunk_root, fs.sb.root):
        for field in (0x20, 0x30, 0x64):  # its fs id, its own address, its level
            at = fs.physical(logical) + field
            data = bytearray(src.blocks[at // BLOCK])
            data[at % BLOCK] ^= 0x5A
            blocks = {**src.blocks, at // BLOCK: bytes(data)}
            with pytest.raises(DamagedFileSystem):
                walk(SparseSource(blocks, src.size), "btrfs")
    xfs = images["xfs"]
    fs4 = Xfs.open(xfs)
    agf = fs4.agf(0)
    at = agf.bno_root * fs4.sb.block_size + 8  # the first leaf's left sibling
    data = bytearray(xfs.blocks[at // BLOCK])
    data[at % BLOCK] ^= 0x01
    with pytest.raises(DamagedFileSystem):
        walk(SparseSource({**xfs.blocks, at // BLOCK: bytes(data)}, xfs.size), "xfs")
