"""Pure logic of the TUI: the system-partition rule, sizes and times as shown, the throttled
progress adapter and rate meter, option parsing, and finding repositories in a directory."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from pathlib import Path

from recovery.devices.model import Disk, Partition
from recovery.engine.locations import Locations, find_repositories, is_repository
from recovery.tui.formatting import human_duration, human_size, short_date
from recovery.tui.progress import RateMeter, ThrottledProgress
from recovery.tui.screens.options import BackupOptions, parse_options
from recovery.tui.selection import (
    BASIC_DATA,
    BIOS_BOOT,
    ESP,
    LINUX_DATA,
    LINUX_HOME,
    LINUX_ROOT_X86_64,
    LINUX_SWAP,
    LINUX_XBOOTLDR,
    MSR,
    WINDOWS_RECOVERY,
    partition_roles,
    system_disk,
    system_partitions,
)
from tests.unit.tui_fakes import DISKS, NVME, SATA, STICK, T7, FrozenClock

MiB = 1024**2


def disk(path: str, *parts: tuple[str | None, str | None, str | None], **kw: object) -> Disk:
    """``parts``: (parttype, fstype, label) in disk order."""
    partitions = tuple(
        Partition(f"{path}{i}", i, i * 100 * MiB, 100 * MiB, fstype=fs, label=label, parttype=t)
        for i, (t, fs, label) in enumerate(parts, start=1)
    )
    return Disk(path=path, size=10 * 1024**3, table="gpt", partitions=partitions, **kw)  # type: ignore[arg-type]


def numbers(d: Disk) -> list[int]:
    return [p.number for p in system_partitions(d)]


# The system-partition rule ---------------------------------------------------------------------


def test_windows_gpt_layout_selects_esp_msr_windows_and_recovery_not_data() -> None:
    d = disk(
        "/dev/sda",
        (ESP, "vfat", None),
        (MSR, None, None),
        (BASIC_DATA, "ntfs", "Windows"),
        (WINDOWS_RECOVERY, "ntfs", None),
        (BASIC_DATA, "ntfs", "Data"),
    )
    assert numbers(d) == [1, 2, 3, 4]
    assert partition_roles(d)[5].name == "data"


def test_linux_layout_selects_esp_boot_root_not_swap_or_home() -> None:
    d = disk(
        "/dev/vdb",
        (ESP, "vfat", None),
        (LINUX_XBOOTLDR, "ext4", None),
        (LINUX_DATA, "ext4", None),
        (LINUX_SWAP, "swap", None),
        (LINUX_HOME, "ext4", "home"),
    )
    assert numbers(d) == [1, 2, 3]
    roles = partition_roles(d)
    assert (roles[2].name, roles[3].name, roles[4].name) == ("Linux /boot", "Linux root", "swap")


def test_linux_data_partition_labelled_home_is_not_root() -> None:
    d = disk(
        "/dev/vdb",
        (BIOS_BOOT, None, None),
        (LINUX_DATA, "ext4", "home"),
        (LINUX_DATA, "ext4", None),
    )
    assert numbers(d) == [1, 3]


def test_second_generic_linux_partition_is_data() -> None:
    d = disk("/dev/vdb", (LINUX_ROOT_X86_64, "ext4", None), (LINUX_DATA, "xfs", None))
    assert numbers(d) == [1]


def test_mbr_windows_with_system_reserved_selects_both_ntfs() -> None:
    d = disk(
        "/dev/sda", ("0x07", "ntfs", "System Reserved"), ("0x7", "ntfs", None), ("0x7", "ntfs", "D")
    )
    assert numbers(d) == [1, 2]
    assert partition_roles(d)[1].name == "Windows boot"


def test_mbr_linux_root_and_swap() -> None:
    d = disk("/dev/sda", ("0x83", "ext4", None), ("0x82", "swap", None))
    assert numbers(d) == [1]


def test_ntfs_on_a_non_windows_type_is_data() -> None:
    d = disk("/dev/sda", (LINUX_DATA, "ntfs", None))
    assert numbers(d) == []


def test_system_disk_prefers_internal_disk_with_an_os() -> None:
    assert system_disk(DISKS) is NVME
    # SATA's ext4 is labelled "data", T7 holds exFAT, the stick is the boot medium: no OS anywhere.
    assert system_disk([SATA, T7, STICK]) is None


def test_system_disk_none_without_an_os_and_never_the_boot_medium() -> None:
    linux_stick = replace(
        STICK, partitions=(Partition("/dev/sdb1", 1, MiB, MiB, fstype="ext4", parttype="0x83"),)
    )
    assert system_disk([linux_stick, T7]) is None


def test_system_disk_internal_beats_usb() -> None:
    usb_windows = replace(NVME, path="/dev/sdz", transport="usb")
    assert system_disk([usb_windows, NVME]) is NVME
    assert system_disk([usb_windows]) is usb_windows


# Formatting -------------------------------------------------------------------------------------


def test_human_size_and_duration() -> None:
    assert human_size(0) == "0 B"
    assert human_size(1023) == "1023 B"
    assert human_size(1536) == "1.50 KiB"
    assert human_size(500107862016) == "466 GiB"
    assert human_size(15 * 1024**3 + 1024**3 // 2) == "15.5 GiB"
    assert human_duration(0) == "0:00"
    assert human_duration(75) == "1:15"
    assert human_duration(3725) == "1:02:05"
    assert short_date("2024-05-01T10:20:30Z") == "2024-05-01 10:20"


# Progress ---------------------------------------------------------------------------------------


def test_throttled_progress_posts_at_most_max_rate_and_flushes_the_rest() -> None:
    clock = FrozenClock(0.0)
    posted = []
    progress = ThrottledProgress(posted.append, clock, max_rate=10)
    progress.step("backup p1", 1000)
    for _ in range(100):
        progress.advance(10)
        clock.now += 0.001  # 100 calls over 0.1 s
    assert len(posted) <= 3
    progress.flush()
    last = posted[-1]
    assert (last.step, last.step_done, last.step_total, last.done) == (
        "backup p1",
        1000,
        1000,
        1000,
    )
    n = len(posted)
    progress.flush()  # nothing pending: nothing posted
    assert len(posted) == n


def test_throttled_progress_carries_log_lines_and_step_counts() -> None:
    clock = FrozenClock(0.0)
    posted = []
    progress = ThrottledProgress(posted.append, clock, max_rate=10)
    progress.step("one", 10)
    progress.log("first")  # within the interval: held back
    progress.log("second")
    clock.now = 0.5
    progress.step("two", 20)
    progress.advance(5)
    progress.flush()
    logs = [line for s in posted for line in s.logs]
    assert logs == ["first", "second"]
    assert posted[-1].steps == 2
    assert (posted[-1].step_done, posted[-1].done) == (5, 5)


def test_throttled_progress_from_many_threads_counts_every_byte() -> None:
    posted = []
    progress = ThrottledProgress(posted.append, FrozenClock(), max_rate=10)
    progress.step("x", 8 * 1000)

    def work() -> None:
        for _ in range(1000):
            progress.advance(1)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    progress.flush()
    assert posted[-1].done == 8000


def test_rate_meter_rate_time_left_and_history() -> None:
    meter = RateMeter(window=5.0, bucket=1.0)
    assert meter.rate == 0.0
    assert meter.time_left(100) is None
    for second in range(11):
        meter.add(float(second), second * 100)
    assert meter.rate == 100.0
    assert meter.time_left(500) == 5.0
    assert list(meter.history) == [100.0] * 10
    meter.add(14.0, 1400)  # a 3 s gap at 100 B/s
    assert list(meter.history)[-3:] == [100.0, 100.0, 100.0]
    assert meter.elapsed(14.0) == 14.0


# Options ----------------------------------------------------------------------------------------


def test_parse_options() -> None:
    assert parse_options("", "", True) == BackupOptions(None, 3, True)
    assert parse_options(" before-update ", "19", False) == BackupOptions(
        "before-update", 19, False
    )
    assert isinstance(parse_options("a/b", "3", True), str)
    assert isinstance(parse_options(".hidden", "3", True), str)
    assert isinstance(parse_options("ok", "0", True), str)
    assert isinstance(parse_options("ok", "20", True), str)


# Locations --------------------------------------------------------------------------------------


def make_repo(path: Path) -> None:
    path.mkdir(parents=True)
    header = {"format": "recovery-repository", "version": 1, "id": "x", "created": "2024"}
    (path / "recovery-repo").write_text(json.dumps(header))


def test_find_repositories_two_levels_deep(tmp_path: Path) -> None:
    make_repo(tmp_path / "recovery-backups")
    make_repo(tmp_path / "old" / "laptop")
    make_repo(tmp_path / "a" / "b" / "too-deep")
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "recovery-repo").write_text('{"format": "something-else"}')
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "recovery-repo").write_text("{not json")
    found = find_repositories(tmp_path)
    assert found == [str(tmp_path / "old" / "laptop"), str(tmp_path / "recovery-backups")]
    assert is_repository(tmp_path / "recovery-backups")
    assert not is_repository(tmp_path / "fake")


def test_typed_directory_location(tmp_path: Path) -> None:
    make_repo(tmp_path / "repo")
    locs = Locations(mount_root=tmp_path / "mnt")
    loc = locs.directory(str(tmp_path / "repo"))
    assert loc.repositories == (str(tmp_path / "repo"),)
    assert loc.free and loc.free > 0
    missing = locs.directory(str(tmp_path / "new" / "folder"))
    assert missing.repositories == ()
    assert missing.free and missing.free > 0
