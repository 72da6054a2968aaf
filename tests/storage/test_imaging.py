"""Backup, verify, restore, images, remove on real loop devices (issue 3, "Done when")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests import loopdev
from tests.storage.disks import (
    MiB,
    blkid,
    ext4_digest,
    fat_get,
    make_gpt_system_disk,
    mounted,
    recovery_cmd,
    run_recovery,
    sfdisk_dump,
)


def repo_size(repo: Path) -> int:
    return sum(f.stat().st_size for f in (repo / "chunks").rglob("*") if f.is_file())


def read(dev: str, offset: int, length: int) -> bytes:
    with open(dev, "rb") as f:
        f.seek(offset)
        return f.read(length)


def test_gpt_disk_round_trip_same_size_and_larger(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src, parts = make_gpt_system_disk(loop)
    repo = tmp_path / "repo"
    want_files = ext4_digest(parts[1])
    esp_file = fat_get(parts[0], "BOOTX64.EFI")
    swap_id = blkid(parts[2])

    r = run_recovery("backup", src, "--to", str(repo), "--name", "first", "--json")
    result = json.loads(r.stdout[r.stdout.index("{\n") :])
    assert result["image"]["name"] == "first"
    stored = repo_size(repo)
    # Used blocks only: the deleted random data (30 MiB) is not stored.
    assert stored < 60 * MiB, stored

    v = run_recovery("verify", f"{repo}::first")
    assert "intact" in v.stdout
    listing = json.loads(run_recovery("images", str(repo), "--json").stdout)
    assert [i["name"] for i in listing["images"]] == ["first"]
    assert listing["images"][0]["status"] == "verified"

    # Same size: same table byte for byte, same files, same identifiers.
    same = loop(512 * MiB)
    run_recovery("restore", f"{repo}::first", same, "--yes")
    assert sfdisk_dump(same) == sfdisk_dump(src)
    assert read(same, 0, 1 * MiB) == read(src, 0, 1 * MiB)
    sparts = loopdev.partition_paths(same)
    assert ext4_digest(sparts[1]) == want_files
    assert fat_get(sparts[0], "BOOTX64.EFI") == esp_file
    assert blkid(sparts[2])["UUID"] == swap_id["UUID"]
    assert blkid(sparts[2])["LABEL"] == "swap0"
    loopdev.run("e2fsck", "-fn", sparts[1])
    loopdev.run("fsck.vfat", "-n", sparts[0])

    # Larger: root and its file system grow, swap moves to the end, GPT valid, ids kept.
    big = loop(1024 * MiB)
    r = run_recovery("restore", f"{repo}::first", big, "--yes")
    assert "grown" in r.stderr + r.stdout
    bparts = loopdev.partition_paths(big)
    dump = "\n".join(sfdisk_dump(big))
    for line in sfdisk_dump(src):
        if "uuid=" in line:
            uuid = line.split("uuid=")[1].split(",")[0]
            assert uuid in dump
    assert "last-lba: 2097118" in dump
    v = loopdev.run("sgdisk", "-v", big)
    assert "No problems found" in v.stdout
    root_size = int(loopdev.run("blockdev", "--getsize64", bparts[1]).stdout)
    assert root_size > 800 * MiB
    dumpe = loopdev.run("dumpe2fs", "-h", bparts[1]).stdout
    block_count = int(
        next(ln for ln in dumpe.splitlines() if ln.startswith("Block count:")).split()[-1]
    )
    block_size = int(
        next(ln for ln in dumpe.splitlines() if ln.startswith("Block size:")).split()[-1]
    )
    assert block_count * block_size == root_size
    swap_start = int(Path(f"/sys/class/block/{Path(bparts[2]).name}/start").read_text()) * 512
    swap_size = int(loopdev.run("blockdev", "--getsize64", bparts[2]).stdout)
    assert (
        swap_start + swap_size == 1024 * MiB - 33 * 512 - (1024 * MiB - 33 * 512) % MiB
        or swap_start + swap_size <= 1024 * MiB - 33 * 512
    )
    assert ext4_digest(bparts[1]) == want_files
    assert blkid(bparts[2])["UUID"] == swap_id["UUID"]
    loopdev.run("e2fsck", "-fn", bparts[1])


def test_second_backup_of_unchanged_disk_adds_under_one_percent(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src, _ = make_gpt_system_disk(loop)
    repo = tmp_path / "repo"
    run_recovery("backup", src, "--to", str(repo), "--name", "a")
    before = repo_size(repo)
    r = run_recovery("backup", src, "--to", str(repo), "--name", "b", "--json")
    after = repo_size(repo)
    assert after - before < before // 100, (before, after)
    names = [
        i["name"] for i in json.loads(run_recovery("images", str(repo), "--json").stdout)["images"]
    ]
    assert names == ["a", "b"]
    # Removing one keeps the other whole; removing both frees everything.
    run_recovery("remove", f"{repo}::a", "--yes")
    run_recovery("verify", f"{repo}::b")
    run_recovery("remove", f"{repo}::b", "--yes")
    assert repo_size(repo) == 0
    assert r.returncode == 0


def mbr_disk_with_boot_code(loop):  # type: ignore[no-untyped-def]
    dev = loop(256 * MiB)
    parts = loopdev.partition(
        dev,
        "label: dos\nlabel-id: 0x5eedbeef\n"
        "size=64MiB, type=83, bootable\n"
        "type=5\n"
        "size=60MiB, type=83\n"
        "type=82\n",
    )
    boot = os.urandom(440)
    gap = os.urandom(2047 * 512)
    with open(dev, "r+b") as f:
        f.write(boot)
        f.seek(512)
        f.write(gap)
    nodes = {Path(p).name[-1]: p for p in parts}
    loopdev.mkfs(nodes["1"], "ext4", "-L", "boot")
    loopdev.mkfs(nodes["5"], "ext4", "-L", "data")
    loopdev.mkfs(nodes["6"], "swap")
    with mounted(nodes["5"]) as m:
        (m / "hello.txt").write_text("hello from a logical partition\n")
    loopdev.settle(dev)
    return dev, boot, gap


def test_mbr_boot_code_and_gap_restored_byte_for_byte(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src, boot, gap = mbr_disk_with_boot_code(loop)
    repo = tmp_path / "repo"
    run_recovery("backup", src, "--to", str(repo), "--name", "mbr")
    for size in (256 * MiB, 512 * MiB):
        dst = loop(size)
        run_recovery("restore", f"{repo}::mbr", dst, "--yes")
        assert read(dst, 0, 440) == boot
        assert read(dst, 512, len(gap)) == gap
        dump = sfdisk_dump(dst)
        assert "label-id: 0x5eedbeef" in dump
        assert any("bootable" in ln for ln in dump if ln.startswith("DEVp1 "))
        nodes = {Path(p).name[-1]: p for p in loopdev.partition_paths(dst)}
        with mounted(nodes["5"], readonly=True) as m:
            assert (m / "hello.txt").read_text() == "hello from a logical partition\n"
        if size == 256 * MiB:
            assert dump == sfdisk_dump(src)


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x55]))


def test_tampered_chunk_is_reported_and_stops_restore(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src, _ = make_gpt_system_disk(loop)
    repo = tmp_path / "repo"
    run_recovery("backup", src, "--to", str(repo), "--name", "t")
    chunks = sorted(
        (repo / "chunks").rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else 0
    )
    victim = chunks[-1]
    flip_byte(victim, victim.stat().st_size // 2)
    v = run_recovery("verify", f"{repo}::t", check=False)
    assert v.returncode == 7
    assert victim.name in v.stdout
    assert "bytes" in v.stdout  # names the byte range
    dst = loop(512 * MiB)
    r = run_recovery("restore", f"{repo}::t", dst, "--yes", check=False)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert victim.name in last and "incomplete" in last


def test_missing_chunk_stops_restore_before_writing(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src, _ = make_gpt_system_disk(loop)
    repo = tmp_path / "repo"
    run_recovery("backup", src, "--to", str(repo), "--name", "t")
    victim = max(
        (p for p in (repo / "chunks").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size
    )
    victim.unlink()
    dst = loop(512 * MiB)
    r = run_recovery("restore", f"{repo}::t", dst, "--yes", check=False)
    assert r.returncode == 7
    assert "nothing was written" in r.stderr
    assert read(dst, 0, 4 * MiB) == bytes(4 * MiB)


def test_tampered_manifest_and_newer_version(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src, _ = make_gpt_system_disk(loop)
    repo = tmp_path / "repo"
    run_recovery("backup", src, "--to", str(repo), "--name", "m")
    manifest = repo / "images" / "m.image"
    original = manifest.read_bytes()
    flip_byte(manifest, 40)
    v = run_recovery("verify", f"{repo}::m", check=False)
    assert v.returncode == 7 and "manifest is damaged" in v.stderr
    dst = loop(512 * MiB)
    r = run_recovery("restore", f"{repo}::m", dst, "--yes", check=False)
    assert r.returncode == 7 and read(dst, 0, MiB) == bytes(MiB)
    # A manifest from a newer format version (valid hash) is refused with a clear message.
    from recovery.repository.store import MANIFEST_HEADER, hash_bytes

    body = original[MANIFEST_HEADER.size : -32]
    head = MANIFEST_HEADER.pack(b"RIMG", 3, 0, len(body))  # 2 is a file image
    manifest.write_bytes(head + body + hash_bytes(head + body))
    r = run_recovery("restore", f"{repo}::m", dst, "--yes", check=False)
    assert r.returncode == 6 and "newer recovery" in r.stderr


def test_kill_during_backup_leaves_repository_valid(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src, _ = make_gpt_system_disk(loop)
    repo = tmp_path / "repo"
    run_recovery("backup", src, "--to", str(repo), "--name", "before")
    # A raw partition of random data takes long enough to be killed midway.
    big = loop(700 * MiB)
    bparts = loopdev.partition(big, "label: gpt\ntype=linux\n")
    with open(bparts[0], "r+b") as f:
        for _ in range(600):
            f.write(os.urandom(MiB))
    for delay in (0.3, 1.5):
        p = subprocess.Popen(
            [*recovery_cmd(), "backup", big, "--to", str(repo), "--name", "killed", "--level", "9"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.wait()
        names = [
            i["name"]
            for i in json.loads(run_recovery("images", str(repo), "--json").stdout)["images"]
        ]
        assert names == ["before"]
        run_recovery("verify", f"{repo}::before")
    run_recovery("backup", big, "--to", str(repo), "--name", "killed", "--level", "1")
    run_recovery("verify", f"{repo}::killed")


def test_safety_refusals(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src, parts = make_gpt_system_disk(loop)
    repo = tmp_path / "repo"
    run_recovery("backup", src, "--to", str(repo), "--name", "s")
    # Too small: refused before writing.
    small = loop(200 * MiB)
    r = run_recovery("restore", f"{repo}::s", small, "--yes", check=False)
    assert r.returncode == 3 and "too small" in r.stderr and read(small, 0, MiB) == bytes(MiB)
    # A mounted partition on the target.
    target = loop(512 * MiB)
    tparts = loopdev.partition(target, "label: gpt\ntype=linux\n")
    loopdev.mkfs(tparts[0], "ext4")
    with mounted(tparts[0]) as m:
        r = run_recovery("restore", f"{repo}::s", target, "--yes", check=False)
        assert r.returncode == 3 and "mounted" in r.stderr
        # The disk holding the backup location.
        inner = m / "repo"
        run_recovery("backup", parts[1], "--to", str(inner), "--name", "x")
        r = run_recovery("restore", f"{inner}::x", target, "--yes", check=False)
        assert r.returncode == 3
    # No terminal and no --yes: refuse.
    r = run_recovery("restore", f"{repo}::s", target, check=False, stdin=subprocess.DEVNULL)
    assert r.returncode == 3 and "--yes" in r.stderr
    # A partition as target.
    r = run_recovery("restore", f"{repo}::s", tparts[0], "--yes", check=False)
    assert r.returncode == 2 and "whole disk" in r.stderr
    # Backing up into the disk being backed up.
    with mounted(parts[1]) as m:
        r = run_recovery("backup", src, "--to", str(m / "r"), check=False)
        assert r.returncode == 2 and "disk being backed up" in r.stderr


def test_restore_chosen_partitions(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src, parts = make_gpt_system_disk(loop)
    repo = tmp_path / "repo"
    run_recovery("backup", src, "--to", str(repo), "--name", "p")
    want = ext4_digest(parts[1])
    dst = loop(512 * MiB)
    loopdev.partition(dst, "label: gpt\nsize=40MiB\nsize=300MiB\ntype=swap\n")
    run_recovery("restore", f"{repo}::p", dst, "--partitions", "2", "--yes")
    dparts = loopdev.partition_paths(dst)
    assert ext4_digest(dparts[1]) == want
    assert blkid(dparts[0]).get("TYPE") is None  # partition 1 left alone


@pytest.mark.parametrize(
    "args, code, text",
    [
        (["backup", "/dev/loop-nonexistent", "--to", "/tmp/x"], 4, "does not exist"),
        (["verify", "no-separator"], 2, "REPO::IMAGE"),
        (["images", "/nonexistent/repo"], 6, "does not exist"),
        (["backup", "/etc/hostname", "--to", "/tmp/x"], 4, "not a block device"),
    ],
)
def test_bad_input_one_line_no_traceback(args: list[str], code: int, text: str) -> None:
    r = run_recovery(*args, check=False)
    assert r.returncode == code, r.stderr
    assert text in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_clean_ext4_journal_is_imaged_and_restored_as_zeros(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The root was mounted and written, so its journal holds old transactions. The image
    stores the journal as zeros (all but its superblock), unread; a restore writes zeros over
    whatever the target holds there; the file system checks clean with the same files."""
    from tests.unit.test_fs_ext4 import journal_blocks

    src, parts = make_gpt_system_disk(loop)
    want = ext4_digest(parts[1])
    blocks = journal_blocks(Path(parts[1]))
    out = subprocess.run(["dumpe2fs", "-h", parts[1]], capture_output=True, text=True).stdout
    bs = int(out.split("Block size:")[1].split()[0])
    assert blocks == list(range(blocks[0], blocks[0] + len(blocks)))  # mke2fs: one run
    start, length = (blocks[0] + 1) * bs, (len(blocks) - 1) * bs
    assert read(parts[1], start, length).count(0) < length, "the journal should hold transactions"
    journal_sb = read(parts[1], blocks[0] * bs, bs)

    repo = tmp_path / "repo"
    run_recovery("backup", src, "--to", str(repo), "--name", "a")
    tgt = loop(512 * MiB)
    run_recovery("restore", f"{repo}::a", tgt, "--yes")
    tparts = loopdev.partition_paths(tgt)
    with open(tparts[1], "r+b") as f:  # the target held something else there
        f.seek(start)
        f.write(os.urandom(length))
    run_recovery("restore", f"{repo}::a", tgt, "--yes")
    assert read(tparts[1], start, length) == bytes(length)
    assert read(tparts[1], blocks[0] * bs, bs) == journal_sb
    fsck = subprocess.run(["e2fsck", "-f", "-n", tparts[1]], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert ext4_digest(tparts[1]) == want
