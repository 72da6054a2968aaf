"""Layout planning on other disk sizes and the sfdisk script, without devices."""

from __future__ import annotations

import pytest

from recovery.core.table import Entry, Table, partition_node, plan_layout, sfdisk_script
from recovery.errors import Refused

MiB = 1 << 20
S = 2048  # sectors per MiB


def gpt(*entries: Entry) -> Table:
    return Table("gpt", "ABCD-EF", 512, 2048, 6 * 1024 * S - 34, entries)


ESP = Entry(1, 1 * S, 100 * S, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", uuid="U1", name="EFI")
ROOT = Entry(2, 101 * S, 5000 * S, "0FC63DAF-8483-4772-8E79-3D69D8477DE4", uuid="U2")
SWAP = Entry(3, 5101 * S, 900 * S, "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F", uuid="U3")
# vfat, ext4, swap: only the ext4 can grow (the engine asks the file systems' homes).
FS = {2}


def test_same_size_keeps_everything() -> None:
    t = gpt(ESP, ROOT, SWAP)
    lay = plan_layout(t, 6 << 30, 6 << 30, FS)
    assert lay.same_geometry
    assert lay.main is None
    assert [(m.old_start, m.new_start) for m in lay.moves] == [
        (m.old_start, m.old_start) for m in lay.moves
    ]


def test_larger_disk_grows_main_and_moves_the_rest_to_the_end() -> None:
    t = gpt(ESP, ROOT, SWAP)
    lay = plan_layout(t, 6 << 30, 10 << 30, FS)
    assert lay.main == 2
    root, swap = lay.move(2), lay.move(3)
    assert root.new_start == root.old_start
    assert root.new_size == root.old_size + (4 << 30)
    assert swap.new_size == swap.old_size
    assert swap.new_start == swap.old_start + (4 << 30)
    assert lay.table.last_lba == (10 << 30) // 512 - 34
    assert lay.table.entry(3).uuid == "U3"
    assert not lay.same_geometry


def test_too_small_is_refused() -> None:
    with pytest.raises(Refused, match="too small"):
        plan_layout(gpt(ESP, ROOT, SWAP), 6 << 30, 5 << 30, FS)


def test_smaller_disk_with_room_keeps_layout() -> None:
    t = gpt(ESP, ROOT)
    lay = plan_layout(t, 6 << 30, 5200 * MiB, FS)
    assert all(m.old_start == m.new_start and m.old_size == m.new_size for m in lay.moves)
    assert not lay.same_geometry


def test_no_growable_file_system_keeps_sizes() -> None:
    t = gpt(ESP, ROOT)
    lay = plan_layout(t, 6 << 30, 8 << 30, set())
    assert lay.main is None
    assert all(m.old_size == m.new_size for m in lay.moves)


def test_mbr_logical_main_grows_its_extended_container() -> None:
    t = Table(
        "dos",
        "0x1234abcd",
        512,
        None,
        None,
        (
            Entry(1, S, 100 * S, "83", bootable=True),
            Entry(2, 101 * S, 3000 * S, "5"),
            Entry(5, 102 * S, 2000 * S, "83"),
            Entry(6, 2103 * S, 998 * S, "82"),
        ),
    )
    lay = plan_layout(t, 4 << 30, 6 << 30, {1, 5})
    assert lay.main == 5
    assert lay.table.entry(2).size == 3000 * S + 2048 * S
    assert lay.table.entry(6).start == 2103 * S + 2048 * S
    assert lay.table.entry(1).bootable


def test_sfdisk_script_keeps_identifiers() -> None:
    script = sfdisk_script(gpt(ESP, ROOT), "/dev/loop3")
    assert "label-id: ABCD-EF" in script
    assert "/dev/loop3p1 : start=2048, size=204800, type=C12A7328" in script
    assert "uuid=U1" in script and 'name="EFI"' in script
    assert partition_node("/dev/sda", 2) == "/dev/sda2"
    assert partition_node("/dev/nvme0n1", 2) == "/dev/nvme0n1p2"


def test_table_from_sfdisk_json() -> None:
    t = Table.from_json(
        {
            "label": "dos",
            "id": "0x5eed",
            "device": "/dev/loop0",
            "unit": "sectors",
            "sectorsize": 512,
            "partitions": [{"node": "/dev/loop0p5", "start": 4096, "size": 2048, "type": "83"}],
        }
    )
    assert t.entries[0].number == 5


def test_fill_grows_main_into_the_room_of_dropped_partitions() -> None:
    data = Entry(4, 6001 * S, 100 * S, "0FC63DAF-8483-4772-8E79-3D69D8477DE4")
    t = gpt(ESP, ROOT, data)
    kept = Table(t.label, t.id, t.sector_size, t.first_lba, t.last_lba, (ESP, ROOT))
    lay = plan_layout(kept, 6 << 30, 6 << 30, FS, fill=True)
    assert lay.main == 2
    assert lay.move(2).new_size > ROOT.size * 512
    assert lay.move(2).new_start + lay.move(2).new_size <= (6 << 30) - 33 * 512
