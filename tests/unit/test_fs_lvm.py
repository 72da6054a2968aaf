"""The LVM2 reader on physical volumes written here byte by byte, and its fuzzers.

:func:`make_pv` lays out a PV as LVM2 does (label in sector 1, PV header, metadata area at 4 KiB
with its header and the text after it, extents from 1 MiB; checksums with LVM's CRC) around an
ext4 made by the real mkfs.ext4; tests/storage/test_lvm.py checks the reader against PVs that
LVM's own tools wrote. The fuzzers damage the label, the metadata and the text (and the text
parser alone): the reader gives our own FileSystemError or valid extents, nothing else.
"""

from __future__ import annotations

import os
import struct
import subprocess
from itertools import islice
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recovery.core import lvmconfig
from recovery.core.extents import total
from recovery.errors import DamagedFileSystem, FileSystemError
from recovery.filesystems.base import BytesSource, open_filesystem
from recovery.filesystems.ext4 import Ext4
from recovery.filesystems.lvm import MDA_MAGIC, Lvm2, lvm_crc
from tests.loopdev import have

MiB = 1 << 20
PV_UUID = "abcdef0123456789abcdef0123456789"
MDA_AT, MDA_SIZE, PE_START, EXTENT = 4096, MiB - 4096, MiB, MiB


def dashed(u: str) -> str:
    return "-".join((u[:6], u[6:10], u[10:14], u[14:18], u[18:22], u[22:26], u[26:]))


def vg_text(volumes: dict[str, list[tuple[int, int]]], pe_count: int) -> str:
    lines = [
        "vg0 {",
        'id = "AAAAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GGGGGG"',
        "seqno = 4",
        'format = "lvm2" # informational',
        'status = ["RESIZEABLE", "READ", "WRITE"]',
        "extent_size = 2048",
        "physical_volumes {",
        "pv0 {",
        f'id = "{dashed(PV_UUID)}"',
        'device = "/dev/sda3"',
        f"pe_start = {PE_START // 512}",
        f"pe_count = {pe_count}",
        "}",
        "}",
        "logical_volumes {",
    ]
    for name, segments in volumes.items():
        lines += [f"{name} {{", f'id = "{name}"', f"segment_count = {len(segments)}"]
        at = 0
        for i, (first, count) in enumerate(segments, 1):
            lines += [
                f"segment{i} {{",
                f"start_extent = {at}",
                f"extent_count = {count}",
                'type = "striped"',
                "stripe_count = 1",
                f'stripes = ["pv0", {first}]',
                "}",
            ]
            at += count
        lines.append("}")
    lines += ["}", "}", 'contents = "Text Format Volume Group"', "version = 1"]
    return "\n".join(lines) + "\n"


def make_pv(volume: bytes, pe_count: int = 24) -> bytes:
    """A PV of ``pe_count`` 1 MiB extents; volume ``data`` in extents 12-19 then 4-7."""
    pv = bytearray(PE_START + pe_count * EXTENT)
    segments = [(12, 8), (4, 4)]
    at = 0
    for first, count in segments:
        pv[PE_START + first * EXTENT : PE_START + (first + count) * EXTENT] = volume[
            at : at + count * EXTENT
        ]
        at += count * EXTENT
    text = vg_text({"data": segments, "empty": [(20, 2)]}, pe_count).encode()
    header = bytearray(512)
    struct.pack_into("<16sIQQ", header, 4, MDA_MAGIC, 1, MDA_AT, MDA_SIZE)
    struct.pack_into("<QQII", header, 40, 512, len(text), lvm_crc(text), 0)
    struct.pack_into("<I", header, 0, lvm_crc(bytes(header[4:])))
    pv[MDA_AT : MDA_AT + 512] = header
    pv[MDA_AT + 512 : MDA_AT + 512 + len(text)] = text
    label = bytearray(512)
    pv_header = PV_UUID.encode() + struct.pack("<Q", len(pv))
    pv_header += struct.pack("<QQQQ", PE_START, 0, 0, 0) + struct.pack(
        "<QQQQ", MDA_AT, MDA_SIZE, 0, 0
    )
    label[32 : 32 + len(pv_header)] = pv_header
    struct.pack_into("<8sQ", label, 0, b"LABELONE", 1)
    struct.pack_into("<I8s", label, 20, 32, b"LVM2 001")
    struct.pack_into("<I", label, 16, lvm_crc(bytes(label[20:])))
    pv[512:1024] = label
    return bytes(pv)


class Image(bytes):
    """A PV image whose repr stays short in hypothesis' reports."""

    def __repr__(self) -> str:
        return f"<PV image of {len(self)} bytes>"


@pytest.fixture(scope="module")
def pv(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    if not have("mkfs.ext4"):
        pytest.skip("needs e2fsprogs")
    d = tmp_path_factory.mktemp("lvm")
    tree = d / "tree"
    tree.mkdir()
    for i in range(20):
        (tree / f"f{i}").write_bytes(os.urandom(50_000))
    image = d / "data.img"
    with open(image, "wb") as f:
        f.truncate(12 * MiB)
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-b", "1024", "-d", str(tree), str(image)],
        check=True,
        capture_output=True,
    )
    return Image(make_pv(Path(image).read_bytes()))


def test_reads_volumes_through_their_segments(pv: bytes) -> None:
    fs = open_filesystem(BytesSource(pv), "LVM2_member")
    assert isinstance(fs, Lvm2)
    assert fs.vg.name == "vg0" and [lv.name for lv in fs.vg.volumes] == ["data", "empty"]
    data, empty = fs.vg.volumes
    assert isinstance(fs.volume_filesystem(data), Ext4)
    assert fs.volume_filesystem(empty) is None
    extents = list(fs.used_extents())
    # The header and metadata area, the ext4's used blocks (~1 MB of files and its tables)
    # in both segments, the unrecognised volume whole; the free extents not at all.
    assert extents[0].start == 0
    used = total(extents)
    assert 2 * MiB + 1 * MiB < used < PE_START + 2 * EXTENT + 6 * MiB, used

    def used_in(first: int, count: int) -> int:
        lo, hi = PE_START + first * EXTENT, PE_START + (first + count) * EXTENT
        return sum(max(0, min(s + n, hi) - max(s, lo)) for s, n in extents)

    assert used_in(4, 4) > 0  # the volume's second segment: its block group 1 (backup sb)
    assert used_in(12, 1) > 500_000  # its first: the files
    assert used_in(20, 2) == 2 * EXTENT  # "empty", not recognised: whole
    assert used_in(0, 4) == used_in(8, 4) == used_in(22, 2) == 0  # free extents


def test_checksums_guard_the_label_and_the_metadata(pv: bytes) -> None:
    for at in (512 + 40, MDA_AT + 60, MDA_AT + 600):  # label, area header, text
        damaged = bytearray(pv)
        damaged[at] ^= 0x10
        with pytest.raises(DamagedFileSystem):
            Lvm2.open(BytesSource(bytes(damaged)))


def test_config_parser_reads_what_vgcfgbackup_writes() -> None:
    text = '# comment\nvg {\n\tid = "a\\"b"\n\tn = -3\n\tl = ["x", 1, ]\n\tsub {\n\t}\n}\nv = 1.5\n'
    assert lvmconfig.parse(text) == {
        "vg": {"id": 'a"b', "n": -3, "l": ["x", 1], "sub": {}},
        "v": 1.5,
    }
    for bad in ("vg {", "}", "a = ", "a b", "a = [1", "= 3", 'a = "x'):
        with pytest.raises(lvmconfig.ConfigError):
            lvmconfig.parse(bad)


FUZZ = settings(
    max_examples=200,
    deadline=5000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@FUZZ
@given(text=st.text(alphabet='abc01 ={}[],"#\n\\-.', max_size=300))
def test_fuzz_config_parser(text: str) -> None:
    try:
        lvmconfig.parse(text)
    except lvmconfig.ConfigError as e:
        assert str(e)


class Damaged:
    """A BlockSource: the PV with its first MiB replaced and single bytes flipped after it
    (no copy of the whole image per example)."""

    def __init__(self, base: bytes, head: bytes, flips: dict[int, int]) -> None:
        self.base, self.head, self.flips = base, head, flips
        self.size = len(base)

    def pread(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        out = bytearray(self.base[offset : offset + length])
        if offset < len(self.head):
            n = min(length, len(self.head) - offset)
            out[:n] = self.head[offset : offset + n]
        for at, mask in self.flips.items():
            if offset <= at < offset + length:
                out[at - offset] ^= mask
        return bytes(out)


@FUZZ
@given(
    flips=st.lists(
        st.tuples(
            st.sampled_from([512, MDA_AT, MDA_AT + 512]) | st.integers(0, 24 * MiB),
            st.integers(0, 700),
            st.integers(1, 255),
        ),
        min_size=1,
        max_size=6,
    ),
    fix_checksums=st.booleans(),
)
def test_fuzz_damaged_pv(pv: bytes, flips: list[tuple[int, int, int]], fix_checksums: bool) -> None:
    head = bytearray(pv[:PE_START])
    later: dict[int, int] = {}
    for base, offset, mask in flips:
        at = min(base + offset, len(pv) - 1)
        if at < PE_START:
            head[at] ^= mask
        else:
            later[at] = later.get(at, 0) ^ mask
    if fix_checksums:  # get past the checksums, to the parser and the volume readers
        text_len = struct.unpack_from("<Q", head, MDA_AT + 48)[0] % MDA_SIZE
        text = bytes(head[MDA_AT + 512 : MDA_AT + 512 + text_len])
        struct.pack_into("<I", head, MDA_AT + 56, lvm_crc(text))
        struct.pack_into("<I", head, MDA_AT, lvm_crc(bytes(head[MDA_AT + 4 : MDA_AT + 512])))
        struct.pack_into("<I", head, 512 + 16, lvm_crc(bytes(head[512 + 20 : 1024])))
    source = Damaged(pv, bytes(head), later)
    try:
        fs = open_filesystem(source, "LVM2_member")
        if fs is None:
            return
        extents = list(islice(fs.used_extents(), 100_000))
    except FileSystemError as e:
        assert e.message
        return
    end = -1
    for start, length in extents:
        assert start > end and length > 0
        end = start + length - 1
    assert end < len(pv)
