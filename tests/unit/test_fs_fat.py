"""The FAT reader against dosfstools and mtools, on images made with mkfs.vfat in regular files.

Each volume is checked against a plain entry-by-entry decoding of the FAT, against the cluster
count of ``fsck.fat -v``, and by a copy holding only our used extents (zeros elsewhere), which
must pass ``fsck.fat -n`` and hold the same files as the original.
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
from recovery.filesystems.fat import Fat, nonzero_entries
from tests.loopdev import have

pytestmark = pytest.mark.skipif(
    not all(have(t) for t in ("mkfs.vfat", "fsck.fat", "mcopy")),
    reason="needs dosfstools and mtools",
)

MiB = 1 << 20
MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


def run(*cmd: str | Path, ok: tuple[int, ...] = (0,)) -> str:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=MTOOLS_ENV)
    if r.returncode not in ok:
        raise AssertionError(f"{cmd} failed ({r.returncode}): {r.stderr or r.stdout}")
    return r.stdout


def make_tree(root: Path, seed: int = 1, big: int = MiB) -> Path:
    rng = random.Random(seed)
    root.mkdir(parents=True)
    (root / "EMPTY.TXT").write_bytes(b"")
    (root / "big.bin").write_bytes(rng.randbytes(big))
    for d in range(3):
        sub = root / f"dir{d}" / "deeper"
        sub.mkdir(parents=True)
        for i in range(12):
            (sub.parent / f"file{i}.dat").write_bytes(rng.randbytes(rng.choice((1, 700, 9000))))
        (sub / "notes.txt").write_text("hello\n" * 500)
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("tree") / "root")


def mkfs(image: Path, size: int, *args: str, tree: Path | None = None) -> Path:
    with open(image, "wb") as f:
        f.truncate(size)
    run("mkfs.vfat", *args, image)
    if tree is not None:
        run("mcopy", "-s", "-i", image, *sorted(tree.iterdir()), "::/")
    return image


def used_of(image: Path) -> tuple[Fat, list[Extent]]:
    fd = os.open(image, os.O_RDONLY)
    try:
        fs = Fat.open(FileSource(fd, 0, os.fstat(fd).st_size))
        return fs, list(fs.used_extents())
    finally:
        os.close(fd)


def reference_used(fs: Fat, data: bytes, fat: int = 0) -> list[int]:
    """Used data clusters, decoding one entry at a time (the obvious way)."""
    off = fs.fat_offsets[fat]
    out = []
    for c in range(2, fs.clusters + 2):
        if fs.fat_bits == 32:
            v = int.from_bytes(data[off + 4 * c : off + 4 * c + 4], "little") & 0x0FFFFFFF
        elif fs.fat_bits == 16:
            v = int.from_bytes(data[off + 2 * c : off + 2 * c + 2], "little")
        else:
            pair = int.from_bytes(data[off + c * 3 // 2 : off + c * 3 // 2 + 2], "little")
            v = pair >> 4 if c & 1 else pair & 0xFFF
        if v:
            out.append(c)
    return out


def expected_extents(fs: Fat, clusters: Iterable[int]) -> list[Extent]:
    cs = fs.cluster_size
    return list(
        merge([(0, fs.data_start)] + [(fs.data_start + (c - 2) * cs, cs) for c in clusters])
    )


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


def files_of(image: Path, where: Path) -> Path:
    where.mkdir()
    run("mcopy", "-s", "-n", "-i", image, "::/*", where, ok=(0, 1))
    return where


def same_trees(a: Path, b: Path) -> None:
    cmp = filecmp.dircmp(a, b)
    assert not cmp.left_only and not cmp.right_only, cmp.report()
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    assert not mismatch and not errors, (mismatch, errors)
    for d in cmp.common_dirs:
        same_trees(a / d, b / d)


def check_volume(image: Path, tmp: Path) -> tuple[Fat, list[Extent]]:
    fs, used = used_of(image)
    data = image.read_bytes()
    well_formed(used, fs.geometry.fs_size)
    clusters = reference_used(fs, data)
    assert used == expected_extents(fs, clusters)
    out = run("fsck.fat", "-n", "-v", image)
    counted = re.search(r"(\d+)/(\d+) clusters", out)
    assert counted is not None, out
    assert (int(counted.group(1)), int(counted.group(2))) == (len(clusters), fs.clusters)
    copy = copy_used(image, used, tmp / "copy.img")
    run("fsck.fat", "-n", copy)
    same_trees(files_of(image, tmp / "orig"), files_of(copy, tmp / "copied"))
    return fs, used


VOLUMES = {
    "fat12-small": (2 * MiB, (), 12),
    "fat12-forced": (16 * MiB, ("-F", "12"), 12),
    "fat16": (64 * MiB, ("-F", "16"), 16),
    "fat16-4k-sectors": (64 * MiB, ("-F", "16", "-S", "4096"), 16),
    "fat16-small-root": (32 * MiB, ("-F", "16", "-r", "112"), 16),
    "fat32": (300 * MiB, ("-F", "32"), 32),
    "fat32-one-fat": (300 * MiB, ("-F", "32", "-f", "1"), 32),
    # mtools takes this one for FAT16 (by its cluster count), so it stays empty; Linux and
    # dosfstools read it as FAT32, as the reader does.
    "fat32-few-clusters": (64 * MiB, ("-F", "32", "-s", "8"), 32),
}


@pytest.mark.parametrize("name", VOLUMES)
def test_volume(name: str, tree: Path, tmp_path: Path) -> None:
    size, args, bits = VOLUMES[name]
    populate = name != "fat32-few-clusters"
    image = mkfs(tmp_path / "fat.img", size, *args, tree=tree if populate else None)
    if populate:
        run("mdel", "-i", image, "::/dir1/file3.dat", "::/dir2/file5.dat")
    fs, used = check_volume(image, tmp_path)
    assert fs.fat_bits == bits
    assert total(used) < size // 2 or size < 4 * MiB
    if name == "fat32-few-clusters":
        assert any("65525" in n for n in fs.geometry.notes)


def test_deleted_files_leave_no_used_clusters(tree: Path, tmp_path: Path) -> None:
    image = mkfs(tmp_path / "fat.img", 64 * MiB, "-F", "16", tree=tree)
    _, before = used_of(image)
    run("mdel", "-i", image, "::/big.bin")
    _, after = used_of(image)
    assert total(before) - total(after) == MiB
    check_volume(image, tmp_path)


def test_geometry(tmp_path: Path) -> None:
    image = mkfs(tmp_path / "fat.img", 64 * MiB, "-F", "32", "-n", "EFI", "-i", "1234ABCD")
    fs, _ = used_of(image)
    assert fs.geometry.label == "EFI"
    assert fs.geometry.uuid == "1234-ABCD"
    assert fs.geometry.fs_size == 64 * MiB
    assert fs.geometry.block_size == fs.cluster_size
    assert fs.restore_note() is None
    # The root directory's label entry is the one systems show; the boot sector's copy may lag.
    data = bytearray(image.read_bytes())
    data[0x47 : 0x47 + 11] = b"OTHER      "
    assert Fat.open(BytesSource(bytes(data))).geometry.label == "EFI"
    unnamed = mkfs(tmp_path / "plain.img", 2 * MiB)
    assert Fat.open(BytesSource(unnamed.read_bytes())).geometry.label is None


@pytest.mark.parametrize("fstype", ["vfat", "fat", "msdos", None])
def test_registry_finds_it(fstype: str | None, tmp_path: Path) -> None:
    image = mkfs(tmp_path / "fat.img", 8 * MiB)
    assert isinstance(open_filesystem(BytesSource(image.read_bytes()), fstype), Fat)


def test_differing_fat_copies_are_united(tmp_path: Path) -> None:
    image = mkfs(tmp_path / "fat.img", 64 * MiB, "-F", "16")
    fs, used = used_of(image)
    data = bytearray(image.read_bytes())
    # The second FAT says cluster 100 is in use (an end-of-chain mark); the first does not.
    second = fs.fat_offsets[1]
    data[second + 200 : second + 202] = b"\xff\xff"
    cluster_100 = Extent(fs.data_start + 98 * fs.cluster_size, fs.cluster_size)
    damaged = list(Fat.open(BytesSource(bytes(data))).used_extents())
    assert cluster_100 not in used and cluster_100 in damaged


def test_fat32_without_mirroring_reads_the_active_fat(tmp_path: Path) -> None:
    image = mkfs(tmp_path / "fat.img", 64 * MiB, "-F", "32", "-s", "1")
    fs, _ = used_of(image)
    data = bytearray(image.read_bytes())
    second = fs.fat_offsets[1]
    data[second + 4 * 500 : second + 4 * 501] = b"\xff\xff\xff\x0f"
    data[0x28:0x2A] = (0x80 | 0).to_bytes(2, "little")  # mirroring off, FAT 0 active
    only_first = Fat.open(BytesSource(bytes(data)))
    assert only_first.fat_offsets == (fs.fat_offsets[0],)
    cluster_500 = Extent(fs.data_start + 498 * fs.cluster_size, fs.cluster_size)
    assert cluster_500 not in list(only_first.used_extents())
    data[0x28:0x2A] = (0x80 | 1).to_bytes(2, "little")  # FAT 1 active
    assert any(
        e.start <= cluster_500.start < e.end
        for e in Fat.open(BytesSource(bytes(data))).used_extents()
    )
    data[0x28:0x2A] = (0x80 | 5).to_bytes(2, "little")
    with pytest.raises(DamagedFileSystem, match="BPB_ExtFlags"):
        Fat.open(BytesSource(bytes(data)))


def test_nonzero_entries_decoding() -> None:
    # FAT12 packs two entries in three bytes: 0x123 and 0x456 are 23 61 45.
    assert [bool(b) for b in nonzero_entries(bytes([0x23, 0x61, 0x45]), 12)] == [True, True]
    flags = nonzero_entries(bytes([0x00, 0x10, 0x00, 0x01, 0x00, 0x00]), 12)
    assert [bool(b) for b in flags] == [False, True, True, False]
    flags = nonzero_entries(bytes([0, 0, 0, 0xF0, 1, 0, 0, 0]), 32)
    assert [bool(b) for b in flags] == [False, True]  # the top nibble of FAT32 is reserved
    flags = nonzero_entries(bytes([0, 0, 0, 1, 1, 0]), 16)
    assert [bool(b) for b in flags] == [False, True, True]


@pytest.fixture
def fat16_image(tmp_path: Path) -> bytes:
    return mkfs(tmp_path / "fat.img", 16 * MiB, "-F", "16").read_bytes()


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        (0x16, (1).to_bytes(2, "little"), "cannot hold the entries"),
        (0x11, (513).to_bytes(2, "little"), "BPB_RootEntCnt"),
        (0x13, (0xFFFF).to_bytes(2, "little"), "partition has only"),
        (0x0E, (0xFFFF).to_bytes(2, "little"), "leave no data area"),
        (0x0B, (1000).to_bytes(2, "little"), None),
        (0x0D, (3).to_bytes(1, "little"), None),
        (0x10, (0).to_bytes(1, "little"), None),
        (0x15, (0x12).to_bytes(1, "little"), None),
        (510, b"\0\0", None),
        (0, b"\0", None),
    ],
)
def test_damaged_boot_sector(
    fat16_image: bytes, offset: int, value: bytes, message: str | None
) -> None:
    data = bytearray(fat16_image)
    data[offset : offset + len(value)] = value
    expected = DamagedFileSystem if message else NotThisFileSystem
    with pytest.raises(expected, match=message):
        Fat.open(BytesSource(bytes(data)))


def test_fat32_damage(tmp_path: Path) -> None:
    good = mkfs(tmp_path / "fat.img", 64 * MiB, "-F", "32", "-s", "1").read_bytes()
    data = bytearray(good)
    data[0x2C:0x30] = (10**8).to_bytes(4, "little")
    with pytest.raises(DamagedFileSystem, match="BPB_RootClus"):
        Fat.open(BytesSource(bytes(data)))
    data = bytearray(good)
    data[0x11:0x13] = (16).to_bytes(2, "little")
    with pytest.raises(DamagedFileSystem, match="BPB_RootEntCnt"):
        Fat.open(BytesSource(bytes(data)))


def test_not_fat(tmp_path: Path) -> None:
    with pytest.raises(NotThisFileSystem):
        Fat.open(BytesSource(bytes(MiB)))
    with pytest.raises(NotThisFileSystem):
        Fat.open(BytesSource(b"tiny"))
    ntfs_like = bytearray(mkfs(tmp_path / "fat.img", 8 * MiB).read_bytes())
    ntfs_like[3:11] = b"NTFS    "
    with pytest.raises(NotThisFileSystem, match="NTFS"):
        Fat.open(BytesSource(bytes(ntfs_like)))


# Fuzzing: any change in the boot sector or at the start of the FAT gives a file system error or
# a sane answer, never another exception.


@pytest.fixture(scope="module")
def fuzz_images(tmp_path_factory: pytest.TempPathFactory) -> dict[int, bytes]:
    tmp = tmp_path_factory.mktemp("fuzz")
    tree = make_tree(tmp / "tree", big=100_000)
    return {
        12: mkfs(tmp / "f12.img", 2 * MiB, "-F", "12", tree=tree).read_bytes(),
        16: mkfs(tmp / "f16.img", 4 * MiB, "-F", "16", "-s", "1", tree=tree).read_bytes(),
        # Small, so that each example is quick: FAT32 by structure, with few clusters.
        32: mkfs(tmp / "f32.img", 4 * MiB, "-F", "32", "-s", "1").read_bytes(),
    }


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    bits=st.sampled_from([12, 16, 32]),
    changes=st.lists(
        st.tuples(
            st.one_of(st.integers(0, 0x5A), st.integers(0, 511)),
            st.binary(min_size=1, max_size=4),
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_fuzz_boot_sector(
    fuzz_images: dict[int, bytes], bits: int, changes: list[tuple[int, bytes]]
) -> None:
    data = bytearray(fuzz_images[bits])
    for offset, value in changes:
        data[offset : offset + len(value)] = value
    try:
        fs = Fat.open(BytesSource(bytes(data)))
        used = list(fs.used_extents())
    except (DamagedFileSystem, NotThisFileSystem):
        return
    well_formed(used, len(data))


BPB_FIELDS = [
    (0x0B, 2),
    (0x0D, 1),
    (0x0E, 2),
    (0x10, 1),
    (0x11, 2),
    (0x13, 2),
    (0x15, 1),
    (0x16, 2),
    (0x20, 4),
    (0x24, 4),
    (0x28, 2),
    (0x2C, 4),
]


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    bits=st.sampled_from([12, 16, 32]),
    field=st.sampled_from(BPB_FIELDS),
    value=st.one_of(
        st.integers(0, 16),
        st.integers(0, 2**32 - 1),
        st.sampled_from([512, 1024, 4096, 0xF8, 0x80, 0x81, 2**16 - 1, 2**31]),
    ),
)
def test_fuzz_bpb_fields(
    fuzz_images: dict[int, bytes], bits: int, field: tuple[int, int], value: int
) -> None:
    """Any value in any boot sector field the reader uses."""
    offset, size = field
    data = bytearray(fuzz_images[bits])
    data[offset : offset + size] = (value % (1 << (8 * size))).to_bytes(size, "little")
    try:
        used = list(Fat.open(BytesSource(bytes(data))).used_extents())
    except (DamagedFileSystem, NotThisFileSystem):
        return
    well_formed(used, len(data))


def test_speed_on_a_large_fat32(tmp_path: Path) -> None:
    """4 GiB with 4 KiB clusters: a 4 MiB FAT of a million entries, decoded whole."""
    image = tmp_path / "fat.img"
    with open(image, "wb") as f:
        f.truncate(4096 * MiB)
    run("mkfs.vfat", "-F", "32", "-s", "8", image)
    fs, _ = used_of(image)
    data = bytearray(4 * fs.clusters)
    rng = random.Random(2)
    for _ in range(2000):  # scattered chains, as on a well-used stick
        at = rng.randrange(2, fs.clusters - 200)
        n = rng.randrange(1, 200)
        data[4 * at : 4 * (at + n)] = b"\xff\xff\xff\x0f" * n
    with open(image, "r+b") as f:
        f.seek(fs.fat_offsets[0] + 8)
        f.write(data[8:])
        f.seek(fs.fat_offsets[1] + 8)
        f.write(data[8:])
    t = time.perf_counter()
    fs, used = used_of(image)
    elapsed = time.perf_counter() - t
    print(f"\nused_extents on a 4 GiB FAT32 ({fs.clusters} clusters): {elapsed * 1000:.1f} ms")
    assert len(used) > 1000
    assert elapsed < 2.0
