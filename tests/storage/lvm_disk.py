"""A RHEL-style disk built on this kernel without device-mapper (issue 16).

GPT: an EFI system partition (FAT32, written with mtools), /boot (ext4), and an LVM2 physical
volume whose volume group ``rhel`` holds ``home`` (ext4, in two segments, the second before
the first on the PV, as after an lvextend), ``swap`` and ``root`` (xfs, last, with free extents
after it, as installers lay it out). LVM's own tools write the label and the metadata
(pvcreate, vgcreate, then vgcfgrestore of a configuration naming each volume's segments); the
file systems are written into the volumes' extents through a loop device with an offset (root,
mounted to fill it with real files over deleted random data) or built in a file by
mkfs.ext4 -d and copied piece by piece (home). Nothing is activated.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests import loopdev
from tests.storage.disks import MiB, fill_ext4, tree_digest

EXTENT = 4 * MiB
ENV = {**os.environ, "LVM_SUPPRESS_FD_WARNINGS": "1"}
TABLE = """label: gpt
size=64MiB, type=uefi
size=128MiB, type=linux
type=E6D6D379-F507-44C2-A23C-238F2A3DF928
"""
# name: [(first PV extent, extent count), ...] in the volume's order
# root last, as installers lay it out, so it can take a grown PV's space in one piece.
VOLUMES = {"home": [(10, 20), (0, 10)], "swap": [(30, 8)], "root": [(40, 80)]}


@dataclass
class LvmDisk:
    disk: str
    parts: list[str]
    pe_start: int
    """Byte offset of the first physical extent in the PV partition."""


def lvm(command: str, pv: str, *args: str) -> str:
    """An LVM command that sees only ``pv`` and keeps no backups in /etc/lvm."""
    argv = [command, "--devices", pv, "--config", "backup { backup = 0 archive = 0 }", *args]
    r = subprocess.run(argv, capture_output=True, text=True, env=ENV)
    if r.returncode != 0 and "Restored volume group" not in r.stdout + r.stderr:
        raise RuntimeError(f"{' '.join(argv)}: {r.stdout}{r.stderr}")
    return r.stdout


def _with_volumes(config: str) -> str:
    body = ["logical_volumes {"]
    for name, segments in VOLUMES.items():
        body += [
            f"{name} {{",
            f'id = "{name.ljust(6, "x")}-aaaa-aaaa-aaaa-aaaa-aaaa-aaaaaa"',
            'status = ["READ", "WRITE", "VISIBLE"]',
            "flags = []",
            f"segment_count = {len(segments)}",
        ]
        at = 0
        for i, (first, count) in enumerate(segments, 1):
            body += [
                f"segment{i} {{",
                f"start_extent = {at}",
                f"extent_count = {count}",
                'type = "striped"',
                "stripe_count = 1",
                f'stripes = ["pv0", {first}]',
                "}",
            ]
            at += count
        body.append("}")
    body.append("}")
    # Before the volume group's closing brace: the last "}" at the start of a line.
    end = config.rindex("\n}")
    seqno = re.sub(r"seqno = (\d+)", lambda m: f"seqno = {int(m[1]) + 1}", config[:end], count=1)
    return seqno + "\n" + "\n".join(body) + config[end:]


def volume_offset(pe_start: int, name: str) -> list[tuple[int, int]]:
    """(byte offset in the PV, length) of each segment of volume ``name``."""
    return [(pe_start + first * EXTENT, count * EXTENT) for first, count in VOLUMES[name]]


def read_volume(pv: str, pe_start: int, name: str, dest: Path, size: int | None = None) -> Path:
    """The volume's bytes assembled into a file (its segments in order); ``size``: a volume
    that grew in its first segment (root after a restore onto a larger disk)."""
    segments = volume_offset(pe_start, name)
    if size is not None:
        assert len(segments) == 1
        segments = [(segments[0][0], size)]
    with open(pv, "rb") as f, open(dest, "wb") as out:
        for offset, length in segments:
            f.seek(offset)
            out.write(f.read(length))
    return dest


def make_rhel_disk(loop, tmp_path: Path, size: int = 800 * MiB) -> LvmDisk:  # type: ignore[no-untyped-def]
    dev = loop(size)
    parts = loopdev.partition(dev, TABLE)
    loopdev.mkfs(parts[0], "vfat", "-F", "32", "-n", "EFI")
    loopdev.mkfs(parts[1], "ext4", "-L", "boot")
    fill_ext4(parts[1], real_mb=10, deleted_mb=20)
    pv = parts[2]
    lvm("pvcreate", pv, "-q", "-ff", "-y", pv)
    lvm("vgcreate", pv, "-q", "rhel", pv)
    config = tmp_path / "rhel.vg"
    lvm("vgcfgbackup", pv, "-q", "-f", str(config), "rhel")
    config.write_text(_with_volumes(config.read_text()))
    lvm("vgcfgrestore", pv, "-q", "-f", str(config), "rhel")
    pe_start = int(lvm("pvs", pv, "--noheadings", "--units", "b", "-o", "pe_start").strip()[:-1])
    # root: xfs written through a loop device over its extents, filled with real files over
    # deleted random data.
    ((offset, length),) = volume_offset(pe_start, "root")
    root = loopdev.run("losetup", "-f", "--show", "-o", str(offset), "--sizelimit", str(length), pv)
    root_dev = root.stdout.strip()
    try:
        loopdev.run("mkfs.xfs", "-q", "-f", "-L", "root", root_dev)
        fill_ext4(root_dev, real_mb=40, deleted_mb=120)
    finally:
        loopdev.run("losetup", "-d", root_dev)
    # home: ext4 built in a file, copied into its two segments.
    tree = tmp_path / "home-tree"
    (tree / "alice").mkdir(parents=True)
    for i in range(50):
        (tree / "alice" / f"doc{i}.txt").write_bytes(os.urandom(20_000 + i * 1000))
    home = tmp_path / "home.img"
    with open(home, "wb") as f:
        f.truncate(sum(n for _, n in volume_offset(pe_start, "home")))
    loopdev.run("mkfs.ext4", "-q", "-F", "-L", "home", "-d", str(tree), str(home))
    with open(home, "rb") as src, open(pv, "r+b") as dst:
        for offset, length in volume_offset(pe_start, "home"):
            dst.seek(offset)
            dst.write(src.read(length))
    # swap: a header with its label.
    swap = tmp_path / "swap.img"
    with open(swap, "wb") as f:
        f.truncate(VOLUMES["swap"][0][1] * EXTENT)
    loopdev.run("mkswap", "-q", "-L", "rhel-swap", str(swap))
    ((offset, _),) = volume_offset(pe_start, "swap")
    with open(pv, "r+b") as dst:
        dst.seek(offset)
        dst.write(swap.read_bytes()[: 64 * 1024])
        os.fsync(dst.fileno())
    loopdev.settle(dev)
    return LvmDisk(dev, parts, pe_start)


def volume_digests(
    pv: str, pe_start: int, tmp_path: Path, root_size: int | None = None
) -> dict[str, object]:
    """What each volume holds: file digests of root and home, swap's label; fsck'd read-only.
    ``root_size``: root grew (its xfs must span the grown volume)."""
    out: dict[str, object] = {}
    for name, fstype in (("root", "xfs"), ("home", "ext4")):
        size = root_size if name == "root" else None
        image = read_volume(pv, pe_start, name, tmp_path / f"check-{name}.img", size)
        if size is not None:
            info = loopdev.run(
                "xfs_db", "-r", "-c", "sb 0", "-c", "p dblocks blocksize", str(image)
            )
            fields = dict(line.split(" = ") for line in info.stdout.splitlines())
            assert int(fields["dblocks"]) * int(fields["blocksize"]) == size, fields
        if fstype == "xfs":
            loopdev.run("xfs_repair", "-n", str(image))
        else:
            loopdev.run("e2fsck", "-fn", str(image))
        mnt = tmp_path / f"mnt-{name}"
        mnt.mkdir(exist_ok=True)
        options = "ro,loop,nouuid" if fstype == "xfs" else "ro,loop"
        loopdev.run("mount", "-t", fstype, "-o", options, str(image), str(mnt))
        try:
            out[name] = tree_digest(mnt)
        finally:
            loopdev.run("umount", str(mnt))
        image.unlink()
    swap = read_volume(pv, pe_start, "swap", tmp_path / "check-swap.img")
    out["swap"] = loopdev.run("blkid", "-p", "-s", "LABEL", "-o", "value", str(swap)).stdout.strip()
    swap.unlink()
    return out
