"""The NTFS reader on images made by mkntfs in a regular file (no root), and on tampered copies.

Ground truth comes from ntfs-3g's own tools: ``ntfsinfo -m`` (free clusters), ``ntfsfix -n``
(a copy of only the used extents is a consistent volume) and ``ntfscat`` (files read back).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recovery.core.extents import Extent
from recovery.errors import DamagedFileSystem, NotThisFileSystem
from recovery.filesystems.base import BytesSource, FileSource, open_filesystem, readers
from recovery.filesystems.ntfs import (
    Ntfs,
    SystemFile,
    Volume,
    decode_runs,
    detect_encrypted,
    find_system_files,
    overlaps,
    parse_boot_sector,
    subtract_holes,
)

needs_ntfs_tools = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("mkntfs", "ntfscp", "ntfsinfo", "ntfsfix", "ntfscat")),
    reason="ntfs-3g's tools (Debian package ntfs-3g) are not installed",
)


# --- helpers ---------------------------------------------------------------------------------


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=True)


def make_ntfs(path: Path, size: int, *args: str) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    if "-s" not in args:
        args = ("-s", "512", *args)
    run("mkntfs", "-F", "-Q", *args, str(path))
    return path


def put(image: Path, data: bytes, name: str, tmp: Path) -> None:
    local = tmp / "upload.bin"
    local.write_bytes(data)
    run("ntfscp", str(image), str(local), name)


def free_clusters(image: Path) -> int:
    out = run("ntfsinfo", "-m", str(image)).stdout
    m = re.search(r"Free Clusters: (\d+)", out)
    assert m, out
    return int(m.group(1))


def open_image(image: Path, **kw: bool) -> Ntfs:
    fd = os.open(image, os.O_RDONLY)
    return Ntfs.open(FileSource(fd, 0, os.fstat(fd).st_size), **kw)


def copy_extents(src: Path, dst: Path, extents: list[Extent]) -> None:
    """A zero-filled file of the same size holding only ``extents`` of ``src``."""
    with open(src, "rb") as s, open(dst, "wb") as d:
        d.truncate(os.fstat(s.fileno()).st_size)
        for start, length in extents:
            d.seek(start)
            s.seek(start)
            d.write(s.read(length))


def copy_extents_onto(src: Path, dst: Path, extents: list[Extent]) -> None:
    """Write ``extents`` of ``src`` over an existing ``dst`` (a restore onto a used disk)."""
    with open(src, "rb") as s, open(dst, "r+b") as d:
        for start, length in extents:
            d.seek(start)
            s.seek(start)
            d.write(s.read(length))


def _system_files(image: Path) -> list[SystemFile]:
    fd = os.open(image, os.O_RDONLY)
    try:
        source = FileSource(fd, 0, os.fstat(fd).st_size)
        vol = Volume(source, parse_boot_sector(source.pread(0, 512), source.size))
        vol.open_mft()
        return find_system_files(vol)
    finally:
        os.close(fd)


def check_extents(extents: list[Extent], size: int) -> None:
    for a, b in itertools.pairwise(extents):
        assert a.end < b.start, "extents must be sorted, non-overlapping and merged"
    assert all(e.length > 0 and e.start >= 0 and e.end <= size for e in extents)


def boot_sector(
    bps: int = 512,
    spc: int = 8,
    total_sectors: int = 131071,
    mft_lcn: int = 4,
    mftmirr_lcn: int = 8000,
    mft_code: int = -10,
    index_code: int = 1,
    oem: bytes = b"NTFS    ",
) -> bytes:
    """A synthetic NTFS boot sector (only the fields the reader checks)."""
    b = bytearray(512)
    b[0:3] = b"\xeb\x52\x90"
    b[3:11] = oem
    struct.pack_into("<HB", b, 11, bps, spc)
    struct.pack_into("<QQQbxxxbxxxQ", b, 40, total_sectors, mft_lcn, mftmirr_lcn, mft_code,
                     index_code, 0x1234_5678_9ABC_DEF0)  # fmt: skip
    b[510:512] = b"\x55\xaa"
    return bytes(b)


# --- boot sector ----------------------------------------------------------------------------


def test_boot_sector_fields() -> None:
    boot = parse_boot_sector(boot_sector(), 64 << 20)
    assert (boot.bytes_per_sector, boot.cluster_size, boot.record_size) == (512, 4096, 1024)
    assert boot.index_block_size == 4096
    assert boot.total_clusters == 131071 * 512 // 4096
    assert (boot.mft_lcn, boot.mftmirr_lcn) == (4, 8000)


def test_large_clusters_use_a_negative_exponent() -> None:
    # 0xF4 = -12: 2**12 sectors of 512 bytes = 2 MiB clusters; records still 1 KiB.
    boot = parse_boot_sector(
        boot_sector(spc=0xF4, total_sectors=4 << 20, mft_lcn=2, mftmirr_lcn=100, index_code=-12),
        2 << 30,
    )
    assert boot.cluster_size == 2 << 20
    assert boot.record_size == 1024


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"bps": 384}, "bytes per sector"),
        ({"bps": 8192}, "bytes per sector"),
        ({"spc": 3}, "sectors-per-cluster"),
        ({"spc": 0}, "sectors-per-cluster"),
        ({"spc": 0xE0}, "sectors-per-cluster"),  # 2**32 sectors per cluster
        ({"spc": 0xF3}, "sectors-per-cluster"),  # 4 MiB clusters: larger than Windows allows
        ({"total_sectors": 0}, "no sectors"),
        ({"total_sectors": 1 << 40}, "partition holds only"),
        ({"mft_lcn": 0}, "MFT starts"),
        ({"mft_lcn": 1 << 60}, "MFT starts"),
        ({"mftmirr_lcn": 16383}, "MFT mirror starts"),
        ({"mft_code": 0}, "MFT record size code"),
        ({"mft_code": -40}, "MFT record size code"),
        ({"mft_code": -8}, "MFT records of 256 bytes"),
        ({"mft_code": 3}, "MFT records of 12288 bytes"),
        ({"index_code": 64}, "index blocks of 262144 bytes"),
    ],
)
def test_boot_sector_rejects(fields: dict[str, int], message: str) -> None:
    with pytest.raises(DamagedFileSystem, match=message):
        parse_boot_sector(boot_sector(**fields), 64 << 20)


def test_fat_fields_must_be_zero() -> None:
    b = bytearray(boot_sector())
    b[16] = 2  # number of FATs
    with pytest.raises(DamagedFileSystem, match="FAT fields"):
        parse_boot_sector(bytes(b), 64 << 20)


@pytest.mark.parametrize("data", [b"", bytes(4096), boot_sector(oem=b"MSDOS5.0")])
def test_not_ntfs(data: bytes) -> None:
    with pytest.raises(NotThisFileSystem):
        Ntfs.open(BytesSource(data))
    assert detect_encrypted(BytesSource(data)) is None


# --- encrypted volumes ------------------------------------------------------------------------


def test_bitlocker_is_detected_and_not_opened() -> None:
    source = BytesSource(boot_sector(oem=b"-FVE-FS-") + bytes(4096))
    note = detect_encrypted(source)
    assert note is not None and note.startswith("BitLocker-encrypted volume: imaged sector by")
    with pytest.raises(NotThisFileSystem, match="BitLocker"):
        Ntfs.open(source)


def test_bitlocker_to_go_and_luks_are_detected() -> None:
    togo = bytearray(boot_sector(oem=b"MSWIN4.1"))
    togo[424:440] = bytes.fromhex("3bd66749292ed84a8399f6a339e3d001")
    assert "BitLocker" in (detect_encrypted(BytesSource(bytes(togo))) or "")
    fat = boot_sector(oem=b"MSWIN4.1")
    assert detect_encrypted(BytesSource(fat)) is None
    luks = b"LUKS\xba\xbe\x00\x02" + bytes(4088)
    assert (detect_encrypted(BytesSource(luks)) or "").startswith("LUKS-encrypted volume")


# --- pure pieces ------------------------------------------------------------------------------


def test_decode_runs() -> None:
    # 0x21: 1 length byte, 2 offset bytes. Runs: 16 clusters at 0x100, sparse 8, 4 at 0x100-0x10.
    data = bytes([0x21, 16, 0x00, 0x01, 0x01, 8, 0x11, 4, 0xF0, 0x00])
    runs = decode_runs(data, 0, len(data), 0, 27, 1000, "test")
    assert [(r.vcn, r.lcn, r.length) for r in runs] == [(0, 256, 16), (16, None, 8), (24, 240, 4)]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (bytes([0x21, 16, 0x00, 0x01]), "no terminator"),
        (bytes([0x21, 16, 0x00]), "malformed"),
        (bytes([0x09, 1, 0]), "malformed"),  # 9 length bytes
        (bytes([0x11, 0x80, 5, 0]), "length -128"),
        (bytes([0x11, 16, 0x7F, 0x11, 16, 0x80, 0]), "outside the volume"),  # goes negative
        (bytes([0x21, 16, 0xFF, 0x7F, 0]), "outside the volume"),
        (bytes([0x11, 4, 10, 0]), "cover clusters"),  # highest VCN says 15
    ],
)
def test_decode_runs_rejects(data: bytes, message: str) -> None:
    with pytest.raises(DamagedFileSystem, match=message):
        decode_runs(data, 0, len(data), 0, 15, 1000, "test")


@given(
    st.lists(st.tuples(st.integers(0, 300), st.integers(1, 40)), max_size=20),
    st.lists(st.tuples(st.integers(0, 300), st.integers(1, 40)), max_size=10),
)
def test_subtract_and_overlaps(runs: list[tuple[int, int]], holes: list[tuple[int, int]]) -> None:
    from recovery.core.extents import merge

    runs = [(e.start, e.length) for e in merge(sorted(runs))]
    holes = [(e.start, e.length) for e in merge(sorted(holes))]
    covered = {c for s, n in runs for c in range(s, s + n)}
    cut = {c for s, n in holes for c in range(s, s + n)}
    result = list(subtract_holes(runs, holes))
    assert {c for s, n in result for c in range(s, s + n)} == covered - cut
    assert all(a.end <= b.start for a, b in itertools.pairwise(result))
    assert overlaps(runs, holes) == bool(covered & cut)


# --- real volumes made by mkntfs ---------------------------------------------------------------


@needs_ntfs_tools
@pytest.mark.parametrize(
    ("args", "size"),
    [
        ((), 64 << 20),
        (("-c", "512"), 16 << 20),  # an MFT record spans two clusters
        (("-c", "65536"), 256 << 20),
        (("-c", "2097152"), 512 << 20),  # cluster size in the negative-exponent encoding
        (("-s", "4096"), 64 << 20),  # 4 KiB sectors and MFT records
    ],
    ids=["4k", "c512", "c64k", "c2m", "s4096"],
)
def test_used_space_matches_ntfsinfo(tmp_path: Path, args: tuple[str, ...], size: int) -> None:
    image = make_ntfs(tmp_path / "v.img", size, "-L", "Data", *args)
    put(image, os.urandom(300_000), "a.bin", tmp_path)
    put(image, os.urandom(70_000), "pagefile.sys", tmp_path)
    fs = open_image(image, keep_system_files=True)
    extents = list(fs.used_extents())
    check_extents(extents, size)
    boot = fs.boot
    used_clusters = boot.total_clusters - free_clusters(image)
    # Every used cluster, plus the backup boot sector after the last cluster.
    assert sum(n for _, n in extents) == used_clusters * boot.cluster_size + boot.bytes_per_sector
    assert extents[0].start == 0
    assert extents[-1] == Extent(boot.total_sectors * boot.bytes_per_sector, boot.bytes_per_sector)
    assert fs.geometry.block_size == boot.cluster_size
    assert fs.geometry.fs_size == size
    assert fs.geometry.label == "Data"
    uuid = run("blkid", "-p", "-o", "value", "-s", "UUID", str(image)).stdout.strip()
    if uuid:
        assert fs.geometry.uuid == uuid


@needs_ntfs_tools
def test_round_trip_of_used_extents(tmp_path: Path) -> None:
    image = make_ntfs(tmp_path / "v.img", 64 << 20)
    files = {f"file{i}.bin": os.urandom(5000 + 37_000 * i) for i in range(6)}
    files["tiny.txt"] = b"resident data\n"  # small enough to live inside its MFT record
    for name, data in files.items():
        put(image, data, name, tmp_path)
    # A hiberfil.sys that is not in use: its header (first cluster) is zeros, the rest is stale.
    page, hiber = os.urandom(1 << 20), bytes(4096) + os.urandom(500_000)
    put(image, page, "pagefile.sys", tmp_path)
    put(image, hiber, "hiberfil.sys", tmp_path)

    fs = open_image(image)
    excluded = sum(n for _, n in fs.excluded_clusters) * fs.boot.cluster_size
    # All of pagefile.sys; all of hiberfil.sys but the cluster holding its header.
    assert excluded == (1 << 20) + 4096 * -(-len(hiber) // 4096) - 4096
    extents = list(fs.used_extents())
    fs.keep_system_files = True
    kept = list(fs.used_extents())
    assert sum(n for _, n in kept) - sum(n for _, n in extents) == excluded
    assert any("Not stored: the contents of hiberfil.sys" in n for n in fs.geometry.notes)
    assert not any("hibernated" in n for n in fs.geometry.notes)

    copy = tmp_path / "copy.img"
    copy_extents(image, copy, extents)
    check = subprocess.run(["ntfsfix", "-n", str(copy)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    for name, data in files.items():
        out = subprocess.run(["ntfscat", str(copy), name], capture_output=True, check=True).stdout
        assert out == data, name
    # The system files are still there, with their sizes, but their contents were not copied.
    out = subprocess.run(["ntfscat", str(copy), "pagefile.sys"], capture_output=True).stdout
    assert len(out) == len(page) and out == bytes(len(page))
    # Restored onto a disk whose hiberfil.sys still says "hibernated": the stored header
    # cluster overwrites it, so the restored Windows does not try to resume a foreign session.
    hiber_lcn = next(sf for sf in _system_files(image) if sf.name == "hiberfil.sys").first_lcn
    assert hiber_lcn is not None
    with open(copy, "r+b") as c:
        c.seek(hiber_lcn * 4096)
        c.write(b"HIBR")
    assert any("hibernated" in n for n in open_image(copy).geometry.notes)
    copy_extents_onto(image, copy, extents)
    assert not any("hibernated" in n for n in open_image(copy).geometry.notes)


@needs_ntfs_tools
@pytest.mark.parametrize(
    ("signature", "expected"),
    [
        (b"HIBR", "hibernated or was shut down with Fast Startup"),
        (b"hibr", "hibernated or was shut down with Fast Startup"),
        (b"wake", "tried to resume from hibernation"),
        (b"\0\0\0\0", None),
    ],
)
def test_hibernation_is_reported(tmp_path: Path, signature: bytes, expected: str | None) -> None:
    image = make_ntfs(tmp_path / "v.img", 32 << 20)
    put(image, signature + os.urandom(100_000), "hiberfil.sys", tmp_path)
    fs = open_image(image)
    hibernation = [n for n in fs.geometry.notes if "hibernat" in n and "Not stored" not in n]
    if expected is None:
        assert hibernation == []
        assert fs.excluded_clusters, "an unused hiberfil.sys is left out"
    else:
        assert len(hibernation) == 1 and expected in hibernation[0]
        assert "shut it down fully" in hibernation[0]
        # A hibernated session is stored whole: the restored disk must not hold a header
        # that promises a memory image whose contents were left out.
        assert fs.excluded_clusters == []
        assert "stored whole" in hibernation[0]


@needs_ntfs_tools
def test_dirty_volume_is_reported(tmp_path: Path) -> None:
    image = make_ntfs(tmp_path / "v.img", 32 << 20)
    assert not any("dirty" in n for n in open_image(image).geometry.notes)
    run("ntfsfix", str(image))  # schedules a Windows check: sets the volume's dirty flag
    assert any("marked as in use (dirty)" in n for n in open_image(image).geometry.notes)


@needs_ntfs_tools
def test_registry_picks_ntfs(tmp_path: Path) -> None:
    image = make_ntfs(tmp_path / "v.img", 16 << 20)
    assert Ntfs in readers()
    data = image.read_bytes()
    fs = open_filesystem(BytesSource(data), "ntfs")
    assert isinstance(fs, Ntfs)
    assert isinstance(open_filesystem(BytesSource(data), None), Ntfs)


# --- tampering: each kind of damage gives the error that names it -----------------------------


@pytest.fixture(scope="module")
def small_image(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    if not shutil.which("mkntfs"):
        pytest.skip("mkntfs is not installed")
    tmp = tmp_path_factory.mktemp("ntfs")
    image = make_ntfs(tmp / "small.img", 4 << 20, "-c", "1024")
    put(image, os.urandom(20_000), "pagefile.sys", tmp)
    for i in range(40):  # enough names to push the root directory into index blocks
        put(image, os.urandom(100), f"some file with a long name number {i:03d}.txt", tmp)
    # Last: ntfs-3g's tools refuse to write to a hibernated volume.
    put(image, b"HIBR" + os.urandom(9000), "hiberfil.sys", tmp)
    return image.read_bytes()


def layout(image: bytes) -> tuple[int, int, int]:
    """Cluster size, MFT byte offset and record size of an image made by make_ntfs."""
    boot = parse_boot_sector(image[:512], len(image))
    return boot.cluster_size, boot.mft_lcn * boot.cluster_size, boot.record_size


def record_offset(image: bytes, number: int) -> int:
    _cs, mft, rs = layout(image)
    return mft + number * rs  # the first records of a fresh volume are contiguous


def attribute_offset(image: bytes, number: int, type_: int) -> int:
    """Byte offset of the first attribute of ``type_`` in MFT record ``number``."""
    rec = record_offset(image, number)
    pos = rec + struct.unpack_from("<H", image, rec + 0x14)[0]
    while True:
        t, length = struct.unpack_from("<II", image, pos)
        if t == type_:
            return pos
        assert t != 0xFFFFFFFF and length > 0
        pos += length


def runs_offset(image: bytes, number: int) -> int:
    """Byte offset of the data runs of the unnamed $DATA of MFT record ``number``."""
    attr = attribute_offset(image, number, 0x80)
    return attr + struct.unpack_from("<H", image, attr + 0x20)[0]


class PatchedSource:
    """An image with some bytes overwritten, without copying the image (fuzzing stays fast)."""

    def __init__(self, image: bytes, patches: list[tuple[int, bytes]]) -> None:
        self.image = image
        self.size = len(image)
        self.patches = patches

    def pread(self, offset: int, length: int) -> bytes:
        chunk = bytearray(self.image[offset : offset + length])
        for pos, data in self.patches:
            lo, hi = max(pos, offset), min(pos + len(data), offset + len(chunk))
            if lo < hi:
                chunk[lo - offset : hi - offset] = data[lo - pos : hi - pos]
        return bytes(chunk)


def tampered(image: bytes, offset: int, data: bytes) -> PatchedSource:
    return PatchedSource(image, [(offset, data)])


def open_and_list(source: PatchedSource) -> list[Extent]:
    return list(Ntfs.open(source).used_extents())


def test_small_image_is_sound(small_image: bytes) -> None:
    fs = Ntfs.open(BytesSource(small_image))
    assert fs.excluded_clusters
    assert any("hibernated" in n for n in fs.geometry.notes)
    check_extents(list(fs.used_extents()), len(small_image))


@pytest.mark.parametrize(
    ("where", "data", "message"),
    [
        (lambda im: record_offset(im, 0), b"BAAD", "record 0 is marked bad"),
        (lambda im: record_offset(im, 0), b"XXXX", "record 0 does not start with FILE"),
        (lambda im: record_offset(im, 6) + 510, b"\x99\x99", "record 6 fails its update-seq"),
        (lambda im: record_offset(im, 6) + 4, b"\x31\x00", "record 6 has an invalid update"),
        (lambda im: record_offset(im, 6) + 0x2C, b"\x07\x00\x00\x00", "says it is record 7"),
        (lambda im: record_offset(im, 6) + 0x16, b"\x00\x00", "record 6 .* is not in use"),
        (lambda im: record_offset(im, 6) + 0x18, b"\xff\xff\x00\x00", "bytes in use"),
        (lambda im: attribute_offset(im, 6, 0x80) + 4, b"\x10\x00\x00\x00", "with length 16"),
        (lambda im: attribute_offset(im, 6, 0x80) + 4, b"\x00\x10\x00\x00", "with length 4096"),
        (lambda im: attribute_offset(im, 6, 0x80), b"\xff\xff\xff\xff", "fewer than"),
        (lambda im: runs_offset(im, 6), b"\x21\x01\xff\x7f\x00", "outside the volume"),
        (lambda im: runs_offset(im, 6), b"\x00", "cover clusters"),
        (lambda im: runs_offset(im, 0), b"\x21\x6b\xff\x7f\x00", "outside the volume"),
        (lambda im: attribute_offset(im, 6, 0x30) + 0x18 + 0x42, b"$\x00X\x00", "named \\$X"),
    ],
    ids=[
        "baad",
        "magic",
        "fixup",
        "usa",
        "number",
        "unused",
        "in-use",
        "short-attr",
        "long-attr",
        "no-data",
        "run-outside",
        "runs-short",
        "mft-run",
        "name",
    ],
)
def test_damage_is_named(small_image: bytes, where, data: bytes, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DamagedFileSystem, match=message):
        open_and_list(tampered(small_image, where(small_image), data))


def test_bitmap_that_frees_the_mft_is_damage(small_image: bytes) -> None:
    fs = Ntfs.open(BytesSource(small_image))
    lcn = fs.bitmap.runs[0].lcn
    assert lcn is not None
    bitmap_at = lcn * fs.boot.cluster_size
    with pytest.raises(DamagedFileSystem, match="marks the boot sector"):
        open_and_list(tampered(small_image, bitmap_at, b"\x00"))


def test_truncated_partition_is_damage(small_image: bytes) -> None:
    with pytest.raises(DamagedFileSystem, match="partition holds only"):
        Ntfs.open(BytesSource(small_image[: len(small_image) // 2]))


def test_stale_index_entry_is_not_trusted(small_image: bytes) -> None:
    """If pagefile.sys's record is no longer in use, its clusters are not left out."""
    fs = Ntfs.open(BytesSource(small_image))
    vol = Volume(BytesSource(small_image), fs.boot)
    vol.open_mft()
    rec = next(sf.record for sf in find_system_files(vol) if sf.name == "pagefile.sys")
    assert fs.excluded_clusters
    freed = Ntfs.open(tampered(small_image, record_offset(small_image, rec) + 0x16, b"\0\0"))
    assert freed.excluded_clusters == []  # the fixture's hiberfil.sys is in use: kept
    assert not any("pagefile.sys" in n for n in freed.geometry.notes)


def test_damaged_root_directory_keeps_system_files(small_image: bytes) -> None:
    source = tampered(small_image, record_offset(small_image, 5), b"BAAD")
    fs = Ntfs.open(source)
    assert fs.excluded_clusters == []
    assert any(
        "root directory of this NTFS volume could not be read" in n for n in fs.geometry.notes
    )


@pytest.fixture(scope="module")
def fuzz_regions(small_image: bytes) -> list[tuple[int, int]]:
    """Where the reader looks: the boot sector, MFT records 0..7, the root directory's
    extension record, attribute list and index blocks."""
    _cs, mft, rs = layout(small_image)
    vol = Volume(BytesSource(small_image), parse_boot_sector(small_image[:512], len(small_image)))
    vol.open_mft()
    root = vol.record(5)
    cs = vol.boot.cluster_size
    regions = [(0, 512), (mft, 8 * rs)]
    alist = root.find(0x20)
    assert alist is not None and not alist.resident, "the fixture's root should have a list"
    regions += [(r.lcn * cs, r.length * cs) for r in alist.runs if r.lcn is not None]
    extensions = {ref for _vcn, ref in vol._list_entries(root, 0x90, None)}  # index root
    regions += [(mft + n * rs, rs) for n in sorted(extensions)]
    index = vol.stream(root, 0xA0, "$I30", "root index")
    assert index is not None, "the fixture's root should have index blocks"
    regions += [(r.lcn * cs, r.length * cs) for r in index.runs if r.lcn is not None]
    return regions


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_fuzzed_metadata_never_crashes(
    small_image: bytes, fuzz_regions: list[tuple[int, int]], data: st.DataObject
) -> None:
    patches = []
    for _ in range(data.draw(st.integers(1, 8))):
        start, length = data.draw(st.sampled_from(fuzz_regions))
        pos = start + data.draw(st.integers(0, length - 1))
        size = data.draw(st.sampled_from([1, 2, 4, 8]))
        patches.append((pos, data.draw(st.binary(min_size=size, max_size=size))))
    try:
        fs = Ntfs.open(PatchedSource(small_image, patches))
        check_extents(list(fs.used_extents()), len(small_image))
    except (DamagedFileSystem, NotThisFileSystem) as e:
        assert str(e)
