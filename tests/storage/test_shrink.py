"""Restore and clone onto a smaller disk (issue 15, part 1; docs/SHRINK.md), on loop devices.

A Linux-style GPT disk (EFI FAT32 through mtools, ext4 root whose live files lie over the whole
partition: filled to the end, then every other filler deleted) is backed up, then restored and
cloned onto disks smaller than the source but larger than the data: the root partition shrinks,
resize2fs moves the blocks beyond the new end, and every identifier stays. A too-small target
is refused before writing, naming the smallest size that works, and that size then works. A
root file system that cannot shrink (xfs) is refused before writing, naming the smallest target.
A Windows-style GPT disk (ESP, MSR, NTFS C: with files beyond the new end, recovery partition;
built with tests/storage/test_windows.py's helpers) restores onto a smaller disk: ntfsresize
moves C:'s clusters, the recovery partition moves to the new end with its GUID.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import loopdev
from tests.storage.disks import (
    MiB,
    blkid,
    fat_get,
    fat_put,
    mounted,
    run_recovery,
    sfdisk_dump,
    tree_digest,
)

pytestmark = pytest.mark.skipif(
    not all(loopdev.have(t) for t in ("mcopy", "resize2fs", "mkfs.xfs", "fusermount3")),
    reason="needs mtools, e2fsprogs, xfsprogs and fuse3 (deps/debian-packages.txt)",
)

SOURCE_SIZE = 600 * MiB
FILLER = 4 * MiB
ESP_GUID = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"


def filler(index: int) -> bytes:
    """Every 4 KiB page different (a block moved to the wrong place changes the hash), yet
    compressible, so the image stays small."""
    return b"".join(
        f"filler {index} page {page}\n".encode().ljust(4096, b".") for page in range(FILLER // 4096)
    )


def fill_whole_partition(part: str) -> None:
    """Fillers until the file system is full, then every other one deleted: live files remain
    near the end of the partition, where a shrink must move them from."""
    with mounted(part) as m:
        (m / "etc").mkdir()
        (m / "etc" / "os-release").write_text('NAME="Test Linux"\nID=test\n')
        (m / "etc" / "fstab").write_text("UUID=whatever / ext4 defaults 0 1\n")
        index = 0
        while True:
            try:
                (m / f"filler{index:04d}").write_bytes(filler(index))
            except OSError:
                (m / f"filler{index:04d}").unlink(missing_ok=True)
                break
            index += 1
        for i in range(0, index, 2):
            (m / f"filler{i:04d}").unlink()
        os.sync()


def ext4_files(part: str) -> dict[str, str]:
    with mounted(part, readonly=True) as m:
        return tree_digest(m)


def ids(dev: str) -> list[str]:
    """The table with sizes and starts taken out: label id, GUIDs, types, names, attributes."""
    return [
        re.sub(r"(start|size)=\s*\d+,", "", line)
        for line in sfdisk_dump(dev)
        if not line.startswith("last-lba:")
    ]


def sha256_of(dev: str) -> str:
    h = hashlib.sha256()
    with open(dev, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


def size_in_refusal(text: str) -> int:
    found = re.search(r"smallest target that works has (\d+) bytes", text)
    assert found, text
    return int(found.group(1))


@dataclass
class LinuxDisk:
    dev: str
    parts: list[str]
    files: dict[str, str]
    boot: bytes
    repo: Path


@pytest.fixture(scope="module")
def linux_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LinuxDisk]:
    work = tmp_path_factory.mktemp("shrink-linux")
    with loopdev.loop_disk(work, SOURCE_SIZE, "linux.img") as dev:
        parts = loopdev.partition(
            dev,
            "label: gpt\n"
            'size=40MiB, type=uefi, name="EFI system partition"\n'
            'type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name="root"\n',
        )
        loopdev.mkfs(parts[0], "vfat", "-F", "32", "-n", "ESP")
        boot = os.urandom(300_000)
        fat_put(parts[0], "BOOTX64.EFI", boot)
        loopdev.mkfs(parts[1], "ext4", "-L", "root")
        fill_whole_partition(parts[1])
        loopdev.settle(dev)
        repo = work / "repo"
        run_recovery("backup", dev, "--to", str(repo), "--name", "linux")
        yield LinuxDisk(dev, parts, ext4_files(parts[1]), boot, repo)


def check_linux_copy(src: LinuxDisk, dst: str, out: str) -> None:
    assert "FAILED" not in out, out
    parts = loopdev.partition_paths(dst)
    assert ids(dst) == ids(src.dev), out
    loopdev.run("e2fsck", "-f", "-n", parts[1])
    assert ext4_files(parts[1]) == src.files
    assert fat_get(parts[0], "BOOTX64.EFI") == src.boot
    for a, b in zip(src.parts, parts, strict=True):
        assert blkid(a)["UUID"] == blkid(b)["UUID"]
    root_end = int(loopdev.run("blockdev", "--getsize64", parts[1]).stdout)
    assert root_end < int(loopdev.run("blockdev", "--getsize64", src.parts[1]).stdout)


def test_restore_onto_a_smaller_disk_shrinks_root(linux_disk: LinuxDisk, loop) -> None:  # type: ignore[no-untyped-def]
    src = linux_disk
    # Too small for the data: refused before writing, naming the smallest target.
    tiny = loop(300 * MiB)
    r = run_recovery("restore", f"{src.repo}::linux", tiny, "--yes", check=False)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "partition 2" in r.stderr and "too small" in r.stderr, r.stderr
    assert loopdev.run("cmp", "-n", str(MiB), tiny, "/dev/zero", check=False).returncode == 0
    smallest = size_in_refusal(r.stderr)
    assert 300 * MiB < smallest < SOURCE_SIZE
    # The smallest target named works.
    dst = loop(smallest)
    r = run_recovery("restore", f"{src.repo}::linux", dst, "--yes")
    out = r.stdout + r.stderr
    assert re.search(r"partition 2 \(ext4\).*shrunk from", out), out
    check_linux_copy(src, dst, out)


def test_clone_onto_a_smaller_disk_shrinks_root(linux_disk: LinuxDisk, loop) -> None:  # type: ignore[no-untyped-def]
    src = linux_disk
    before = sha256_of(src.dev)
    dst = loop(SOURCE_SIZE - 120 * MiB)
    r = run_recovery("clone", src.dev, dst, "--yes")
    out = r.stdout + r.stderr
    assert re.search(r"partition 2 \(ext4\).*shrunk from", out), out
    check_linux_copy(src, dst, out)
    assert sha256_of(src.dev) == before, "clone changed the source"


def test_system_clone_onto_a_smaller_disk(linux_disk: LinuxDisk, loop) -> None:  # type: ignore[no-untyped-def]
    src = linux_disk
    dst = loop(SOURCE_SIZE - 100 * MiB)
    r = run_recovery("clone", "--system", src.dev, dst, "--yes")
    check_linux_copy(src, dst, r.stdout + r.stderr)


def test_xfs_onto_a_too_small_disk_is_refused_with_the_smallest_size(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dev = loop(400 * MiB)
    parts = loopdev.partition(dev, "label: gpt\nsize=40MiB, type=uefi\ntype=linux, name=data\n")
    loopdev.mkfs(parts[0], "vfat", "-F", "32")
    loopdev.run("mkfs.xfs", "-q", "-f", parts[1])
    with mounted(parts[1]) as m:
        (m / "file").write_bytes(b"x" * MiB)
    loopdev.settle(dev)
    repo = tmp_path / "repo"
    run_recovery("backup", dev, "--to", str(repo), "--name", "x")
    small = loop(300 * MiB)
    before = sha256_of(small)
    for args in (("restore", f"{repo}::x", small), ("clone", dev, small)):
        r = run_recovery(*args, "--yes", check=False)
        assert r.returncode == 3, r.stdout + r.stderr
        assert "partition 2" in r.stderr and "xfs cannot be shrunk" in r.stderr, r.stderr
        assert sha256_of(small) == before
    # The smallest target named (every partition unchanged, and the GPT backup area) works.
    smallest = size_in_refusal(r.stderr)
    assert 398 * MiB < smallest <= 400 * MiB
    fits = loop(smallest)
    r = run_recovery("restore", f"{repo}::x", fits, "--yes")
    assert "FAILED" not in r.stdout + r.stderr


def test_windows_restore_onto_a_smaller_disk(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from recovery.filesystems.base import FileSource, open_filesystem
    from tests.storage import test_windows as win

    src = loop(win.GPT_SIZE)
    parts = win.make_gpt_windows_disk(src)
    # Files at the end of C: a filler takes the free space, files go after it, it goes.
    with win.ntfs_mounted(parts[2]) as m:
        free = os.statvfs(m).f_bavail * os.statvfs(m).f_frsize
        win.write_random(m / "filler.bin", free - 24 * MiB)
        tail = m / "Users" / "someone" / "Videos"
        tail.mkdir(parents=True)
        for i in range(8):
            win.write_random(tail / f"clip{i}.mp4", 2 * MiB)
        (m / "filler.bin").unlink()
    loopdev.settle(src)
    c_files = win.ntfs_digest(parts[2])
    winre_files = win.ntfs_digest(parts[3])
    repo = tmp_path / "repo"
    run_recovery("backup", src, "--to", str(repo), "--name", "win")

    dst = loop(win.GPT_SIZE - 100 * MiB)
    r = run_recovery("restore", f"{repo}::win", dst, "--yes")
    out = r.stdout + r.stderr
    assert "FAILED" not in out, out
    assert re.search(r"partition 3 \(ntfs\).*shrunk from 300.0 MiB", out), out
    new = loopdev.partition_paths(dst)
    new_c = win.size_of(new[2])
    assert new_c <= 200 * MiB
    # Some of C:'s data lay beyond its new end on the source: ntfsresize had to move it.
    fd = os.open(parts[2], os.O_RDONLY)
    try:
        fs = open_filesystem(FileSource(fd, 0, win.size_of(parts[2])), "ntfs")
        assert fs is not None
        assert max(e.start + e.length for e in fs.used_extents()) > new_c
    finally:
        os.close(fd)

    got = win.ntfs_digest(new[2])
    assert got.pop("pagefile.sys", None) is not None  # its contents are not stored
    c_files.pop("pagefile.sys")
    assert got == c_files
    assert win.ntfs_digest(new[3]) == winre_files
    win.ntfs_clean(new[2])
    win.ntfs_clean(new[3])
    assert ids(dst) == ids(src)  # disk GUID, partition GUIDs, MSR type, names, attributes
    assert blkid(new[2])["UUID"] == blkid(parts[2])["UUID"]
    # The recovery partition ends where the target's usable area does, with its GUID.
    table = win.table_of(dst)
    old_table = win.table_of(src)
    last_lba = json.loads(loopdev.run("sfdisk", "--json", dst).stdout)["partitiontable"]["lastlba"]
    assert table[4]["start"] + table[4]["size"] > last_lba - 2048
    assert table[4]["size"] == old_table[4]["size"]
    assert table[4]["uuid"] == old_table[4]["uuid"]
    for n in (2, 3):
        assert win.hidden_sectors(new[n]) == win.start_sector(new[n])
    assert fat_get(new[0], "bootmgfw.efi") == fat_get(parts[0], "bootmgfw.efi")


def test_hibernated_windows_is_not_shrunk(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Shrunk under a hibernated Windows, C: would be damaged when Windows resumes: refused
    before writing, saying how to get an image that can shrink."""
    from tests.storage import test_windows as win

    dev, part = win.single_partition_disk(loop, 96 * MiB)
    win.mkntfs(part, "Windows")
    with win.ntfs_mounted(part) as m:
        (m / "Windows").mkdir()
        (m / "hiberfil.sys").write_bytes(b"HIBR" + os.urandom(3 * MiB))
    loopdev.settle(dev)
    repo = tmp_path / "repo"
    run_recovery("backup", dev, "--to", str(repo), "--name", "hib")
    small = loop(64 * MiB)
    before = sha256_of(small)
    r = run_recovery("restore", f"{repo}::hib", small, "--yes", check=False)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "hibernated" in r.stderr and "shut it down fully" in r.stderr, r.stderr
    assert sha256_of(small) == before


def test_shrink_from_a_worker_thread_as_the_tui_runs_it(linux_disk: LinuxDisk, loop) -> None:  # type: ignore[no-untyped-def]
    """The TUI plans and runs in thread workers while its own threads run: the shrink's FUSE
    server is forked from such a process, and must neither hang nor take over its signals."""
    import signal
    import threading

    from recovery.engine import api
    from recovery.engine.progress import CancelToken, NullProgress

    src = linux_disk
    dst = loop(SOURCE_SIZE - 120 * MiB)
    busy = threading.Event()
    spinner = threading.Thread(target=lambda: busy.wait(600), daemon=True)
    spinner.start()
    handler = signal.getsignal(signal.SIGINT)
    outcome: list[object] = []

    def work() -> None:
        try:
            plan = api.restore_plan(str(src.repo), "linux", dst)
            outcome.append(api.restore_run(plan, NullProgress(), CancelToken()))
        except BaseException as e:  # reported below, in the test's thread
            outcome.append(e)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join(600)
    busy.set()
    assert not worker.is_alive(), "the restore hung"
    (result,) = outcome
    assert not isinstance(result, BaseException), result
    assert result.ok, result  # type: ignore[attr-defined]
    assert signal.getsignal(signal.SIGINT) is handler
    loopdev.settle(dst)
    check_linux_copy(src, dst, "\n".join(result.checks))  # type: ignore[attr-defined]


def shrink_mounts() -> list[str]:
    return [
        line for line in Path("/proc/mounts").read_text().splitlines() if "recovery-shrink" in line
    ]


def test_kill_during_shrink_leaves_no_view_and_the_rerun_works(linux_disk: LinuxDisk, loop) -> None:  # type: ignore[no-untyped-def]
    """kill -9 of the engine while resize2fs runs over the composed file: the FUSE server dies
    with it (its mount goes), and running the restore again gives a complete, clean disk."""
    import signal
    import subprocess
    import time

    from tests.storage.disks import recovery_cmd

    src = linux_disk
    dst = loop(SOURCE_SIZE - 120 * MiB)
    proc = subprocess.Popen(
        [*recovery_cmd(), "restore", f"{src.repo}::linux", dst, "--yes", "--json"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "shrinking ext4" in line:
            break
    else:
        raise AssertionError("".join(seen) + proc.stderr.read())  # type: ignore[union-attr]
    assert shrink_mounts(), "no view while shrinking"
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    deadline = time.monotonic() + 30
    while shrink_mounts() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not shrink_mounts(), "the view outlived the engine"
    r = run_recovery("restore", f"{src.repo}::linux", dst, "--yes")
    loopdev.settle(dst)
    check_linux_copy(src, dst, r.stdout + r.stderr)


def test_mbr_disk_with_a_logical_partition_after_root(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An MBR disk (boot code, disk signature, active root, an extended partition holding swap
    after it) restored onto a smaller disk: root shrinks, the extended partition and its logical
    swap move, and the boot code, signature, active flag and swap UUID stay."""
    dev = loop(400 * MiB)
    parts = loopdev.partition(
        dev,
        "label: dos\nlabel-id: 0x5eed1234\nsize=300MiB, type=83, bootable\ntype=5\ntype=82\n",
    )
    root, swap = parts[0], parts[-1]
    loopdev.mkfs(root, "ext4")
    loopdev.mkfs(swap, "swap", "-L", "swap0")
    fill_whole_partition(root)
    boot_code = os.urandom(440)
    with open(dev, "r+b") as f:
        f.write(boot_code)
    loopdev.settle(dev)
    files = ext4_files(root)
    repo = tmp_path / "repo"
    run_recovery("backup", dev, "--to", str(repo), "--name", "mbr")
    dst = loop(340 * MiB)
    r = run_recovery("restore", f"{repo}::mbr", dst, "--yes")
    out = r.stdout + r.stderr
    assert "FAILED" not in out, out
    assert re.search(r"partition 1 \(ext4\).*shrunk from 300.0 MiB", out), out
    new = loopdev.partition_paths(dst)
    with open(dst, "rb") as f:
        assert f.read(440) == boot_code
    assert ids(dst) == ids(dev)  # signature, types, active flag
    loopdev.run("e2fsck", "-f", "-n", new[0])
    assert ext4_files(new[0]) == files
    assert blkid(new[-1])["UUID"] == blkid(swap)["UUID"]
    table = json.loads(loopdev.run("sfdisk", "--json", dst).stdout)["partitiontable"]
    ends = [p["start"] + p["size"] for p in table["partitions"]]
    assert max(ends) <= 340 * MiB // 512
