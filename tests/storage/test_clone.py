"""Disk clone and system clone on loop devices (issue 4, "Done when")."""

from __future__ import annotations

import json
from pathlib import Path

from tests import loopdev
from tests.storage.disks import (
    MiB,
    blkid,
    ext4_digest,
    fat_get,
    make_gpt_system_disk,
    mounted,
    run_recovery,
    sfdisk_dump,
)


def test_disk_clone_to_larger_disk(loop) -> None:  # type: ignore[no-untyped-def]
    src, parts = make_gpt_system_disk(loop)
    want = ext4_digest(parts[1])
    esp = fat_get(parts[0], "BOOTX64.EFI")
    swap_uuid = blkid(parts[2])["UUID"]
    dst = loop(1024 * MiB)
    r = run_recovery("clone", src, dst, "--yes", "--json")
    result = json.loads(r.stdout[r.stdout.index("{\n") :])
    assert result["ok"], result
    dparts = loopdev.partition_paths(dst)
    assert ext4_digest(dparts[1]) == want
    assert fat_get(dparts[0], "BOOTX64.EFI") == esp
    assert blkid(dparts[2])["UUID"] == swap_uuid
    assert int(loopdev.run("blockdev", "--getsize64", dparts[1]).stdout) > 800 * MiB
    assert "No problems found" in loopdev.run("sgdisk", "-v", dst).stdout
    loopdev.run("e2fsck", "-fn", dparts[1])
    # Identifiers kept: the clone boots in place of the source.
    src_ids = [ln.split("uuid=")[1].split(",")[0] for ln in sfdisk_dump(src) if "uuid=" in ln]
    assert all(i in "\n".join(sfdisk_dump(dst)) for i in src_ids)


def test_disk_clone_same_size_is_identical_table(loop) -> None:  # type: ignore[no-untyped-def]
    src, parts = make_gpt_system_disk(loop)
    dst = loop(512 * MiB)
    run_recovery("clone", src, dst, "--yes")
    assert sfdisk_dump(dst) == sfdisk_dump(src)
    assert ext4_digest(loopdev.partition_paths(dst)[1]) == ext4_digest(parts[1])


def test_system_clone_leaves_data_behind(loop) -> None:  # type: ignore[no-untyped-def]
    src = loop(600 * MiB)
    parts = loopdev.partition(
        src,
        "label: gpt\nsize=40MiB, type=uefi\nsize=300MiB, type=linux, name=root\n"
        "type=linux, name=data\n",
    )
    loopdev.mkfs(parts[0], "vfat", "-F", "32")
    loopdev.mkfs(parts[1], "ext4", "-L", "root")
    loopdev.mkfs(parts[2], "ext4", "-L", "data")
    from tests.storage.disks import fill_ext4

    fill_ext4(parts[1], real_mb=20, deleted_mb=10)  # writes /etc/os-release
    with mounted(parts[2]) as m:
        (m / "photos.txt").write_text("not system\n")
    loopdev.settle(src)
    want = ext4_digest(parts[1])
    dst = loop(600 * MiB)
    r = run_recovery("clone", "--system", src, dst, "--yes")
    assert "left behind" in r.stderr and "partition 3" in r.stderr
    dparts = loopdev.partition_paths(dst)
    assert len(dparts) == 2
    assert blkid(dparts[0])["TYPE"] == "vfat"
    assert ext4_digest(dparts[1]) == want
    # The root took the room the data partition had.
    assert int(loopdev.run("blockdev", "--getsize64", dparts[1]).stdout) > 500 * MiB


def test_clone_new_ids(loop) -> None:  # type: ignore[no-untyped-def]
    src, _ = make_gpt_system_disk(loop)
    dst = loop(512 * MiB)
    run_recovery("clone", "--new-ids", src, dst, "--yes")
    a, b = "\n".join(sfdisk_dump(src)), "\n".join(sfdisk_dump(dst))
    src_ids = [ln.split("uuid=")[1].split(",")[0] for ln in sfdisk_dump(src) if "uuid=" in ln]
    assert src_ids and not any(i in b for i in src_ids)
    assert a.split("label-id:")[1].split()[0] != b.split("label-id:")[1].split()[0]


def test_clone_refusals(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src, parts = make_gpt_system_disk(loop)
    r = run_recovery("clone", src, src, "--yes", check=False)
    assert r.returncode == 3 and "same disk" in r.stderr
    small = loop(100 * MiB)
    r = run_recovery("clone", src, small, "--yes", check=False)
    assert r.returncode == 3 and "too small" in r.stderr
    tgt = loop(512 * MiB)
    tparts = loopdev.partition(tgt, "label: gpt\ntype=linux\n")
    loopdev.mkfs(tparts[0], "ext4")
    with mounted(tparts[0]):
        r = run_recovery("clone", src, tgt, "--yes", check=False)
        assert r.returncode == 3 and "mounted" in r.stderr
    r = run_recovery("clone", parts[1], tgt, "--yes", check=False)
    assert r.returncode == 2 and "partition" in r.stderr
