"""Windows disks end to end through the CLI, on loop devices (issue 5, "Done when").

A GPT disk laid out as Windows Setup does (ESP, MSR, C:, recovery at the end) and an MBR/BIOS
disk (boot code, data after the MBR, active "System Reserved", C:) are filled through ntfs-3g
(FUSE) and mtools, backed up with ``recovery backup`` and restored with ``recovery restore`` to
a disk of the same size and to a larger one; files are compared through ntfs-3g, volumes with
``ntfsfix -n``, identifiers with sfdisk. Then the special cases: a hibernated Windows (warned,
source untouched), BitLocker (imaged sector by sector), damaged NTFS metadata (raw imaging with
a note, never a traceback), and the image size against ``partclone.ntfs | zstd -T0 -3``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from recovery.repository.store import Repository
from tests import loopdev
from tests.storage.disks import (
    MiB,
    blkid,
    fat_get,
    fat_put,
    run_recovery,
    sfdisk_dump,
    tree_digest,
)

pytestmark = pytest.mark.skipif(
    not all(
        loopdev.have(t)
        for t in ("mkfs.ntfs", "ntfs-3g", "ntfsinfo", "ntfsfix", "mcopy", "sgdisk", "zstd")
    ),
    reason="needs ntfs-3g, mtools, gdisk and zstd (deps/debian-packages.txt)",
)

ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
MSR = "E3C9E316-0B5C-4DB8-817D-F92DF00215AE"
BASIC_DATA = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
WINRE = "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC"
# What Windows Setup sets on its recovery partition: required (bit 0), no drive letter (bit 63).
WINRE_ATTRS = "RequiredPartition GUID:63"

DELETED_MB = 64
PAGEFILE = 6 * MiB
GPT_SIZE = 400 * MiB
GPT_LARGER = 600 * MiB


# --- building Windows-like volumes ---------------------------------------------------------------


@contextlib.contextmanager
def ntfs_mounted(part: str, readonly: bool = False) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="recovery-test-ntfs-"))
    loopdev.run("ntfs-3g", *(["-o", "ro"] if readonly else []), part, str(d))
    try:
        yield d
    finally:
        loopdev.run("umount", str(d))
        d.rmdir()


def start_sector(part: str) -> int:
    return int(Path(f"/sys/class/block/{Path(part).name}/start").read_text())


def size_of(part: str) -> int:
    return int(loopdev.run("blockdev", "--getsize64", part).stdout)


def mkntfs(part: str, label: str) -> None:
    # -p: the start sector goes into the boot sector's hidden-sectors field, as Windows writes
    # it (mkntfs cannot ask a loop partition for its geometry).
    loopdev.mkfs(part, "ntfs", "-L", label, "-p", str(start_sector(part)), "-H", "255", "-S", "63")


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, MiB)
            f.write(os.urandom(n))
            left -= n
        f.flush()
        os.fsync(f.fileno())


def fill_windows(part: str) -> None:
    """Random data written and deleted (it stays in free clusters), then a Windows-like tree."""
    with ntfs_mounted(part) as m:
        write_random(m / "junk.bin", DELETED_MB * MiB)
        (m / "junk.bin").unlink()
        config = m / "Windows" / "System32" / "config"
        config.mkdir(parents=True)
        (config / "SYSTEM").write_bytes(os.urandom(300_000) + bytes(700_000))
        etc = m / "Windows" / "System32" / "drivers" / "etc"
        etc.mkdir(parents=True)
        (etc / "hosts").write_text("127.0.0.1 localhost\r\n")
        (m / "Windows" / "win.ini").write_text("; for 16-bit app support\r\n[fonts]\r\n")
        shutil.copytree(
            "/usr/lib/python3/dist-packages",
            m / "Program Files" / "Python" / "Lib",
            symlinks=True,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        docs = m / "Users" / "someone" / "Documents"
        docs.mkdir(parents=True)
        (docs / "report.txt").write_text("quarterly figures\r\n" * 2000)
        write_random(m / "pagefile.sys", PAGEFILE)


def ntfs_digest(part: str) -> dict[str, str]:
    with ntfs_mounted(part, readonly=True) as m:
        return tree_digest(m)


def ntfs_clean(part: str) -> None:
    r = loopdev.run("ntfsfix", "-n", part, check=False)
    assert r.returncode == 0, f"ntfsfix -n {part}:\n{r.stdout}{r.stderr}"


def ntfs_volume_bytes(part: str) -> int:
    # -f: a volume ntfsresize grew is marked for a check by Windows, which ntfsinfo refuses.
    info = loopdev.run("ntfsinfo", "-f", "-m", part).stdout
    cluster = re.search(r"Cluster Size: (\d+)", info)
    clusters = re.search(r"Volume Size in Clusters: (\d+)", info)
    assert cluster and clusters, info
    return int(cluster.group(1)) * int(clusters.group(1))


def hidden_sectors(part: str, offset: int = 0) -> int:
    with open(part, "rb") as f:
        f.seek(offset)
        return int(struct.unpack_from("<I", f.read(512), 0x1C)[0])


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 * MiB):
            h.update(block)
    return h.hexdigest()


def read(dev: str, offset: int, length: int) -> bytes:
    with open(dev, "rb") as f:
        f.seek(offset)
        return f.read(length)


def table_of(dev: str) -> dict[int, dict[str, object]]:
    t = json.loads(loopdev.run("sfdisk", "--json", dev).stdout)["partitiontable"]
    out = {}
    for p in t["partitions"]:
        number = int(re.sub(r".*?(\d+)$", r"\1", p["node"]))
        out[number] = p
    return out


def manifest_of(repo: Path, image: str) -> dict[str, Any]:
    return Repository.open(repo).read_manifest(image)


def chunk_bytes(repo: Path) -> int:
    return sum(f.stat().st_size for f in (repo / "chunks").rglob("*") if f.is_file())


# --- the GPT Windows disk, built and backed up once for the tests that use it --------------------


@dataclass
class WindowsDisk:
    dev: str
    parts: list[str]
    c_files: dict[str, str]
    winre_files: dict[str, str]
    bootmgr: bytes
    c_volume: int
    repo: Path
    backup_output: str


def make_gpt_windows_disk(dev: str) -> list[str]:
    parts = loopdev.partition(
        dev,
        "label: gpt\n"
        'size=40MiB, type=uefi, name="EFI system partition"\n'
        f'size=16MiB, type={MSR}, name="Microsoft reserved partition"\n'
        f'size=300MiB, type={BASIC_DATA}, name="Basic data partition"\n'
        f'type={WINRE}, attrs="{WINRE_ATTRS}"\n',
    )
    loopdev.mkfs(parts[0], "vfat", "-F", "32", "-n", "SYSTEM")
    fat_put(parts[0], "bootmgfw.efi", os.urandom(200_000))
    mkntfs(parts[2], "Windows")
    fill_windows(parts[2])
    mkntfs(parts[3], "Recovery")
    with ntfs_mounted(parts[3]) as m:
        re_dir = m / "Recovery" / "WindowsRE"
        re_dir.mkdir(parents=True)
        (re_dir / "Winre.wim").write_bytes(os.urandom(MiB) + bytes(MiB))
        (re_dir / "ReAgent.xml").write_text("<?xml version='1.0'?><WindowsRE/>\r\n")
    loopdev.settle(dev)
    return parts


@pytest.fixture(scope="module")
def windows_gpt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WindowsDisk]:
    work = tmp_path_factory.mktemp("windows-gpt")
    with loopdev.loop_disk(work, GPT_SIZE, "windows.img") as dev:
        parts = make_gpt_windows_disk(dev)
        disk_before = sha256_of(dev)
        repo = work / "repo"
        r = run_recovery("backup", dev, "--to", str(repo), "--name", "win")
        assert sha256_of(dev) == disk_before, "backup changed the source disk"
        yield WindowsDisk(
            dev=dev,
            parts=parts,
            c_files=ntfs_digest(parts[2]),
            winre_files=ntfs_digest(parts[3]),
            bootmgr=fat_get(parts[0], "bootmgfw.efi"),
            c_volume=ntfs_volume_bytes(parts[2]),
            repo=repo,
            backup_output=r.stdout + r.stderr,
        )


def check_c_files(win: WindowsDisk, part: str) -> None:
    got = ntfs_digest(part)
    want = dict(win.c_files)
    # pagefile.sys is not stored (Windows recreates it): it must exist, its content may differ.
    assert got.pop("pagefile.sys", None) is not None, "pagefile.sys is missing"
    want.pop("pagefile.sys")
    assert got == want
    with ntfs_mounted(part, readonly=True) as m:
        assert (m / "pagefile.sys").stat().st_size == PAGEFILE


def test_gpt_windows_image_leaves_out_deleted_data_and_pagefile(windows_gpt: WindowsDisk) -> None:
    stored = chunk_bytes(windows_gpt.repo)
    c_size = size_of(windows_gpt.parts[2])
    # Deleted random data and pagefile.sys (random, incompressible) are not stored.
    assert stored < DELETED_MB * MiB // 2, stored
    assert stored < c_size // 10, (stored, c_size)
    out = windows_gpt.backup_output
    assert "Not stored: the contents of pagefile.sys" in out
    assert re.search(r"partition 2: unknown .*every byte", out), out  # MSR: no file system
    assert re.search(r"partition 3: ntfs Windows .*used blocks", out), out
    assert re.search(r"partition 4: ntfs Recovery .*used blocks", out), out


def test_gpt_windows_system_selection(windows_gpt: WindowsDisk) -> None:
    from recovery.engine.system import system_partitions

    # ESP, MSR, C: (it has a Windows folder) and the recovery partition: what Windows boots with.
    assert system_partitions([windows_gpt.dev]) == [1, 2, 3, 4]


def test_gpt_windows_restore_same_size(windows_gpt: WindowsDisk, loop) -> None:  # type: ignore[no-untyped-def]
    win = windows_gpt
    dst = loop(GPT_SIZE)
    r = run_recovery("restore", f"{win.repo}::win", dst, "--yes")
    assert "FAILED" not in r.stdout + r.stderr
    # Same table byte for byte: types (MSR), partition GUIDs, names, attributes, disk GUID.
    assert sfdisk_dump(dst) == sfdisk_dump(win.dev)
    assert read(dst, 0, MiB) == read(win.dev, 0, MiB)
    parts = loopdev.partition_paths(dst)
    check_c_files(win, parts[2])
    assert ntfs_digest(parts[3]) == win.winre_files
    ntfs_clean(parts[2])
    ntfs_clean(parts[3])
    assert fat_get(parts[0], "bootmgfw.efi") == win.bootmgr
    loopdev.run("fsck.vfat", "-n", parts[0])
    assert blkid(parts[2])["UUID"] == blkid(win.parts[2])["UUID"]
    for n in (2, 3):
        assert hidden_sectors(parts[n]) == start_sector(parts[n])
    assert ntfs_volume_bytes(parts[2]) == win.c_volume


def test_gpt_windows_restore_to_larger_disk(windows_gpt: WindowsDisk, loop) -> None:  # type: ignore[no-untyped-def]
    win = windows_gpt
    dst = loop(GPT_LARGER)
    r = run_recovery("restore", f"{win.repo}::win", dst, "--yes")
    out = r.stdout + r.stderr
    assert "FAILED" not in out, out
    assert "grown from 300.0 MiB" in out, out
    assert "ntfs grown to fill its partition" in out, out
    before, after = table_of(win.dev), table_of(dst)
    assert sorted(after) == [1, 2, 3, 4]
    for n in (1, 2, 3, 4):
        for key in ("type", "uuid", "name", "attrs"):
            assert after[n].get(key) == before[n].get(key), (n, key)
    assert after[2]["type"] == MSR
    assert after[4]["attrs"] == WINRE_ATTRS
    for n in (1, 2, 3):
        assert after[n]["start"] == before[n]["start"]
    for n in (1, 2, 4):
        assert after[n]["size"] == before[n]["size"]
    assert int(after[3]["size"]) > int(before[3]["size"]) + 150 * MiB // 512
    # The recovery partition keeps its distance to the end of the disk (the GPT backup area).
    assert GPT_LARGER // 512 - (int(after[4]["start"]) + int(after[4]["size"])) == (
        GPT_SIZE // 512 - (int(before[4]["start"]) + int(before[4]["size"]))
    )
    assert "No problems found" in loopdev.run("sgdisk", "-v", dst).stdout
    assert "label-id" in "\n".join(sfdisk_dump(dst))
    assert [ln for ln in sfdisk_dump(dst) if ln.startswith("label-id")] == [
        ln for ln in sfdisk_dump(win.dev) if ln.startswith("label-id")
    ]

    parts = loopdev.partition_paths(dst)
    # C: took the space: its NTFS spans the larger partition.
    assert ntfs_volume_bytes(parts[2]) > win.c_volume + 150 * MiB
    assert ntfs_volume_bytes(parts[2]) > size_of(parts[2]) - 2 * 4096
    check_c_files(win, parts[2])
    ntfs_clean(parts[2])

    # The recovery partition moved: its boot sectors (and backup) name the new start.
    winre = parts[3]
    new_start = start_sector(winre)
    assert new_start != int(before[4]["start"])
    assert hidden_sectors(winre) == new_start
    # The backup boot sector, right after the volume's last sector, says the same.
    total_sectors = struct.unpack_from("<Q", read(winre, 0, 512), 0x28)[0]
    assert hidden_sectors(winre, total_sectors * 512) == new_start
    ntfs_clean(winre)
    assert ntfs_digest(winre) == win.winre_files
    assert blkid(winre)["TYPE"] == "ntfs"
    assert fat_get(parts[0], "bootmgfw.efi") == win.bootmgr


def test_ntfs_image_no_larger_than_partclone(windows_gpt: WindowsDisk, tmp_path: Path) -> None:
    """Our stored bytes for C: against ``partclone.ntfs -c | zstd -T0 -3`` on the same volume."""
    if not loopdev.have("partclone.ntfs"):
        pytest.skip("partclone.ntfs (Debian package partclone) is not installed")
    part = windows_gpt.parts[2]
    pc = subprocess.run(
        f"partclone.ntfs -c -s {part} -o - 2>/dev/null | zstd -T0 -3 -q -c | wc -c",
        shell=True,
        capture_output=True,
        text=True,
        check=True,
    )
    theirs = int(pc.stdout)
    ours = {}
    for what, extra in (("default", []), ("keep-system-files", ["--keep-system-files"])):
        repo = tmp_path / what
        run_recovery("backup", part, "--to", str(repo), *extra)
        ours[what] = chunk_bytes(repo)
    print(f"\nC: partclone.ntfs|zstd -3: {theirs} bytes; ours: {ours}")
    # partclone stores pagefile.sys, so the fair comparison keeps it too.
    assert ours["keep-system-files"] <= theirs * 105 // 100, (ours, theirs)
    assert ours["default"] <= ours["keep-system-files"] - PAGEFILE * 9 // 10, ours


# --- MBR / BIOS ---------------------------------------------------------------------------------


def test_mbr_windows_disk_restores_boot_code_gap_and_active_flag(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dev = loop(300 * MiB)
    parts = loopdev.partition(
        dev,
        "label: dos\nlabel-id: 0x9a3c71e2\nstart=2048, size=50MiB, type=7, bootable\ntype=7\n",
    )
    boot_code = os.urandom(440)
    gap = os.urandom(2047 * 512)
    with open(dev, "r+b") as f:
        f.write(boot_code)
        f.seek(512)
        f.write(gap)
    mkntfs(parts[0], "System Reserved")
    with ntfs_mounted(parts[0]) as m:
        (m / "bootmgr").write_bytes(os.urandom(400_000))
        (m / "Boot").mkdir()
        (m / "Boot" / "BCD").write_bytes(os.urandom(30_000))
    mkntfs(parts[1], "Windows")
    with ntfs_mounted(parts[1]) as m:
        (m / "Windows" / "System32").mkdir(parents=True)
        (m / "Windows" / "System32" / "ntoskrnl.exe").write_bytes(os.urandom(2 * MiB))
        shutil.copytree("/usr/lib/python3/dist-packages/pygments", m / "Users" / "pygments")
    loopdev.settle(dev)
    want = [ntfs_digest(p) for p in parts]
    repo = tmp_path / "repo"
    run_recovery("backup", dev, "--to", str(repo), "--name", "mbr")

    for size in (300 * MiB, 500 * MiB):
        dst = loop(size)
        r = run_recovery("restore", f"{repo}::mbr", dst, "--yes")
        assert "FAILED" not in r.stdout + r.stderr
        assert read(dst, 0, 440) == boot_code
        assert read(dst, 510, 2) == b"\x55\xaa"
        assert read(dst, 512, len(gap)) == gap
        dump = sfdisk_dump(dst)
        assert "label-id: 0x9a3c71e2" in dump
        assert read(dst, 440, 4) == struct.pack("<I", 0x9A3C71E2)  # the disk signature
        lines = [ln for ln in dump if ln.startswith("DEVp")]
        assert "bootable" in lines[0] and "bootable" not in lines[1]
        assert all("type=7" in ln for ln in lines)
        dparts = loopdev.partition_paths(dst)
        assert [ntfs_digest(p) for p in dparts] == want
        for p in dparts:
            ntfs_clean(p)
            assert hidden_sectors(p) == start_sector(p)
        if size == 300 * MiB:
            assert dump == sfdisk_dump(dev)
        else:
            assert ntfs_volume_bytes(dparts[1]) > 400 * MiB


# --- hibernation, BitLocker, damage -------------------------------------------------------------


def single_partition_disk(loop, size: int = 64 * MiB) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    dev = loop(size)
    (part,) = loopdev.partition(dev, f"label: gpt\nstart=2048, type={BASIC_DATA}\n")
    return dev, part


def test_hibernated_windows_is_warned_about_and_left_untouched(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dev, part = single_partition_disk(loop)
    mkntfs(part, "Windows")
    hiber = b"HIBR" + os.urandom(3 * MiB)
    with ntfs_mounted(part) as m:
        (m / "Windows").mkdir()
        explorer = os.urandom(500_000)
        (m / "Windows" / "explorer.exe").write_bytes(explorer)
        (m / "hiberfil.sys").write_bytes(hiber)
    loopdev.settle(dev)
    before = sha256_of(part)
    repo = tmp_path / "repo"
    r = run_recovery("backup", dev, "--to", str(repo), "--name", "hib")
    assert sha256_of(part) == before, "the backup changed a hibernated volume"
    out = r.stdout
    warning = out.index("hibernated or was shut down with Fast Startup")
    # The warning comes with the plan, before the imaging starts and ends.
    assert warning < out.index("Saved image"), out
    assert "shut it down fully" in out
    # A hibernated session is stored whole, so the restored disk can resume it; on a larger
    # disk the volume keeps its size (resized under a hibernated Windows, it would be damaged
    # when Windows resumes) and the restore says why.
    dst = loop(128 * MiB)
    rr = run_recovery("restore", f"{repo}::hib", dst, "--yes")
    out = rr.stdout + rr.stderr
    assert "ntfs not grown, because Windows on it is hibernated" in out, out
    assert "FAILED" not in out, out
    (dpart,) = loopdev.partition_paths(dst)
    assert size_of(dpart) > 100 * MiB
    assert ntfs_volume_bytes(dpart) == ntfs_volume_bytes(part)
    ntfs_clean(dpart)
    with ntfs_mounted(dpart, readonly=True) as m:
        assert (m / "hiberfil.sys").read_bytes() == hiber
        assert (m / "Windows" / "explorer.exe").read_bytes() == explorer


def bitlocker_header(metadata_offset: int) -> bytes:
    """A BitLocker (Windows 7 and later) volume header: jump, "-FVE-FS-" OEM, and at byte 176
    the offset of the FVE metadata block. libblkid names it BitLocker only when that block
    starts with "-FVE-FS-" too (util-linux libblkid/src/superblocks/bitlocker.c)."""
    boot = bytearray(os.urandom(512))
    boot[0:11] = b"\xeb\x58\x90-FVE-FS-"
    struct.pack_into("<H", boot, 11, 512)
    struct.pack_into("<Q", boot, 176, metadata_offset)
    boot[510:512] = b"\x55\xaa"
    return bytes(boot)


@pytest.mark.parametrize("metadata", ["intact", "unreadable"])
def test_bitlocker_volume_is_imaged_sector_by_sector(loop, tmp_path: Path, metadata: str) -> None:  # type: ignore[no-untyped-def]
    """Intact: blkid says BitLocker. Unreadable metadata block: blkid says nothing, the volume
    header alone must still be recognised (and not be taken for NTFS or FAT)."""
    dev, part = single_partition_disk(loop, 40 * MiB)
    size = size_of(part)
    meta = 2 * MiB
    with open(part, "r+b") as f:
        f.write(bitlocker_header(meta))
        f.write(os.urandom(3 * MiB - 512))  # encrypted data
        if metadata == "intact":
            f.seek(meta)
            f.write(b"-FVE-FS-" + struct.pack("<HH", 64, 2))
        f.seek(20 * MiB + 4096)
        f.write(os.urandom(5 * MiB))  # more of it, not aligned to the image's cells
        f.seek(size - 4096)
        f.write(os.urandom(4096))
    loopdev.settle(dev)
    assert blkid(part).get("TYPE") == ("BitLocker" if metadata == "intact" else None)
    content = read(part, 0, size)

    repo = tmp_path / "repo"
    r = run_recovery("backup", dev, "--to", str(repo), "--name", "bl", "--json")
    cell = manifest_of(repo, "bl")["cell_size"]
    nonzero = sum(
        len(content[i : i + cell]) for i in range(0, size, cell) if any(content[i : i + cell])
    )
    result = json.loads(r.stdout[r.stdout.index('{\n "event": "result"') :])
    notes = " ".join(result["notes"])
    assert "BitLocker" in notes and "sector by sector" in notes, notes
    assert "without the key" in notes, notes
    (stream,) = [s for s in manifest_of(repo, "bl")["streams"] if s["id"] == "p1"]
    assert stream["method"] == "raw"
    assert stream["data_bytes"] == nonzero  # every non-zero cell stored, zero cells skipped

    dst = loop(40 * MiB)
    run_recovery("restore", f"{repo}::bl", dst, "--yes")
    (dpart,) = loopdev.partition_paths(dst)
    assert read(dpart, 0, size) == content


def corrupt(part: str, offset: int, data: bytes) -> None:
    with open(part, "r+b") as f:
        f.seek(offset)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def test_damaged_ntfs_is_imaged_raw_with_a_note(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Fuzzed boot sector fields and MFT records: a clear note, raw imaging, no traceback."""
    dev, part = single_partition_disk(loop, 32 * MiB)
    mkntfs(part, "Damaged")
    with ntfs_mounted(part) as m:
        (m / "file.bin").write_bytes(os.urandom(200_000))
    pristine = read(part, 0, size_of(part))
    boot = pristine[:512]
    cluster = struct.unpack_from("<B", boot, 0x0D)[0] * 512
    mft = struct.unpack_from("<Q", boot, 0x30)[0] * cluster
    rng = random.Random(5)

    cases: list[tuple[str, list[tuple[int, bytes]], str]] = [
        ("sectors per cluster", [(0x0D, b"\x03")], "sectors-per-cluster"),
        ("MFT outside the volume", [(0x30, struct.pack("<Q", 1 << 40))], "outside the volume"),
        ("volume larger than partition", [(0x28, struct.pack("<Q", 1 << 33))], "partition holds"),
        ("MFT record size", [(0x40, b"\x45")], "MFT record"),
        ("$MFT record magic", [(mft, b"XXXX")], "MFT record 0"),
        ("$Bitmap record torn", [(mft + 6 * 1024 + 510, b"\x12\x34")], "MFT record 6"),
    ]
    for i in range(6):  # random bytes over the system records $MFT..$Bitmap
        offset = mft + rng.randrange(0, 7 * 1024 - 64)
        cases.append((f"random bytes {i}", [(offset, rng.randbytes(48))], ""))

    for what, patches, expect in cases:
        corrupt(part, 0, pristine[: 1 * MiB])
        for offset, data in patches:
            corrupt(part, offset, data)
        loopdev.settle(dev)
        repo = tmp_path / f"repo-{len(list(tmp_path.iterdir()))}"
        r = run_recovery("backup", part, "--to", str(repo), "--json", check=False)
        out = r.stdout + r.stderr
        assert "Traceback" not in out, (what, out)
        assert r.returncode == 0, (what, out)
        result = json.loads(r.stdout[r.stdout.index('{\n "event": "result"') :])
        manifest = manifest_of(repo, result["image"]["name"])
        (stream,) = [s for s in manifest["streams"] if s["id"] == "p1"]
        if stream["method"] == "raw":
            notes = " ".join(result["notes"])
            assert "NTFS metadata is damaged" in notes, (what, notes)
            assert expect in notes, (what, notes)
            assert "imaged every byte" in notes, (what, notes)
        else:
            # Random bytes the reader does not depend on: a normal used-blocks image.
            assert not expect, (what, stream)
    corrupt(part, 0, pristine[: 1 * MiB])


# --- system selection and growth on Windows layouts ------------------------------------------


def write_bitlocker_volume(part: str) -> None:
    with open(part, "r+b") as f:
        f.write(bitlocker_header(MiB))
        f.write(os.urandom(MiB - 512))
        f.write(b"-FVE-FS-" + struct.pack("<HH", 64, 2))


def test_system_selection_keeps_mbr_system_reserved(loop) -> None:  # type: ignore[no-untyped-def]
    from recovery.engine.system import system_partitions

    dev = loop(80 * MiB)
    parts = loopdev.partition(dev, "label: dos\nstart=2048, size=30MiB, type=7, bootable\ntype=7\n")
    mkntfs(parts[0], "System Reserved")
    with ntfs_mounted(parts[0]) as m:
        (m / "bootmgr").write_bytes(os.urandom(50_000))
        (m / "Boot").mkdir()
        (m / "Boot" / "BCD").write_bytes(os.urandom(8192))
    mkntfs(parts[1], "Windows")
    with ntfs_mounted(parts[1]) as m:
        (m / "Windows").mkdir()
    loopdev.settle(dev)
    assert system_partitions([dev]) == [1, 2]


def bitlocker_windows_disk(loop) -> str:  # type: ignore[no-untyped-def]
    dev = loop(160 * MiB)
    parts = loopdev.partition(
        dev,
        "label: gpt\n"
        'size=34MiB, type=uefi, name="EFI system partition"\n'
        f'size=16MiB, type={MSR}, name="Microsoft reserved partition"\n'
        f'size=80MiB, type={BASIC_DATA}, name="Basic data partition"\n'
        f'type={WINRE}, attrs="{WINRE_ATTRS}"\n',
    )
    loopdev.mkfs(parts[0], "vfat", "-F", "32", "-n", "SYSTEM")
    write_bitlocker_volume(parts[2])
    mkntfs(parts[3], "Recovery")
    loopdev.settle(dev)
    assert blkid(parts[2]).get("TYPE") == "BitLocker"
    return dev


def test_system_selection_keeps_bitlocker_windows_partition(loop) -> None:  # type: ignore[no-untyped-def]
    from recovery.engine.system import system_partitions

    dev = bitlocker_windows_disk(loop)
    assert system_partitions([dev]) == [1, 2, 3, 4]


def test_bitlocker_c_on_larger_disk_does_not_grow_the_recovery_partition(
    loop, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    dev = bitlocker_windows_disk(loop)
    repo = tmp_path / "repo"
    run_recovery("backup", dev, "--to", str(repo), "--name", "bl")
    dst = loop(320 * MiB)
    run_recovery("restore", f"{repo}::bl", dst, "--yes")
    before, after = table_of(dev), table_of(dst)
    assert after[3]["size"] == before[3]["size"]
    assert after[4]["size"] == before[4]["size"]
