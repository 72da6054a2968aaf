"""``recovery disks`` on real loop devices, checked against ``blkid -p`` and ``blockdev``.

Each test attaches its own loop disks (tests/loopdev.py), writes GPT or MBR tables with sfdisk
and real file systems, and compares what recovery reports with what libblkid and the kernel say.
The sysfs+blkid path is forced with ``RECOVERY_NO_UDEV=1`` (or by pointing the udev check at a
missing control socket), so it is tested beside the shared udevd without stopping it.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from recovery.devices import udev
from recovery.devices.disks import (
    NO_UDEV_WARNING,
    DiskEvent,
    DiskWatcher,
    find_disk,
    find_partition,
    list_disks,
    refresh,
)
from recovery.errors import DeviceError
from tests import loopdev

MiB = 1024 * 1024
REPO = Path(__file__).resolve().parents[2]

GPT_BASIC_DATA = "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7"


def recovery_disks_json(env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    r = subprocess.run(
        [sys.executable, "-m", "recovery", "disks", "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return {d["path"]: d for d in json.loads(r.stdout)["disks"]}


def blkid(path: str) -> dict[str, str]:
    """``blkid -p -o export``, with its backslash escapes undone."""
    r = subprocess.run(["blkid", "-p", "-o", "export", path], capture_output=True, text=True)
    out: dict[str, str] = {}
    for line in r.stdout.splitlines():
        key, _, value = line.partition("=")
        out[key] = re.sub(r"\\(.)", r"\1", value)
    return out


def getsize64(path: str) -> int:
    return int(loopdev.run("blockdev", "--getsize64", path).stdout)


def check_against_blkid(disk: dict[str, Any], parts: list[str]) -> None:
    """Every field `disks --json` promises, against libblkid and the kernel."""
    dev = disk["path"]
    whole = blkid(dev)
    assert disk["size"] == getsize64(dev)
    assert disk["table"] == whole["PTTYPE"]
    assert disk["ptuuid"] == whole["PTUUID"]
    assert disk["transport"] == "loop"
    assert disk["backing_file"]
    assert [p["path"] for p in disk["partitions"]] == parts
    for p in disk["partitions"]:
        info = blkid(p["path"])
        assert p["number"] == int(info["PART_ENTRY_NUMBER"]), p["path"]
        assert p["start"] == int(info["PART_ENTRY_OFFSET"]) * 512, p["path"]
        assert p["size"] == int(info["PART_ENTRY_SIZE"]) * 512, p["path"]
        if info["PART_ENTRY_TYPE"] not in ("0x5", "0xf", "0x85"):
            # The kernel's node for an extended partition is a 1 KiB stub; others are exact.
            assert p["size"] == getsize64(p["path"]), p["path"]
        assert p["fstype"] == info.get("TYPE"), p["path"]
        assert p["label"] == info.get("LABEL"), p["path"]
        assert p["uuid"] == info.get("UUID"), p["path"]
        assert p["parttype"] == info["PART_ENTRY_TYPE"], p["path"]
        assert p["partuuid"] == info["PART_ENTRY_UUID"], p["path"]
        assert p["partlabel"] == info.get("PART_ENTRY_NAME"), p["path"]
        assert p["mountpoint"] is None
    starts = [(p["start"], p["size"]) for p in disk["partitions"] if p["parttype"] != "0x5"]
    for (s1, n1), (s2, _) in zip(sorted(starts), sorted(starts)[1:], strict=False):
        assert s1 + n1 <= s2, "partitions overlap"


def make_gpt_disk(loop: Callable[..., str]) -> tuple[str, list[str]]:
    dev = loop(256 * MiB)
    parts = loopdev.partition(
        dev,
        "label: gpt\n"
        'size=64MiB, type=U, name="EFI system"\n'
        'size=64MiB, type=L, name="root"\n'
        f'size=64MiB, type={GPT_BASIC_DATA.upper()}, name="Basic data partition"\n'
        "size=32MiB, type=S\n",
    )
    loopdev.mkfs(parts[0], "vfat", "-F", "32", "-n", "ESP")
    loopdev.mkfs(parts[1], "ext4", "-L", "my  root")
    loopdev.mkfs(parts[2], "ntfs", "-L", "Windows")
    loopdev.mkfs(parts[3], "swap", "-L", "sw")
    return dev, parts


def make_mbr_disk(loop: Callable[..., str]) -> tuple[str, list[str]]:
    dev = loop(256 * MiB)
    parts = loopdev.partition(
        dev,
        "label: dos\n"
        f"{dev}p1 : start=2048, size=64MiB, type=c\n"
        f"{dev}p2 : size=120MiB, type=5\n"
        f"{dev}p5 : size=60MiB, type=83\n"
        f"{dev}p6 : size=40MiB, type=82\n"
        f"{dev}p3 : type=7\n",
    )
    assert parts == [f"{dev}p{n}" for n in (1, 2, 3, 5, 6)]
    loopdev.mkfs(f"{dev}p1", "vfat", "-F", "32", "-n", "STICK")
    loopdev.mkfs(f"{dev}p3", "ntfs", "-L", "data")
    loopdev.mkfs(f"{dev}p5", "ext4", "-L", "logical")
    loopdev.mkfs(f"{dev}p6", "swap")
    return dev, parts


def test_gpt_disk_is_reported_exactly(loop: Callable[..., str]) -> None:
    dev, parts = make_gpt_disk(loop)
    disk = recovery_disks_json()[dev]
    check_against_blkid(disk, parts)
    by_number = {p["number"]: p for p in disk["partitions"]}
    assert [by_number[n]["fstype"] for n in (1, 2, 3, 4)] == ["vfat", "ext4", "ntfs", "swap"]
    assert by_number[1]["label"] == "ESP" and by_number[1]["partlabel"] == "EFI system"
    assert by_number[2]["label"] == "my  root"
    assert by_number[3]["parttype"] == GPT_BASIC_DATA
    assert by_number[1]["start"] == 1 * MiB and by_number[1]["size"] == 64 * MiB
    assert disk["mounted"] is False and disk["boot_medium"] is False


def test_mbr_disk_with_logical_partitions_is_reported_exactly(loop: Callable[..., str]) -> None:
    dev, parts = make_mbr_disk(loop)
    disk = recovery_disks_json()[dev]
    check_against_blkid(disk, parts)
    by_number = {p["number"]: p for p in disk["partitions"]}
    assert disk["table"] == "dos"
    ext, logical = by_number[2], by_number[5]
    assert ext["parttype"] == "0x5" and ext["fstype"] is None and ext["size"] == 120 * MiB
    assert ext["start"] < logical["start"] < ext["start"] + ext["size"]
    assert (logical["fstype"], logical["label"]) == ("ext4", "logical")
    assert by_number[6]["fstype"] == "swap"
    assert by_number[1]["parttype"] == "0xc" and by_number[3]["fstype"] == "ntfs"


def test_sysfs_and_blkid_path_gives_the_same_answer(loop: Callable[..., str]) -> None:
    gpt, _ = make_gpt_disk(loop)
    mbr, _ = make_mbr_disk(loop)
    with_udev = recovery_disks_json()
    r = subprocess.run(
        [sys.executable, "-m", "recovery", "disks", "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "RECOVERY_NO_UDEV": "1"},
        timeout=60,
    )
    assert r.returncode == 0 and "Traceback" not in r.stderr
    without = {d["path"]: d for d in json.loads(r.stdout)["disks"]}
    for dev in (gpt, mbr):
        assert without[dev] == with_udev[dev]


def test_missing_udev_is_detected_and_said_once(
    loop: Callable[..., str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dev, parts = make_gpt_disk(loop)
    monkeypatch.delenv("RECOVERY_NO_UDEV", raising=False)
    monkeypatch.setattr(udev, "UDEV_CONTROL", tmp_path / "no-such-control")
    said: list[str] = []
    found = {d.path: d for d in list_disks(warn=said.append)}
    assert said == [NO_UDEV_WARNING]
    assert [p.path for p in found[dev].partitions] == parts
    assert found[dev].partitions[1].label == "my  root"


def test_no_unbacked_loop_devices_are_listed(loop: Callable[..., str], tmp_path: Path) -> None:
    with loopdev.loop_disk(tmp_path, 16 * MiB, "gone.img") as gone:
        pass

    def unbacked() -> set[str]:
        return {
            f"/dev/{p.name}"
            for p in Path("/sys/class/block").glob("loop*")
            if (p / "size").exists()
            and not (p / "partition").exists()
            and not (p / "loop" / "backing_file").exists()
        }

    before = unbacked()
    listed = recovery_disks_json()
    after = unbacked()  # other tests on this machine attach and detach loop devices meanwhile
    assert gone in before | after or gone in listed  # reused by another test meanwhile
    assert not (before & after & set(listed))
    for path, disk in listed.items():
        if disk["transport"] == "loop":
            assert disk["backing_file"], path
    assert not any(p.startswith(("/dev/zram", "/dev/ram")) for p in listed)


def test_mounted_partition_and_swap_in_use_are_shown(
    loop: Callable[..., str], tmp_path: Path
) -> None:
    dev, parts = make_gpt_disk(loop)
    mnt = tmp_path / "mnt point"
    mnt.mkdir()
    loopdev.run("mount", "-o", "ro", parts[1], str(mnt))
    try:
        loopdev.run("swapon", parts[3])
        try:
            disk = recovery_disks_json()[dev]
        finally:
            loopdev.run("swapoff", parts[3])
    finally:
        loopdev.run("umount", str(mnt))
    by_number = {p["number"]: p for p in disk["partitions"]}
    assert by_number[2]["mountpoint"] == str(mnt)
    assert by_number[4]["mountpoint"] == "[SWAP]"
    assert by_number[1]["mountpoint"] is None
    assert disk["mounted"] is True


def test_find_disk_and_partition(loop: Callable[..., str], tmp_path: Path) -> None:
    dev, parts = make_mbr_disk(loop)
    link = tmp_path / "link-to-disk"
    link.symlink_to(dev)
    assert find_disk(str(link)).path == dev
    disk, part = find_partition(parts[3])
    assert (disk.path, part.number, part.label) == (dev, 5, "logical")
    with pytest.raises(DeviceError, match=r"partition 1 of .*not a whole disk"):
        find_disk(parts[0])
    with pytest.raises(DeviceError, match="whole disk, not a partition"):
        find_partition(dev)
    regular = tmp_path / "file"
    regular.write_text("x")
    with pytest.raises(DeviceError, match="not a block device"):
        find_disk(str(regular))
    with pytest.raises(DeviceError, match="does not exist"):
        find_disk("/dev/recovery-no-such-disk")


def test_refresh_makes_udev_see_a_new_label(loop: Callable[..., str]) -> None:
    dev, parts = make_gpt_disk(loop)
    loopdev.run("e2label", parts[1], "renamed")  # no change event: udev's database is stale
    refresh(dev)
    (disk,) = [d for d in list_disks() if d.path == dev]
    assert disk.partitions[1].label == "renamed"


def _wait_for(
    events: queue.Queue[DiskEvent],
    action: str,
    path: str,
    until: Callable[[DiskEvent], bool] = lambda e: True,
) -> DiskEvent:
    """The first event of ``action`` on ``path`` that satisfies ``until`` (others are skipped:
    a table write gives several "changed" events as the kernel and udev catch up)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            event = events.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        if event.action == action and event.path == path and until(event):
            return event
    raise AssertionError(f"no '{action}' event for {path} within 20 s")


@pytest.mark.parametrize("use_udev", [True, False], ids=["udev", "kernel-events"])
def test_watcher_reports_loop_disk_added_and_removed(tmp_path: Path, use_udev: bool) -> None:
    events: queue.Queue[DiskEvent] = queue.Queue()
    errors: list[Exception] = []
    watcher = DiskWatcher(events.put, use_udev=use_udev, on_error=errors.append)
    watcher.start()
    try:
        with loopdev.loop_disk(tmp_path, 64 * MiB) as dev:
            added = _wait_for(events, "added", dev)
            assert added.disk.size == 64 * MiB and added.disk.transport == "loop"
            assert dev in {d.path for d in watcher.disks}
            loopdev.partition(dev, "label: gpt\nsize=16MiB, type=L\n")
            changed = _wait_for(events, "changed", dev, lambda e: e.disk.table == "gpt")
            assert [p.size for p in changed.disk.partitions] == [16 * MiB]
        removed = _wait_for(events, "removed", dev)
        assert removed.disk.path == dev
        assert (
            dev not in {d.path for d in watcher.disks}
            or Path(f"/sys/class/block/{Path(dev).name}/loop/backing_file").exists()
        )  # someone else's test may have attached it again meanwhile
    finally:
        watcher.stop()
    assert errors == []
