"""The shrunk layout (core/layout.py) and the composed file (core/composed.py), without devices."""

from __future__ import annotations

import pytest

from recovery.core.composed import PAGE, ComposedFile, OverlayFull
from recovery.core.layout import Alignment, fits_unchanged, plan_shrunk_layout, smallest_unchanged
from recovery.core.table import Entry, Table
from recovery.errors import Refused

MiB = 1 << 20
S = 2048  # sectors per MiB
ONE_MIB = Alignment(S)
ESP = Entry(1, 1 * S, 100 * S, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", uuid="U1", name="EFI")
MSR = Entry(2, 101 * S, 16 * S, "E3C9E316-0B5C-4DB8-817D-F92DF00215AE", uuid="U2")
C = Entry(3, 117 * S, 5000 * S, "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", uuid="U3")
WINRE = Entry(
    4,
    5117 * S,
    500 * S,
    "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC",
    uuid="U4",
    attrs="RequiredPartition",
)


def gpt(*entries: Entry) -> Table:
    return Table("gpt", "DISK-GUID", 512, 2048, 5618 * S + 33 - 1, entries)


def test_fits_unchanged_and_the_smallest_such_disk() -> None:
    t = gpt(ESP, MSR, C, WINRE)
    need = smallest_unchanged(t)
    assert need == (5617 * S + 33) * 512
    assert fits_unchanged(t, need)
    assert not fits_unchanged(t, need - 512)


def test_main_shrinks_and_the_partitions_after_it_move_keeping_their_identifiers() -> None:
    t = gpt(ESP, MSR, C, WINRE)
    target = 4000 * MiB
    lay = plan_shrunk_layout(t, target, 3, 1000 * MiB, ONE_MIB, "/dev/x")
    assert lay.shrunk == 3 and lay.main is None and not lay.same_geometry
    esp, msr, c, winre = (lay.move(n) for n in (1, 2, 3, 4))
    assert (esp.new_start, esp.new_size) == (esp.old_start, esp.old_size)
    assert (msr.new_start, msr.new_size) == (msr.old_start, msr.old_size)
    assert c.new_start == c.old_start and c.shrunk
    assert winre.new_size == winre.old_size and winre.moved
    assert winre.new_start == c.new_start + c.new_size
    # The recovery partition ends at the target's usable end, as near as alignment allows.
    usable = target // 512 - 33
    assert 0 <= usable * 512 - (winre.new_start + winre.new_size) < MiB
    assert winre.new_start % MiB == 0
    new = lay.table
    assert new.id == "DISK-GUID" and new.last_lba == usable - 1
    assert [(e.uuid, e.type, e.name, e.attrs) for e in new.entries] == [
        (e.uuid, e.type, e.name, e.attrs) for e in t.entries
    ]


def test_alignment_grain_of_the_target_is_followed() -> None:
    t = gpt(ESP, MSR, C, WINRE)
    lay = plan_shrunk_layout(t, 4000 * MiB, 3, 1000 * MiB, Alignment(8 * S, 0), "/dev/x")
    assert lay.move(4).new_start % (8 * MiB) == 0


def test_main_last_on_the_disk_ends_aligned() -> None:
    t = gpt(ESP, MSR, C)
    lay = plan_shrunk_layout(t, 3000 * MiB, 3, 1000 * MiB, ONE_MIB, "/dev/x")
    c = lay.move(3)
    assert (c.new_start + c.new_size) % MiB == 0
    assert c.new_start + c.new_size <= (3000 * MiB // 512 - 33) * 512


def test_data_that_does_not_fit_is_refused_with_the_smallest_target() -> None:
    t = gpt(ESP, MSR, C, WINRE)
    with pytest.raises(Refused, match="too small") as e:
        plan_shrunk_layout(t, 2000 * MiB, 3, 3000 * MiB, ONE_MIB, "/dev/x")
    assert "partition 3" in e.value.message
    smallest = int(e.value.message.split("smallest target that works has ")[1].split()[0])
    # That size works, and a mebibyte less does not.
    plan_shrunk_layout(t, smallest, 3, 3000 * MiB, ONE_MIB, "/dev/x")
    with pytest.raises(Refused):
        plan_shrunk_layout(t, smallest - MiB, 3, 3000 * MiB, ONE_MIB, "/dev/x")


def test_mbr_extended_container_shrinks_with_its_logical_main() -> None:
    t = Table(
        "dos",
        "0x1234",
        512,
        None,
        None,
        (
            Entry(1, S, 100 * S, "83", bootable=True),
            Entry(2, 101 * S, 3000 * S, "5"),
            Entry(5, 102 * S, 2998 * S, "83"),
        ),
    )
    lay = plan_shrunk_layout(t, 2000 * MiB, 5, 500 * MiB, ONE_MIB, "/dev/x")
    ext, logical = lay.table.entry(2), lay.table.entry(5)
    assert logical.end <= ext.end <= 2000 * S
    assert ext.size - logical.size == 2 * S
    assert lay.table.entry(1).bootable


def composed(size: int, split: int, limit: int = 16 * PAGE) -> tuple[ComposedFile, bytearray]:
    front = bytearray(split)
    tail = bytes((i * 7) % 251 for i in range(size))

    def front_write(data: bytes, offset: int) -> None:
        assert offset + len(data) <= split, "a write went past the front"
        front[offset : offset + len(data)] = data

    f = ComposedFile(
        size,
        split,
        lambda o, n: bytes(front[o : o + n]),
        front_write,
        lambda o, n: tail[o : o + n],
        limit,
    )
    return f, front


def test_composed_file_routes_front_and_tail_and_keeps_tail_writes_in_the_overlay() -> None:
    size, split = 64 * PAGE + 100, 10 * PAGE + 17  # a page straddles the split
    f, front = composed(size, split)
    tail = bytes((i * 7) % 251 for i in range(size))
    assert f.read(split - 3, 6) == bytes(3) + tail[split : split + 3]
    data = bytes(range(256)) * 40
    f.write(data, split - 1000)  # across the split
    assert front[split - 1000 :] == data[:1000]
    assert f.read(split - 1000, len(data)) == data
    assert f.read(split + len(data), 10) == tail[split + len(data) : split + len(data) + 10]
    assert f.read(size - 5, 100) == tail[size - 5 :]
    assert f.overlay_bytes <= 4 * PAGE


def test_composed_file_overlay_is_bounded() -> None:
    f, _ = composed(64 * PAGE, 0, limit=2 * PAGE)
    f.write(b"x" * (2 * PAGE), 0)
    with pytest.raises(OverlayFull):
        f.write(b"y", 5 * PAGE)
    assert f.read(5 * PAGE, 1) != b"y"
    f.write(b"z", 1)  # pages already held cost nothing more
    assert f.read(0, 2) == b"xz"


def test_read_only_composed_file_refuses_writes() -> None:
    f = ComposedFile(10, 0, lambda o, n: b"", None, lambda o, n: b"a" * n, 0)
    assert f.read(0, 20) == b"a" * 10
    with pytest.raises(PermissionError):
        f.write(b"b", 0)
