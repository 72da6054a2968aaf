"""md RAID members: the superblock versions are found where mdadm puts them, and a damaged one
gives our own error or nothing. This kernel has no md driver (mdadm cannot create an array
here), so the superblocks are laid out by these tests, field by field as md(4) describes them.
"""

from __future__ import annotations

import struct
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from recovery.errors import FileSystemError
from recovery.filesystems.base import BytesSource, open_filesystem
from recovery.filesystems.md import MAGIC, MdMember

SIZE = 1 << 20
SET = uuid.UUID("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")


def v1(offset: int) -> bytes:
    data = bytearray(SIZE)
    sb = bytearray(256)
    struct.pack_into("<III", sb, 0, MAGIC, 1, 0)
    sb[16:32] = SET.bytes
    sb[32:40] = b"host:md0"
    struct.pack_into("<iIQII", sb, 72, 1, 0, 2000, 0, 2)
    data[offset : offset + 256] = sb
    return bytes(data)


def v090() -> bytes:
    data = bytearray(SIZE)
    words = [MAGIC, 0, 90, 0, 0] + [0] * 11
    words[5] = struct.unpack("<I", SET.bytes[0:4])[0]
    words[7] = 1  # raid1
    words[10] = 2  # raid_disks
    words[13:16] = struct.unpack("<III", SET.bytes[4:16])
    at = (SIZE & ~65535) - 65536
    struct.pack_into("<16I", data, at, *words)
    return bytes(data)


def test_every_superblock_version_is_found() -> None:
    for data, version in ((v1(0), "1.1"), (v1(4096), "1.2"), (v1(SIZE - 8192), "1.0")):
        fs = open_filesystem(BytesSource(data), "linux_raid_member")
        assert isinstance(fs, MdMember)
        assert fs.array.version == version and fs.array.level == "raid1"
        assert fs.array.name == "host:md0" and fs.array.uuid == str(SET)
        assert list(fs.used_extents()) == [(0, SIZE)]
        assert "md array host:md0 (raid1, 2 devices" in fs.geometry.notes[0]
    fs = open_filesystem(BytesSource(v090()), "linux_raid_member")
    assert isinstance(fs, MdMember) and fs.array.version == "0.90"
    assert fs.array.uuid == str(SET) and fs.array.raid_disks == 2


def test_nothing_else_is_taken_for_a_member() -> None:
    assert open_filesystem(BytesSource(bytes(SIZE)), "linux_raid_member") is None


@settings(max_examples=200, deadline=2000)
@given(
    version=st.sampled_from([0, 4096, SIZE - 8192, -1]),
    flips=st.lists(st.tuples(st.integers(0, 255), st.integers(1, 255)), max_size=6),
)
def test_fuzz_md_superblocks(version: int, flips: list[tuple[int, int]]) -> None:
    data = bytearray(v090() if version < 0 else v1(version))
    base = (SIZE & ~65535) - 65536 if version < 0 else version
    for at, mask in flips:
        data[base + at] ^= mask
    try:
        fs = open_filesystem(BytesSource(bytes(data)), "linux_raid_member")
    except FileSystemError as e:
        assert e.message
        return
    if fs is not None:
        assert list(fs.used_extents()) == [(0, SIZE)]
