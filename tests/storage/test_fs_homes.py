"""What the file system homes answer about real file systems on loop devices."""

from __future__ import annotations

from types import SimpleNamespace

from recovery.engine.reading import describe_unreadable
from recovery.filesystems.base import kind_of
from tests import loopdev
from tests.storage.disks import MiB, mounted


def test_ext4_names_the_files_in_unreadable_ranges(loop) -> None:  # type: ignore[no-untyped-def]
    dev = loop(64 * MiB)
    (part,) = loopdev.partition(dev, "label: gpt\ntype=linux\n")
    loopdev.mkfs(part, "ext4", "-b", "4096")
    with mounted(part) as root:
        (root / "letter.txt").write_bytes(b"x" * 40960)
    block = int(loopdev.run("debugfs", "-R", "bmap /letter.txt 3", part).stdout.split()[-1])
    ranges = [(block * 4096 + 100, 10)]

    ext4 = kind_of("ext4")
    # debugfs's ncheck names root files "//letter.txt" (kept as it was before the move).
    assert [f.lstrip("/") for f in ext4.files_in(part, 4096, ranges)] == ["letter.txt"]
    assert ext4.has_path(part, "/letter.txt") and not ext4.has_path(part, "/etc/os-release")
    assert "letter.txt" in ext4.root_names(part)

    sp = SimpleNamespace(number=1, fstype="ext4", block_size=4096)
    lines = describe_unreadable(dev, sp, ranges)
    assert lines[1].startswith("unreadable: files affected on partition 1: ")
    assert lines[1].endswith("/letter.txt")
    # A file system whose home cannot tell says nothing about files.
    other = SimpleNamespace(number=1, fstype="xfs", block_size=4096)
    assert len(describe_unreadable(dev, other, ranges)) == 1
