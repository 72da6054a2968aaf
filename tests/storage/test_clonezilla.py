"""Clonezilla images made by Clonezilla itself (Debian's ocs-sr), restored by recovery.

Each test makes a GPT disk (EFI FAT + ext4 root with real files + swap), saves it with
``ocs-sr savedisk`` into a temporary image root (``-or``, so /home/partimag is never touched),
then lists, verifies and restores it onto a blank larger disk through the CLI, and checks the
same table (the root partition grown), clean file systems and equal file contents. ocs-sr's own
leftovers in /tmp are removed; its logs in /var/log (clonezilla.log, partclone.log) stay, as
they do after any Clonezilla run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import loopdev
from tests.storage.disks import (
    MiB,
    blkid,
    ext4_digest,
    fat_get,
    fat_put,
    mounted,
    run_recovery,
)

pytestmark = pytest.mark.skipif(shutil.which("ocs-sr") is None, reason="clonezilla not installed")

EFI_FILE = os.urandom(300_000)


def make_source(loop) -> tuple[str, list[str]]:  # type: ignore[no-untyped-def]
    dev = loop(64 * MiB)
    parts = loopdev.partition(
        dev,
        "label: gpt\n"
        'size=12MiB, type=uefi, name="EFI system"\n'
        "size=40MiB, type=linux, name=root\n"
        "type=swap\n",
    )
    loopdev.mkfs(parts[0], "vfat", "-n", "ESP")
    loopdev.mkfs(parts[1], "ext4", "-L", "root")
    loopdev.mkfs(parts[2], "swap", "-L", "swap0")
    fat_put(parts[0], "BOOTX64.EFI", EFI_FILE)
    with mounted(parts[1]) as m:
        (m / "random.bin").write_bytes(os.urandom(3 * MiB))
        shutil.copytree("/usr/share/perl5/Dpkg", m / "Dpkg", symlinks=True)
        (m / "etc").mkdir()
        (m / "etc" / "os-release").write_text('NAME="Test Linux"\n')
    loopdev.settle(dev)
    return dev, parts


def ocs_save(root: Path, name: str, dev: str, *options: str) -> Path:
    """``ocs-sr savedisk`` with no questions, into ``root`` (its -or option)."""
    root.mkdir(exist_ok=True)
    cmd = [
        "ocs-sr", "-b", "-q2", "-j2", "-sfsck", "-scs", "-senc", "-nogui", "-p", "true",
        *options, "-or", str(root), "savedisk", name, Path(dev).name,
    ]  # fmt: skip
    before = set(Path("/tmp").glob("parttable-ocs.*"))
    cache = Path("/tmp/ocs-cache")
    had_cache = cache.exists()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    finally:
        # ocs-sr leaves /proc/partitions snapshots (mktemp /tmp/parttable-ocs.XXXXXX) and its
        # device list cache in /tmp; take away what this run added.
        for f in set(Path("/tmp").glob("parttable-ocs.*")) - before:
            f.unlink(missing_ok=True)
        if not had_cache:
            shutil.rmtree(cache, ignore_errors=True)
    image = root / name
    assert r.returncode == 0 and (image / "parts").is_file(), r.stdout[-3000:] + r.stderr[-2000:]
    return image


def table_lines(dev: str) -> list[str]:
    out = loopdev.run("sfdisk", "--dump", dev).stdout.splitlines()
    return [
        ln.split(":", 1)[1] if ln.startswith(dev) else ln
        for ln in out
        if ":" in ln and not ln.startswith("device:")
    ]


@pytest.mark.parametrize(
    ("options", "suffix"),
    [
        (["-z1p", "-i", "0"], ".gz"),  # gzip, one file (Clonezilla's default since 4.6.4)
        (["-z9p", "-i", "1"], ".zst.aa"),  # zstd, split into 1 MB parts
    ],
    ids=["gzip", "zstd-split"],
)
def test_restore_ocs_image_onto_larger_disk(loop, tmp_path: Path, options, suffix) -> None:  # type: ignore[no-untyped-def]
    src, parts = make_source(loop)
    files = ext4_digest(parts[1])
    swap_ids = blkid(parts[2])
    image = ocs_save(tmp_path / "partimag", "2026-12-01-22-img", src, *options)
    assert any(f.name.endswith("ext4-ptcl-img" + suffix) for f in image.iterdir())

    listing = run_recovery("images", str(tmp_path / "partimag")).stdout
    assert "2026-12-01-22-img" in listing and "clonezilla" in listing
    ref = f"{tmp_path / 'partimag'}::2026-12-01-22-img"
    assert "intact" in run_recovery("verify", ref).stdout

    dst = loop(96 * MiB)
    r = run_recovery("restore", ref, dst, "--yes")
    assert "FAILED" not in r.stdout
    new_parts = loopdev.partition_paths(dst)
    assert len(new_parts) == 3

    before, after = table_lines(src), table_lines(dst)
    # Same ids, types, names and starts of p1 and p2; p2 grown, swap moved to the end.
    assert [ln for ln in before if "label" in ln] == [ln for ln in after if "label" in ln]
    for b, a in zip(before[-3:], after[-3:], strict=True):
        assert b.split("type=")[1] == a.split("type=")[1]
    assert before[-3] == after[-3]
    assert int(after[-2].split("size=")[1].split(",")[0]) > int(
        before[-2].split("size=")[1].split(",")[0]
    )

    fsck = subprocess.run(["e2fsck", "-fn", new_parts[1]], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert ext4_digest(new_parts[1]) == files
    assert fat_get(new_parts[0], "BOOTX64.EFI") == EFI_FILE
    got = blkid(new_parts[2])
    assert (got["TYPE"], got["UUID"], got["LABEL"]) == ("swap", swap_ids["UUID"], "swap0")

    # import: the same image as one of ours, deduplicated, restorable like any backup.
    repo = tmp_path / "repo"
    run_recovery("import", ref, "--to", str(repo), "--name", "imported")
    again = run_recovery("import", ref, "--to", str(repo), "--name", "again", "--json").stdout
    result = json.loads(again[again.rfind("\n{\n") + 1 :])  # the last, indented object
    assert result["new_bytes"] < 64 * 1024  # maps only
    assert "intact" in run_recovery("verify", f"{repo}::imported").stdout
    third = loop(96 * MiB)
    r = run_recovery("restore", f"{repo}::imported", third, "--yes")
    assert "FAILED" not in r.stdout
    restored = loopdev.partition_paths(third)
    assert table_lines(third) == table_lines(dst)
    assert ext4_digest(restored[1]) == files
    assert fat_get(restored[0], "BOOTX64.EFI") == EFI_FILE
    assert blkid(restored[2])["UUID"] == swap_ids["UUID"]


def test_damaged_ocs_image_is_reported(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src, _parts = make_source(loop)
    image = ocs_save(tmp_path / "partimag", "img", src, "-z0", "-i", "0")
    (data,) = [f for f in image.iterdir() if ".ext4-ptcl-img." in f.name]
    with open(data, "r+b") as f:  # uncompressed: a byte inside the data, after the bitmap
        f.seek(data.stat().st_size // 2)
        b = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([b[0] ^ 0xFF]))
    r = run_recovery("verify", f"{tmp_path / 'partimag'}::img", check=False)
    assert r.returncode == 7
    assert "partition 2" in r.stdout and "crc32 expected" in r.stdout


def test_mbr_disk_boot_code_hidden_data_and_dd_partition(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An MBR disk (xz): boot code, the hidden data after the MBR, a partition Clonezilla saves
    with partclone.dd (no file system), all back byte for byte on a larger disk."""
    dev = loop(48 * MiB)
    parts = loopdev.partition(
        dev, "label: dos\nsize=20MiB, type=83, bootable\nsize=8MiB, type=da\n"
    )
    loopdev.mkfs(parts[0], "ext4", "-L", "root")
    with mounted(parts[0]) as m:
        (m / "random.bin").write_bytes(os.urandom(2 * MiB))
    boot, hidden, raw = os.urandom(440), os.urandom(2047 * 512), os.urandom(8 * MiB)
    with open(dev, "r+b") as f:
        f.write(boot)
        f.seek(512)
        f.write(hidden)
    with open(parts[1], "r+b") as f:
        f.write(raw)
    loopdev.settle(dev)
    files = ext4_digest(parts[0])
    image = ocs_save(tmp_path / "partimag", "mbr", dev, "-z5", "-i", "0")
    names = {f.name for f in image.iterdir()}
    assert f"{Path(dev).name}-hidden-data-after-mbr" in names
    assert f"{Path(parts[1]).name}.dd-ptcl-img.xz" in names

    dst = loop(64 * MiB)
    r = run_recovery("restore", f"{tmp_path / 'partimag'}::mbr", dst, "--yes")
    assert "FAILED" not in r.stdout
    new_parts = loopdev.partition_paths(dst)
    with open(dst, "rb") as f:
        assert f.read(440) == boot
        f.seek(512)
        assert f.read(2047 * 512) == hidden
    with open(new_parts[1], "rb") as f:
        assert f.read() == raw
    assert ext4_digest(new_parts[0]) == files
