"""Images made by other tools (issue 17): partclone images and Clonezilla image folders.

Both come from whoever plugs in a USB disk, so they are untrusted input. For each parser the
promise is as in test_fuzz_repository.py: any input gives a correct result or one of our own
errors (:class:`recovery.errors.RecoveryError`), never another exception, a hang or an
allocation the format does not allow. The partclone images here are written by
:func:`write_image`, a small writer made from docs/CLONEZILLA.md (not from the reader), so the
round trips check the reader against the document. Bounded for CI: a fixed number of examples.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import struct
from pathlib import Path

import lz4.frame
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recovery.errors import PeerImageError, RecoveryError
from recovery.peers import partclone
from recovery.peers.clonezilla import open_image, parse_sfdisk_dump
from recovery.peers.streams import ImageStream
from tests.unit.partclone_writer import crc, write_image

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
FEW = settings(FUZZ, max_examples=40)


class BytesSource:
    def __init__(self, data: bytes) -> None:
        self.name = "test.img"
        self.f = io.BytesIO(data)

    def read_exact(self, n: int, what: str) -> bytes:
        b = self.f.read(n)
        if len(b) != n:
            raise PeerImageError(f"ends early in {what}")
        return b


def read_all(data: bytes) -> dict[int, bytes]:
    reader = partclone.PartcloneReader(BytesSource(data))
    out: dict[int, bytes] = {}
    for off, run in reader.runs():
        bs = reader.header.block_size
        for k in range(0, len(run), bs):
            out[off + k] = run[k : k + bs]
    return out


def expected(blocks: list[bytes | None], bs: int) -> dict[int, bytes]:
    return {i * bs: b for i, b in enumerate(blocks) if b is not None}


block_lists = st.integers(1, 40).flatmap(
    lambda n: st.lists(
        st.one_of(st.none(), st.binary(min_size=16, max_size=16)), min_size=n, max_size=n
    )
)


@FUZZ
@given(
    blocks=block_lists,
    mode=st.sampled_from([0, 0x20, 0x30, 0x31]),
    per=st.integers(1, 7),
    reseed=st.integers(0, 1),
)
def test_round_trip_every_checksum_mode(blocks, mode, per, reseed) -> None:  # type: ignore[no-untyped-def]
    data = write_image(blocks, 16, mode, per, reseed)
    assert read_all(data) == expected(blocks, 16)


@FUZZ
@given(blocks=block_lists)
def test_round_trip_version_0001(blocks) -> None:  # type: ignore[no-untyped-def]
    assert read_all(write_image(blocks, 16, version=1)) == expected(blocks, 16)


@FUZZ
@given(
    blocks=block_lists,
    mode=st.sampled_from([0x20, 0x30, 0x31]),
    where=st.integers(0, 10**6),
    flip=st.integers(1, 255),
)
def test_any_flipped_byte_is_detected(blocks, mode, where, flip) -> None:  # type: ignore[no-untyped-def]
    """With a checksum on, every byte of a v2 image is covered: a flip is always reported."""
    data = bytearray(write_image(blocks, 16, mode, 3, 1))
    i = where % len(data)
    data[i] ^= flip
    with pytest.raises(PeerImageError):
        read_all(bytes(data))


@FUZZ
@given(blocks=block_lists, cut=st.integers(0, 10**6))
def test_truncated_image_is_reported(blocks, cut) -> None:  # type: ignore[no-untyped-def]
    data = write_image(blocks, 16)
    short = data[: cut % len(data)]
    with pytest.raises(PeerImageError):
        read_all(short)


@FUZZ
@given(data=st.binary(max_size=300), version=st.sampled_from([b"0001", b"0002", b"0003"]))
def test_arbitrary_bytes_after_the_magic(data, version) -> None:  # type: ignore[no-untyped-def]
    blob = b"partclone-image\0" + b"x" * 14 + version + data
    with contextlib.suppress(RecoveryError):
        read_all(blob)


@FUZZ
@given(
    total=st.integers(0, 2**64 - 1),
    used=st.integers(0, 2**64 - 1),
    bs=st.integers(0, 2**32 - 1),
    dev=st.integers(0, 2**64 - 1),
    mode=st.integers(0, 0xFFFF),
    csize=st.integers(0, 0xFFFF),
    per=st.integers(0, 2**32 - 1),
    bitmap=st.integers(0, 255),
)
def test_hostile_header_fields(total, used, bs, dev, mode, csize, per, bitmap) -> None:  # type: ignore[no-untyped-def]
    """Valid CRC, impossible values: refused before anything is sized by them."""
    desc = struct.pack("<16s14s4sH", b"partclone-image\0", b"0.3.23", b"0002", 0xC0DE)
    desc += struct.pack("<16sQQQQI", b"EXTFS", dev, total, used, used, bs)
    desc += struct.pack("<IHHHHIBB", 18, 2, 64, mode, csize, per, 1, bitmap)
    desc += struct.pack("<I", crc(desc))
    with contextlib.suppress(RecoveryError):
        read_all(desc + bytes(64))


def test_huge_bitmap_claim_allocates_nothing_up_front() -> None:
    """2^31 blocks claimed, 64 bytes given: an error, not a 256 MiB allocation first."""
    desc = struct.pack("<16s14s4sH", b"partclone-image\0", b"0.3.23", b"0002", 0xC0DE)
    desc += struct.pack("<16sQQQQI", b"EXTFS", 2**31 * 4096, 2**31, 1, 1, 4096)
    desc += struct.pack("<IHHHHIBB", 18, 2, 64, 0x20, 4, 1, 1, 1)
    desc += struct.pack("<I", crc(desc))
    with pytest.raises(PeerImageError, match="ends early"):
        read_all(desc + bytes(64))


COMPRESSORS = {
    "gzip": gzip.compress,
    "zstd": lambda d: (
        zstandard.ZstdCompressor().compress(d[: len(d) // 2])
        + zstandard.ZstdCompressor().compress(d[len(d) // 2 :])
    ),  # two frames, as pzstd writes
    "xz": lzma.compress,
    "bzip2": bz2.compress,
    "lz4": lz4.frame.compress,
    "none": lambda d: d,
}


@pytest.mark.parametrize("name", sorted(COMPRESSORS))
@pytest.mark.parametrize("parts", [1, 3])
def test_compressed_and_split_files(tmp_path: Path, name: str, parts: int) -> None:
    blocks: list[bytes | None] = [bytes([i]) * 512 if i % 3 else None for i in range(200)]
    data = COMPRESSORS[name](write_image(blocks, 512, 0x20, 8, 1))
    step = -(-len(data) // parts)
    files = []
    for k in range(parts):
        f = tmp_path / f"sda1.ext4-ptcl-img.x.a{chr(97 + k)}"
        f.write_bytes(data[k * step : (k + 1) * step])
        files.append(f)
    with ImageStream(files) as s:
        assert s.compression == name
        got = {off: run for off, run in partclone.PartcloneReader(s).runs()}
    joined = b"".join(got[k] for k in sorted(got))
    assert joined == b"".join(b for b in blocks if b is not None)


@FEW
@given(garbage=st.binary(max_size=200), name=st.sampled_from(sorted(COMPRESSORS)))
def test_damaged_compressed_stream(tmp_path: Path, garbage: bytes, name: str) -> None:
    data = COMPRESSORS[name](write_image([b"a" * 512] * 4, 512))
    f = tmp_path / "x"
    f.write_bytes(data[: len(data) // 2] + garbage)
    try:
        with ImageStream([f]) as s:
            list(partclone.PartcloneReader(s).runs())
    except RecoveryError:
        pass


SFDISK = """label: gpt
label-id: 03D74B51-362B-9B4D-A17C-6D46A01E42B6
device: /dev/sda
unit: sectors
first-lba: 2048
last-lba: 131038
sector-size: 512

/dev/sda1 : start=        2048, size=       24576, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, \
uuid=515CEA66-886B-8247-8757-7C879FD3FA7E, name="EFI, system"
/dev/sda2 : start=       26624, size=       81920, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, \
uuid=1BEDE039-BFD3-9449-A986-FD7702BA9D04, name="root"
"""


def test_sfdisk_dump_parses() -> None:
    d = parse_sfdisk_dump(SFDISK, "x")
    assert d["label"] == "gpt" and d["lastlba"] == 131038
    assert d["partitions"][0]["name"] == "EFI, system"
    assert d["partitions"][1]["start"] == 26624


def make_folder(tmp_path: Path, files: dict[str, bytes]) -> Path:
    folder = tmp_path / "img"
    folder.mkdir(exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


@FUZZ
@given(
    disk=st.binary(max_size=40) | st.just(b"sda"),
    parts=st.binary(max_size=40) | st.just(b"sda1 sda2"),
    table=st.binary(max_size=400) | st.just(SFDISK.encode()),
    where=st.integers(0, 2000),
    flip=st.integers(1, 255),
    swap=st.binary(max_size=80),
)
def test_hostile_image_folder(tmp_path: Path, disk, parts, table, where, flip, swap) -> None:  # type: ignore[no-untyped-def]
    t = bytearray(table)
    if t:
        t[where % len(t)] ^= flip
    folder = make_folder(
        tmp_path,
        {
            "disk": disk,
            "parts": parts,
            "sda-pt.sf": bytes(t),
            "sda1.vfat-ptcl-img.gz": b"",
            "sda2.ext4-ptcl-img.zst.aa": b"",
            "swappt-sda3.info": swap,
            "clonezilla-img": b"x",
        },
    )
    try:
        image = open_image(folder)
    except RecoveryError:
        return
    assert disk.decode("utf-8", "replace").split() == [image.disk]


def test_folder_with_missing_split_part_is_refused(tmp_path: Path) -> None:
    folder = make_folder(
        tmp_path,
        {
            "disk": b"sda",
            "parts": b"sda1",
            "sda-pt.sf": SFDISK.encode(),
            "sda1.vfat-ptcl-img.gz.aa": b"",
            "sda1.vfat-ptcl-img.gz.ac": b"",
        },
    )
    with pytest.raises(PeerImageError, match="not a complete series"):
        open_image(folder)


def test_unsplit_image_is_found(tmp_path: Path) -> None:
    """Clonezilla >= 4.6.4 writes no suffix by default."""
    folder = make_folder(
        tmp_path,
        {
            "disk": b"sda",
            "parts": b"sda1",
            "sda-pt.sf": SFDISK.encode(),
            "sda1.vfat-ptcl-img.zst": b"",
        },
    )
    (p,) = open_image(folder).partitions
    assert p.number == 1 and p.fstype == "vfat" and len(p.files) == 1
