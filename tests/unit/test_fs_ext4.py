"""The ext2/3/4 reader against e2fsprogs, on images made with mkfs.ext4 in regular files.

Each layout is checked two ways: the complement of our used extents must be exactly the free
blocks dumpe2fs lists, and a copy of the image holding only our used extents (zeros elsewhere)
must pass ``e2fsck -fn`` and hold the same files as the original.
"""

from __future__ import annotations

import filecmp
import itertools
import os
import random
import re
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recovery.core.extents import Extent, merge, total
from recovery.errors import DamagedFileSystem, NotThisFileSystem
from recovery.filesystems.base import BytesSource, FileSource, open_filesystem
from recovery.filesystems.ext4 import Ext4
from tests.loopdev import have

pytestmark = pytest.mark.skipif(
    not all(have(t) for t in ("mkfs.ext4", "dumpe2fs", "debugfs", "e2fsck")),
    reason="needs e2fsprogs",
)

MiB = 1 << 20


def run(*cmd: str | Path) -> str:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError(f"{cmd} failed ({r.returncode}): {r.stderr or r.stdout}")
    return r.stdout


def make_tree(root: Path, seed: int = 1) -> Path:
    """Files of many sizes (empty to 3 MiB), nested directories and a symlink."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "empty").write_bytes(b"")
    (root / "big").write_bytes(rng.randbytes(3 * MiB))
    for d in range(3):
        sub = root / f"dir{d}" / "deeper"
        sub.mkdir(parents=True)
        for i in range(15):
            (sub.parent / f"f{i}").write_bytes(rng.randbytes(rng.choice((1, 700, 5000, 70000))))
        (sub / "text").write_text("hello\n" * 1000)
    os.symlink("dir0/f1", root / "link")
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("tree") / "root")


def mkfs(image: Path, size: int, *args: str, tree: Path | None = None) -> Path:
    with open(image, "wb") as f:
        f.truncate(size)
    extra = ["-d", str(tree)] if tree else []
    run("mkfs.ext4", "-q", "-F", *args, *extra, image)
    return image


def open_image(image: Path) -> tuple[Ext4, int]:
    fd = os.open(image, os.O_RDONLY)
    fs = Ext4.open(FileSource(fd, 0, os.fstat(fd).st_size))
    return fs, fd


def used_of(image: Path) -> tuple[Ext4, list[Extent]]:
    fs, fd = open_image(image)
    try:
        return fs, list(fs.used_extents())
    finally:
        os.close(fd)


def dumpe2fs_free(image: Path) -> tuple[list[tuple[int, int]], int]:
    """Free byte ranges per dumpe2fs, merged, and the file system size in bytes."""
    out = run("dumpe2fs", image)
    block = int(re.search(r"^Block size:\s+(\d+)", out, re.M).group(1))  # type: ignore[union-attr]
    count = int(re.search(r"^Block count:\s+(\d+)", out, re.M).group(1))  # type: ignore[union-attr]
    m = re.search(r"^Cluster size:\s+(\d+)", out, re.M)
    # With bigalloc dumpe2fs names each free cluster by its first block.
    unit = int(m.group(1)) if m else block
    free: list[tuple[int, int]] = []
    for line in re.findall(r"^\s+Free blocks: (.*)$", out, re.M):
        for part in filter(None, (p.strip() for p in line.split(","))):
            a, _, b = part.partition("-")
            start = int(a) * block
            end = min(int(b or a) * block + unit, count * block)
            if free and free[-1][1] == start:
                free[-1] = (free[-1][0], end)
            else:
                free.append((start, end))
    return free, count * block


def complement(extents: Iterable[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    out = []
    pos = 0
    for start, length in extents:
        if start > pos:
            out.append((pos, start))
        pos = max(pos, start + length)
    if pos < size:
        out.append((pos, size))
    return out


def well_formed(extents: list[Extent], size: int) -> None:
    for e in extents:
        assert e.length > 0 and e.start >= 0 and e.end <= size, e
    for a, b in itertools.pairwise(extents):
        assert a.end < b.start, (a, b)


def copy_used(image: Path, extents: Iterable[tuple[int, int]], dest: Path) -> Path:
    with open(image, "rb") as src, open(dest, "wb") as out:
        out.truncate(os.fstat(src.fileno()).st_size)
        for start, length in extents:
            src.seek(start)
            out.seek(start)
            out.write(src.read(length))
    return dest


def rdump(image: Path, where: Path) -> Path:
    where.mkdir()
    run("debugfs", "-R", f"rdump / {where}", image)
    return where


def same_trees(a: Path, b: Path) -> None:
    cmp = filecmp.dircmp(a, b)
    assert not cmp.left_only and not cmp.right_only and not cmp.funny_files, cmp.report()
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    assert not mismatch and not errors, (mismatch, errors)
    for d in cmp.common_dirs:
        same_trees(a / d, b / d)


def check_against_e2fsprogs(image: Path, tmp: Path) -> list[Extent]:
    """Exactly the free blocks of dumpe2fs are left out; a copy of the rest is the same fs."""
    fs, used = used_of(image)
    well_formed(used, fs.geometry.fs_size)
    assert used[0].start == 0
    free, size = dumpe2fs_free(image)
    assert fs.geometry.fs_size == size
    assert complement(used, size) == free
    copy = copy_used(image, used, tmp / "copy.img")
    subprocess.run(["e2fsck", "-fn", str(copy)], check=True, capture_output=True)
    same_trees(rdump(image, tmp / "orig"), rdump(copy, tmp / "copied"))
    return used


LAYOUTS = {
    # Debian's defaults: 1 KiB blocks below 512 MiB, 64bit, flex_bg, metadata_csum.
    "ext4-default-1k-multigroup": (300 * MiB, ()),
    "ext4-4k-multigroup": (600 * MiB, ("-b", "4096")),
    "ext4-no-flex_bg": (300 * MiB, ("-O", "^flex_bg")),
    "ext2": (200 * MiB, ("-t", "ext2")),
    "ext3": (200 * MiB, ("-t", "ext3")),
    "ext4-uninit_bg-crc16-32bit": (
        300 * MiB,
        ("-b", "1024", "-O", "^metadata_csum,uninit_bg,^64bit"),
    ),
    "ext4-uninit_bg-crc16-64bit": (1024 * MiB, ("-O", "^metadata_csum,uninit_bg,64bit")),
    "ext4-meta_bg": (1024 * MiB, ("-O", "meta_bg,^resize_inode")),
    "ext4-meta_bg-1k-many": (3072 * MiB, ("-b", "1024", "-O", "meta_bg,^resize_inode")),
    "ext4-sparse_super2": (1024 * MiB, ("-O", "sparse_super2")),
    "ext4-no-sparse_super": (300 * MiB, ("-O", "^sparse_super,^resize_inode")),
    "ext4-csum_seed": (300 * MiB, ("-O", "metadata_csum_seed")),
    "ext4-bigalloc": (5 * 1024 * MiB, ("-O", "bigalloc", "-C", "65536")),
    "ext4-bigalloc-1k-uninit": (5 * 1024 * MiB, ("-b", "1024", "-O", "bigalloc", "-C", "16384")),
    "ext4-64k-blocks": (1024 * MiB, ("-b", "65536")),
    "ext4-2k-short-groups": (200 * MiB, ("-b", "2048", "-g", "2048")),
}


@pytest.mark.parametrize("name", LAYOUTS)
def test_layout_matches_e2fsprogs(name: str, tree: Path, tmp_path: Path) -> None:
    size, args = LAYOUTS[name]
    image = mkfs(tmp_path / "fs.img", size, *args, tree=tree)
    used = check_against_e2fsprogs(image, tmp_path)
    # Free space is really left out (the images are mostly empty).
    assert total(used) < size // 2


def test_uninit_groups_are_covered(tree: Path, tmp_path: Path) -> None:
    image = mkfs(tmp_path / "fs.img", 2048 * MiB, "-b", "4096", tree=tree)
    assert "BLOCK_UNINIT" in run("dumpe2fs", image), "the test needs uninitialised groups"
    check_against_e2fsprogs(image, tmp_path)


def test_deleted_files_are_free(tree: Path, tmp_path: Path) -> None:
    """Files written and then deleted leave holes in the bitmap; none of them is kept."""
    image = mkfs(tmp_path / "fs.img", 300 * MiB, "-b", "4096", tree=tree)
    rng = random.Random(5)
    for i in range(40):
        (tmp_path / f"junk{i}").write_bytes(rng.randbytes(rng.choice((4096, 60000, 300000))))
    cmds = [f"write {tmp_path / f'junk{i}'} junk{i}" for i in range(40)]
    cmds += [f"rm junk{i}" for i in range(0, 40, 2)] + ["rm big"]
    (tmp_path / "cmds").write_text("\n".join(cmds) + "\n")
    run("debugfs", "-w", "-f", tmp_path / "cmds", image)
    used = check_against_e2fsprogs(image, tmp_path)
    fs, _ = used_of(image)
    sb_free = int(re.search(r"^Free blocks:\s+(\d+)", run("dumpe2fs", "-h", image), re.M).group(1))  # type: ignore[union-attr]
    assert total(used) == fs.geometry.fs_size - sb_free * 4096


def test_geometry(tmp_path: Path) -> None:
    image = mkfs(
        tmp_path / "fs.img",
        64 * MiB,
        "-L",
        "rootfs",
        "-U",
        "0b9c7c1e-3f5d-4b8a-9f4e-2d1c0a9b8e7f",
    )
    fs, _ = used_of(image)
    assert fs.geometry.label == "rootfs"
    assert fs.geometry.uuid == "0b9c7c1e-3f5d-4b8a-9f4e-2d1c0a9b8e7f"
    assert fs.geometry.block_size == 1024
    assert fs.geometry.fs_size == 64 * MiB
    assert fs.geometry.notes == ()
    assert fs.restore_note() is None


@pytest.mark.parametrize("fstype", ["ext2", "ext3", "ext4", None])
def test_registry_finds_it(fstype: str | None, tmp_path: Path) -> None:
    image = mkfs(tmp_path / "fs.img", 16 * MiB, "-t", fstype or "ext4")
    fs = open_filesystem(BytesSource(image.read_bytes()), fstype)
    assert isinstance(fs, Ext4)


@pytest.mark.parametrize(
    ("debugfs_cmd", "why"),
    [
        ("feature needs_recovery", "journal needs recovery"),
        ("ssv state 0", "not cleanly unmounted"),
        ("ssv state 3", "recorded errors"),
    ],
)
def test_untrusted_bitmaps_keep_every_block(
    debugfs_cmd: str, why: str, tree: Path, tmp_path: Path
) -> None:
    image = mkfs(tmp_path / "fs.img", 64 * MiB, tree=tree)
    run("debugfs", "-w", "-R", debugfs_cmd, image)
    fs, used = used_of(image)
    assert used == [Extent(0, 64 * MiB)]
    assert any(why in note for note in fs.geometry.notes), fs.geometry.notes


# Damage: each names what is wrong. Edited on ext2 (no checksums) so the edit itself is what
# is found, and on ext4 to see the checksums catch a change.


def patch(image: Path, offset: int, data: bytes) -> None:
    with open(image, "r+b") as f:
        f.seek(offset)
        f.write(data)


@pytest.fixture
def ext2_image(tmp_path: Path) -> Path:
    return mkfs(tmp_path / "fs.img", 32 * MiB, "-t", "ext2", "-b", "1024", "-g", "2048")


@pytest.mark.parametrize(
    ("offset", "value", "field"),
    [
        (1024 + 0x18, (7).to_bytes(4, "little"), "s_log_block_size"),
        (1024 + 0x20, (12345).to_bytes(4, "little"), "s_blocks_per_group"),
        (1024 + 0x24, (0).to_bytes(4, "little"), "s_clusters_per_group"),
        (1024 + 0x28, (0).to_bytes(4, "little"), "s_inodes_per_group"),
        (1024 + 0x00, (7).to_bytes(4, "little"), "s_inodes_count"),
        (1024 + 0x14, (0).to_bytes(4, "little"), "s_first_data_block"),
        (1024 + 0x58, (100).to_bytes(2, "little"), "s_inode_size"),
        (1024 + 0x60, (0x80000).to_bytes(4, "little"), "s_feature_incompat"),
        (1024 + 0xCE, (5000).to_bytes(2, "little"), "s_reserved_gdt_blocks"),
        # Group descriptor 1 (block 2 with 1 KiB blocks): its block bitmap far away.
        (2048 + 32, (999999).to_bytes(4, "little"), "bg_block_bitmap"),
        (2048 + 32 + 8, (1).to_bytes(4, "little"), "bg_inode_table"),
    ],
)
def test_damaged_fields_are_named(ext2_image: Path, offset: int, value: bytes, field: str) -> None:
    patch(ext2_image, offset, value)
    with pytest.raises(DamagedFileSystem, match=field):
        used_of(ext2_image)


class ZerosAfter:
    """A huge source: ``data``, then zeros."""

    def __init__(self, data: bytes, size: int) -> None:
        self.data, self.size = data, size

    def pread(self, offset: int, length: int) -> bytes:
        piece = self.data[offset : offset + length]
        return piece + bytes(max(0, min(length, self.size - offset) - len(piece)))


def test_group_count_is_capped(ext2_image: Path) -> None:
    data = bytearray(ext2_image.read_bytes()[: 2 * MiB])
    data[1024 + 0x04 : 1024 + 0x08] = (1 << 30).to_bytes(4, "little")  # 1 TiB of 1 KiB blocks
    data[1024 + 0x20 : 1024 + 0x28] = (8).to_bytes(4, "little") * 2  # 8 blocks per group
    with pytest.raises(DamagedFileSystem, match="block groups"):
        Ext4.open(ZerosAfter(bytes(data), 1 << 41))


def test_small_reads_give_the_same_answer(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Descriptors and bitmaps read a block at a time agree with the batched reads."""
    from recovery.filesystems import ext4

    image = mkfs(tmp_path / "fs.img", 600 * MiB, "-b", "1024", tree=tree)
    _, batched = used_of(image)
    monkeypatch.setattr(ext4, "_MAX_DESCRIPTOR_READ", 1024)
    monkeypatch.setattr(ext4, "_MAX_BITMAP_READ", 1024)
    _, single = used_of(image)
    assert single == batched


def test_file_system_larger_than_partition(ext2_image: Path) -> None:
    data = ext2_image.read_bytes()[: 16 * MiB]
    with pytest.raises(DamagedFileSystem, match="partition has only"):
        Ext4.open(BytesSource(data))


def test_checksums_catch_changes(tmp_path: Path) -> None:
    image = mkfs(tmp_path / "fs.img", 32 * MiB)
    data = bytearray(image.read_bytes())
    data[1024 + 0x20] ^= 0x01
    with pytest.raises(DamagedFileSystem, match="superblock checksum"):
        Ext4.open(BytesSource(bytes(data)))
    data = bytearray(image.read_bytes())
    data[2048 + 0x12] ^= 0x02  # BLOCK_UNINIT in group 0's bg_flags
    with pytest.raises(DamagedFileSystem, match="group descriptor 0 has checksum"):
        Ext4.open(BytesSource(bytes(data)))


def test_not_ext(tmp_path: Path) -> None:
    with pytest.raises(NotThisFileSystem):
        Ext4.open(BytesSource(bytes(4 * MiB)))
    with pytest.raises(NotThisFileSystem):
        Ext4.open(BytesSource(b"short"))
    journal = tmp_path / "journal.img"
    with open(journal, "wb") as f:
        f.truncate(16 * MiB)
    run("mke2fs", "-q", "-F", "-O", "journal_dev", "-b", "4096", journal)
    with pytest.raises(NotThisFileSystem, match="journal"):
        Ext4.open(BytesSource(journal.read_bytes()))


class ReadFails:
    size = 64 * MiB

    def pread(self, offset: int, length: int) -> bytes:
        raise OSError(5, "Input/output error")


def test_read_errors_become_device_errors() -> None:
    from recovery.errors import DeviceError

    with pytest.raises(DeviceError, match="superblock"):
        Ext4.open(ReadFails())


# Fuzzing: flipped bytes in the superblock and the descriptors give either the right answer or
# a file system error, never another exception.


@pytest.fixture(scope="module")
def fuzz_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, list[Extent]]]:
    tmp = tmp_path_factory.mktemp("fuzz")
    tree = tmp / "tree"
    tree.mkdir()
    rng = random.Random(3)
    for i in range(20):
        (tree / f"f{i}").write_bytes(rng.randbytes(rng.choice((100, 3000, 40000))))
    out = {}
    # Small images (copied for every example) with 8 groups of 512 blocks.
    common = ("-b", "1024", "-g", "512", "-N", "256", "-J", "size=1")
    for name, args in {
        "ext4": common,
        "ext2": ("-t", "ext2", *common[:-2]),
        "ext4-64bit-nocsum": (*common, "-O", "64bit,^metadata_csum"),
    }.items():
        image = mkfs(tmp / f"{name}.img", 4 * MiB, *args, tree=tree)
        data = image.read_bytes()
        out[name] = (data, list(Ext4.open(BytesSource(data)).used_extents()))
    return out


FEATURE_FIELDS = range(1024 + 0x5C, 1024 + 0x68)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    name=st.sampled_from(["ext4", "ext2", "ext4-64bit-nocsum"]),
    flips=st.lists(
        st.tuples(st.integers(1024, 3 * 1024 - 1), st.integers(1, 255)), min_size=1, max_size=4
    ),
)
def test_fuzz_metadata(
    fuzz_images: dict[str, tuple[bytes, list[Extent]]],
    name: str,
    flips: list[tuple[int, int]],
) -> None:
    data, expected = fuzz_images[name]
    damaged = bytearray(data)
    for offset, mask in flips:
        damaged[offset] ^= mask
    try:
        fs = Ext4.open(BytesSource(bytes(damaged)))
        used = list(fs.used_extents())
    except (DamagedFileSystem, NotThisFileSystem):
        return
    well_formed(used, len(data))
    if name == "ext4" and not any(o in FEATURE_FIELDS for o, _ in flips):
        # Checksums cover the superblock and descriptors: a change goes unnoticed only where
        # it changes nothing we use.
        assert used == expected


# The fields the reader uses: (offset in the superblock, size).
SUPERBLOCK_FIELDS = [
    (0x00, 4),
    (0x04, 4),
    (0x14, 4),
    (0x18, 4),
    (0x1C, 4),
    (0x20, 4),
    (0x24, 4),
    (0x28, 4),
    (0x3A, 2),
    (0x4C, 4),
    (0x58, 2),
    (0x5C, 4),
    (0x60, 4),
    (0x64, 4),
    (0xCE, 2),
    (0xFE, 2),
    (0x104, 4),
    (0x150, 4),
    (0x24C, 4),
    (0x250, 4),
]
# Group descriptor fields: block bitmap, inode bitmap, inode table, flags (and the 64-bit
# high words).
DESCRIPTOR_FIELDS = [(0x00, 4), (0x04, 4), (0x08, 4), (0x12, 2), (0x20, 4), (0x24, 4), (0x28, 4)]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    name=st.sampled_from(["ext2", "ext4-64bit-nocsum"]),
    where=st.one_of(
        st.tuples(st.just(1024), st.sampled_from(SUPERBLOCK_FIELDS)),
        st.tuples(
            st.integers(0, 7).map(lambda g: 2048 + 64 * g), st.sampled_from(DESCRIPTOR_FIELDS)
        ),
    ),
    value=st.one_of(
        st.integers(0, 16),
        st.integers(0, 2**32 - 1),
        st.sampled_from([2**31, 2**32 - 1, 2**16 - 1, 1024, 8192, 12288]),
    ),
)
def test_fuzz_field_values(
    fuzz_images: dict[str, tuple[bytes, list[Extent]]],
    name: str,
    where: tuple[int, tuple[int, int]],
    value: int,
) -> None:
    """Any value in any field the reader uses: a file system error or a sane answer."""
    data, _ = fuzz_images[name]
    base, (offset, size) = where
    if base != 1024 and name == "ext2":
        base = 2048 + (base - 2048) // 2  # 32-byte descriptors
        if offset >= 0x20:
            return
    damaged = bytearray(data)
    damaged[base + offset : base + offset + size] = (value % (1 << (8 * size))).to_bytes(
        size, "little"
    )
    try:
        used = list(Ext4.open(BytesSource(bytes(damaged))).used_extents())
    except (DamagedFileSystem, NotThisFileSystem):
        return
    well_formed(used, len(data))


def test_speed_on_4gib_with_mixed_content(tmp_path: Path) -> None:
    """A 4 GiB ext4 with thousands of files, every other one deleted (a fragmented bitmap)."""
    tree = tmp_path / "many"
    tree.mkdir()
    rng = random.Random(9)
    for i in range(3000):
        (tree / f"f{i}").write_bytes(rng.randbytes(rng.choice((1, 5000, 20000, 100000))))
    image = mkfs(tmp_path / "fs.img", 4096 * MiB, "-b", "4096", tree=tree)
    (tmp_path / "cmds").write_text("".join(f"rm f{i}\n" for i in range(0, 3000, 2)))
    run("debugfs", "-w", "-f", tmp_path / "cmds", image)
    fs, fd = open_image(image)
    try:
        t = time.perf_counter()
        fs2 = Ext4.open(fs.source)
        used = list(fs2.used_extents())
        elapsed = time.perf_counter() - t
    finally:
        os.close(fd)
    assert len(used) > 500, "the bitmap should be fragmented"
    free, _ = dumpe2fs_free(image)
    assert complement(used, 4096 * MiB) == free
    print(f"\nused_extents on 4 GiB ext4: {elapsed * 1000:.1f} ms, {len(used)} extents")
    assert elapsed < 1.0


# -- a clean journal, imaged as zeros ----------------------------------------------------------


def journal_blocks(image: Path) -> list[int]:
    """The journal's data blocks in logical order, as debugfs maps inode 8 (its extent tree's
    own blocks left out)."""
    out = run("debugfs", "-R", "stat <8>", image)
    mapped = re.search(r"EXTENTS:\n(.*)", out)
    assert mapped, out
    blocks = []
    for first, last in re.findall(r"\(\d+(?:-\d+)?\):(\d+)(?:-(\d+))?", mapped.group(1)):
        blocks += range(int(first), int(last or first) + 1)
    return blocks


def opened(image: Path) -> Ext4:
    fd = os.open(image, os.O_RDONLY)
    try:
        return Ext4.open(FileSource(fd, 0, image.stat().st_size))
    except BaseException:
        os.close(fd)
        raise


@pytest.mark.parametrize(
    "size, args, depth",
    [
        (64 * MiB, ("-b", "1024"), 0),
        (3072 * MiB, ("-b", "4096", "-J", "size=1024"), 1),  # 8 extents: a tree of depth 1
    ],
    ids=["1k-blocks", "4k-deep-tree"],
)
def test_a_clean_journal_is_zeroed_as_debugfs_maps_it(
    tmp_path: Path, size: int, args: tuple[str, ...], depth: int
) -> None:
    image = mkfs(tmp_path / "fs.img", size, *args)
    blocks = journal_blocks(image)
    fs = opened(image)
    bs = fs.geometry.block_size
    want = [tuple(e) for e in merge((b * bs, bs) for b in blocks[1:])]  # all but its superblock
    assert fs.zeroed_extents() == want
    used = list(fs.used_extents())
    assert all(any(s <= z and z + n <= s + m for s, m in used) for z, n in want)
    if depth:
        assert "ETB" in run("debugfs", "-R", "stat <8>", image)


@pytest.mark.parametrize(
    "args",
    [
        ("-t", "ext3"),
        ("-O", "^has_journal"),
        ("-b", "4096", "-J", "size=1024", "-O", "^metadata_csum"),
    ],
    ids=["ext3-block-map", "no-journal", "deep-tree-without-checksums"],
)
def test_journals_not_zeroed(tmp_path: Path, args: tuple[str, ...]) -> None:
    image = mkfs(tmp_path / "fs.img", 3072 * MiB, *args)
    assert opened(image).zeroed_extents() == []


def test_a_journal_with_transactions_to_replay_is_not_zeroed(tmp_path: Path) -> None:
    image = mkfs(tmp_path / "fs.img", 64 * MiB, "-b", "1024")
    first = journal_blocks(image)[0]
    with open(image, "r+b") as f:
        f.seek(first * 1024 + 0x1C)  # the journal superblock's s_start (big-endian)
        f.write((1).to_bytes(4, "big"))
    assert opened(image).zeroed_extents() == []


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_fuzz_journal(
    fuzz_images: dict[str, tuple[bytes, list[Extent]]], data: st.DataObject
) -> None:
    """Damage the journal inode, the journal's superblock, or the superblock's copy of the
    journal's root: the zeroed ranges are the undamaged image's or none, never others."""
    name = data.draw(st.sampled_from(["ext4", "ext4-64bit-nocsum"]))
    image, _ = fuzz_images[name]
    fs = Ext4.open(BytesSource(image))
    original = fs.zeroed_extents()
    assert original, "the fuzz images have a clean journal"
    bs = fs.geometry.block_size
    inode8 = fs._desc.inode_table[0] * bs + 7 * fs._layout.sb.inode_size
    journal_sb = original[0][0] - bs
    region = data.draw(
        st.sampled_from([(inode8, 128), (journal_sb, 1024), (1024 + 0x10C, 68), (1024 + 0xE0, 8)])
    )
    flips = data.draw(
        st.lists(
            st.tuples(st.integers(0, region[1] - 1), st.integers(1, 255)), min_size=1, max_size=3
        )
    )
    damaged = bytearray(image)
    for offset, mask in flips:
        damaged[region[0] + offset] ^= mask
    try:
        after = Ext4.open(BytesSource(bytes(damaged)))
    except (DamagedFileSystem, NotThisFileSystem):
        return
    assert after.zeroed_extents() in (original, [])
