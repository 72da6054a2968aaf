"""The swap reader on areas made with mkswap in regular files."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recovery.core.extents import Extent
from recovery.errors import DamagedFileSystem, NotThisFileSystem
from recovery.filesystems.base import BytesSource, open_filesystem, readers
from recovery.filesystems.swap import Swap
from tests.loopdev import have

pytestmark = pytest.mark.skipif(not have("mkswap"), reason="needs mkswap")

MiB = 1 << 20
UUID = "5a0d6f1e-8c2b-4d3a-9e7f-1b2c3d4e5f60"


def mkswap(path: Path, size: int, *args: str) -> bytes:
    with open(path, "wb") as f:
        f.truncate(size)
    subprocess.run(["mkswap", *args, str(path)], check=True, capture_output=True)
    return path.read_bytes()


@pytest.fixture
def area(tmp_path: Path) -> bytes:
    return mkswap(tmp_path / "swap.img", 16 * MiB, "-L", "myswap", "-U", UUID)


def test_header_is_all_that_is_kept(area: bytes) -> None:
    fs = Swap.open(BytesSource(area))
    assert list(fs.used_extents()) == [Extent(0, 4096)]
    assert fs.geometry.label == "myswap"
    assert fs.geometry.uuid == UUID
    assert fs.geometry.block_size == 4096
    assert fs.geometry.fs_size == 16 * MiB
    assert fs.restore_note() == "recreate"


def test_registry_probes_it(area: bytes) -> None:
    assert "swap" in [cls.name for cls in readers()]
    assert isinstance(open_filesystem(BytesSource(area), None), Swap)
    assert isinstance(open_filesystem(BytesSource(area), "swap"), Swap)
    assert open_filesystem(BytesSource(area), "ext4") is None


def test_no_label(tmp_path: Path) -> None:
    fs = Swap.open(BytesSource(mkswap(tmp_path / "s.img", 4 * MiB)))
    assert fs.geometry.label is None
    assert fs.geometry.uuid is not None


def test_large_pages(tmp_path: Path) -> None:
    # Made on a machine with 64 KiB pages (arm64, ppc64): the signature ends the first 64 KiB.
    data = mkswap(tmp_path / "s.img", 16 * MiB, "-p", "65536", "-U", UUID)
    fs = Swap.open(BytesSource(data))
    assert fs.geometry.block_size == 65536
    assert list(fs.used_extents()) == [Extent(0, 65536)]
    assert fs.geometry.uuid == UUID


def test_other_byte_order(area: bytes) -> None:
    data = bytearray(area)
    version, last_page, bad = struct.unpack_from("<III", data, 1024)
    struct.pack_into(">III", data, 1024, version, last_page, bad)
    fs = Swap.open(BytesSource(bytes(data)))
    assert fs.geometry.fs_size == 16 * MiB
    assert fs.geometry.uuid == UUID


def test_hibernation_image_is_not_swap(area: bytes) -> None:
    data = bytearray(area)
    for signature in (b"S1SUSPEND\0", b"LINHIB0001", b"ULSUSPEND\0"):
        data[4096 - 10 : 4096] = signature
        with pytest.raises(NotThisFileSystem, match="hibernation"):
            Swap.open(BytesSource(bytes(data)))


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        (1024, (2).to_bytes(4, "little"), "version"),
        (1028, (10**6).to_bytes(4, "little"), "partition has only"),
        (1028, (3).to_bytes(4, "little"), "last_page"),
        (4096 - 10, b"SWAP-SPACE", "version 0"),
    ],
)
def test_damaged_header(area: bytes, offset: int, value: bytes, message: str) -> None:
    data = bytearray(area)
    data[offset : offset + len(value)] = value
    with pytest.raises(DamagedFileSystem, match=message):
        Swap.open(BytesSource(bytes(data)))


def test_not_swap() -> None:
    with pytest.raises(NotThisFileSystem):
        Swap.open(BytesSource(bytes(MiB)))
    with pytest.raises(NotThisFileSystem):
        Swap.open(BytesSource(b"SWAPSPACE2"))


@settings(max_examples=200, deadline=None)
@given(st.integers(1024, 1024 + 44), st.binary(min_size=1, max_size=8))
def test_fuzz_header(offset: int, value: bytes) -> None:
    data = bytearray(4 * MiB)
    data[4096 - 10 : 4096] = b"SWAPSPACE2"
    struct.pack_into("<III16s16s", data, 1024, 1, 1023, 0, bytes(range(16)), b"label")
    data[offset : offset + len(value)] = value
    try:
        fs = Swap.open(BytesSource(bytes(data)))
    except (DamagedFileSystem, NotThisFileSystem):
        return
    assert list(fs.used_extents()) == [Extent(0, 4096)]
    assert fs.geometry.fs_size <= len(data)
