"""filesystems/ext4delta.py: which blocks of an ext4 a delta restore must still compare, on
real file systems made by mkfs.ext4 (``-d`` fills them without mounting) and changed with
debugfs, the tool that writes an inode's fields directly; and fuzzed: damaged tables and
superblocks on either side give ``None`` or sorted ranges inside the file system, never an
exception."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recovery.filesystems.base import BytesSource
from recovery.filesystems.ext4delta import blocks_to_compare, metadata_ranges

MiB = 1 << 20
SIZE = 32 * MiB
BS = 4096

pytestmark = pytest.mark.skipif(not shutil.which("debugfs"), reason="needs e2fsprogs")


def debugfs(image: Path, request: str, write: bool = False) -> str:
    args = ["debugfs", *(["-w"] if write else []), "-R", request, str(image)]
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


def blocks_of(image: Path, path: str) -> set[int]:
    return {int(b) for b in debugfs(image, f"blocks {path}").split()}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ext4 with a few files (one spread over many extents: a tree deeper than the inode),
    a folder, a symbolic link and an extended attribute."""
    d = tmp_path_factory.mktemp("ext4delta")
    tree = d / "tree"
    (tree / "docs").mkdir(parents=True)
    (tree / "plain.bin").write_bytes(os.urandom(3 * MiB))
    (tree / "docs" / "note.txt").write_bytes(b"hello\n" * 1000)
    (tree / "link").symlink_to("docs/note.txt")
    with open(tree / "islands.bin", "wb") as f:  # 8 extents: a tree one level deeper
        for k in range(8):
            f.seek(k * MiB)
            f.write(os.urandom(64 << 10))
    image = d / "a.img"
    with open(image, "wb") as f:
        f.truncate(SIZE)
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-b", str(BS), "-d", str(tree), str(image)],
        check=True,
        capture_output=True,
    )
    return image


def copy(made: Path, tmp_path: Path) -> Path:
    out = tmp_path / "t.img"
    shutil.copyfile(made, out)
    return out


def compare(image: Path, target: Path) -> list[tuple[int, int]] | None:
    return blocks_to_compare(BytesSource(image.read_bytes()), BytesSource(target.read_bytes()))


def covered(ranges: list[tuple[int, int]], blocks: set[int]) -> set[int]:
    return {b for b in blocks if any(at <= b * BS < at + n for at, n in ranges)}


def test_the_same_file_system_compares_all_but_plain_file_data(made: Path, tmp_path: Path) -> None:
    target = copy(made, tmp_path)
    ranges = compare(made, target)
    assert ranges is not None
    assert ranges == sorted(ranges)
    assert all(a + n < b for (a, n), (b, _) in itertools.pairwise(ranges))
    plain = blocks_of(made, "/plain.bin")
    assert plain and not covered(ranges, plain)
    # A folder's blocks, the journal's and the inode tables are always compared.
    for path in ("/docs", "<8>"):
        blocks = blocks_of(made, path)
        assert blocks and covered(ranges, blocks) == blocks, path
    stats = debugfs(made, "stats")
    table = int(stats.split("inode table at ")[1].split()[0].rstrip(","))
    assert covered(ranges, {table}) == {table}
    assert covered(ranges, {0}) == {0}  # the superblock


def test_a_changed_inode_makes_its_data_compared_but_a_read_does_not(
    made: Path, tmp_path: Path
) -> None:
    target = copy(made, tmp_path)
    debugfs(target, "sif /plain.bin atime 20300101", write=True)
    ranges = compare(made, target)
    assert ranges is not None and not covered(ranges, blocks_of(made, "/plain.bin"))

    debugfs(target, "sif /plain.bin ctime 20300101", write=True)
    ranges = compare(made, target)
    plain = blocks_of(made, "/plain.bin")
    assert ranges is not None and covered(ranges, plain) == plain


@pytest.mark.parametrize(
    "change",
    [
        "feature needs_recovery",  # a journal to replay: the inodes may be stale
        "ssv state 0",  # not cleanly unmounted
        "ssv state 3",  # errors recorded
        "ssv uuid random",  # another file system
        "ssv mkfs_time 20300101",  # another mkfs
        "ssv last_orphan 12",  # orphans pending
    ],
)
def test_a_target_that_cannot_be_trusted_is_compared_whole(
    made: Path, tmp_path: Path, change: str
) -> None:
    target = copy(made, tmp_path)
    debugfs(target, change, write=True)
    assert compare(made, target) is None
    assert compare(target, made) is None


def test_a_target_without_a_superblock_is_compared_whole(made: Path, tmp_path: Path) -> None:
    # What a restore or clone cut short leaves (engine/delta.py hold_superblock).
    target = copy(made, tmp_path)
    with open(target, "r+b") as f:
        f.seek(1024)
        f.write(bytes(1024))
    assert compare(made, target) is None


FUZZ = settings(
    max_examples=60,
    deadline=5000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(
    side=st.sampled_from(["image", "target", "both"]),
    hits=st.lists(
        st.tuples(st.integers(0, 1 * MiB - 1), st.binary(min_size=1, max_size=64)),
        min_size=1,
        max_size=24,
    ),
)
def test_fuzz_damaged_metadata_gives_none_or_ranges(
    made: Path, side: str, hits: list[tuple[int, bytes]]
) -> None:
    """Damage in the first MiB: superblock, descriptors, bitmaps, inode tables, the first
    folders (mkfs.ext4 puts them there)."""
    clean = made.read_bytes()
    damaged = bytearray(clean)
    for at, data in hits:
        damaged[at : at + len(data)] = data
    image = bytes(damaged) if side in ("image", "both") else clean
    target = bytes(damaged) if side in ("target", "both") else clean
    ranges = blocks_to_compare(BytesSource(image), BytesSource(target))
    if ranges is not None:
        assert ranges == sorted(ranges)
        assert all(n > 0 and at >= 0 and at + n <= SIZE for at, n in ranges), ranges


def test_a_moved_extent_below_the_inode_makes_the_data_compared(made: Path, tmp_path: Path) -> None:
    """e4defrag (EXT4_IOC_MOVE_EXT) rewrites the extent blocks below an inode and leaves the
    inode as it was: a deeper tree block that differs makes the file's data compared."""
    # "Level Entries Logical Physical Length": the root's one entry points at the leaf.
    root = debugfs(made, "ex /islands.bin").splitlines()[1].split()
    assert root[:2] == ["0/", "1"], root
    leaf = int(root[-2])
    data = blocks_of(made, "/islands.bin") - {leaf}
    target = copy(made, tmp_path)
    ranges = compare(made, target)
    assert ranges is not None
    assert covered(ranges, {leaf}) == {leaf} and not covered(ranges, data)
    with open(target, "r+b") as f:
        f.seek(leaf * BS + BS - 8)  # a byte past the extents (the checksum's neighbour)
        f.write(b"\x01")
    ranges = compare(made, target)
    assert ranges is not None and covered(ranges, data) == data


def test_ranges_found_during_the_scan_are_the_answer_beyond_the_metadata(
    made: Path, tmp_path: Path
) -> None:
    """What the scan hands out group by group (engine/delta.py compares it at once) is part of
    its answer, and with metadata_ranges makes up the whole of it."""
    target = copy(made, tmp_path)
    debugfs(target, "sif /plain.bin ctime 20300101", write=True)
    image = BytesSource(made.read_bytes())
    found: list[tuple[int, int]] = []
    ranges = blocks_to_compare(image, BytesSource(target.read_bytes()), found.extend)
    fixed = metadata_ranges(image)
    assert ranges is not None and fixed is not None and found
    assert covered(ranges, blocks_of(made, "/plain.bin")) == blocks_of(made, "/plain.bin")

    def blocks(rs: list[tuple[int, int]]) -> set[int]:
        return {b for at, n in rs for b in range(at // BS, (at + n) // BS)}

    assert blocks(found) <= blocks(ranges)
    assert blocks(found) | blocks(fixed) == blocks(ranges)
