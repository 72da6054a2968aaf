"""LVM2 physical volumes imaged by the used blocks of each logical volume (issue 16).

A RHEL-style disk (tests/storage/lvm_disk.py: EFI, /boot, a PV with root on xfs, home on ext4 in
two segments, swap) is built without activating anything; the backup stores the file systems'
used blocks through the volumes' segments, not the PV's deleted data; a restore onto a blank
disk and onto a larger one gives back every volume: clean xfs_repair -n and e2fsck -fn, the same
files, the swap label, the same LVM metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recovery.engine.system import partition_facts, system_partitions
from tests import loopdev
from tests.storage.disks import MiB, run_recovery
from tests.storage.lvm_disk import make_rhel_disk, volume_digests
from tests.storage.test_imaging import repo_size

pytestmark = pytest.mark.skipif(
    not all(loopdev.have(t) for t in ("pvcreate", "vgcfgrestore", "mkfs.xfs", "xfs_repair")),
    reason="needs lvm2 and xfsprogs",
)


def metadata_area(pv: str) -> bytes:
    with open(pv, "rb") as f:
        return f.read(1 * MiB)


def test_lvm_disk_by_used_blocks_round_trip(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = make_rhel_disk(loop, tmp_path)
    pv = src.parts[2]
    want = volume_digests(pv, src.pe_start, tmp_path)
    assert want["swap"] == "rhel-swap" and len(want["root"]) > 100  # type: ignore[arg-type]
    header = metadata_area(pv)

    # `disks --json` shows the volume group, its volumes and their file systems.
    listing = json.loads(run_recovery("disks", "--json").stdout)
    disk = next(d for d in listing["disks"] if d["path"] == src.disk)
    vg = disk["partitions"][2]["volume_group"]
    assert vg["name"] == "rhel"
    volumes = {v["name"]: v for v in vg["volumes"]}
    assert volumes["root"]["fstype"] == "xfs" and volumes["root"]["size"] == 320 * MiB
    assert volumes["home"]["fstype"] == "ext4" and volumes["home"]["label"] == "home"
    assert volumes["swap"]["fstype"] == "swap"
    assert not any(v["active"] for v in volumes.values())
    text = run_recovery("disks").stdout
    assert "volume group rhel:" in text and "xfs root" in text

    # --system: the PV holds the Linux root (in its root volume), so it is a system partition.
    facts = {f.number: f for f in partition_facts(src.disk)}
    assert facts[3].has_os_release, facts[3]
    assert 3 in system_partitions([src.disk])

    repo = tmp_path / "repo"
    r = run_recovery("backup", src.disk, "--to", str(repo), "--name", "rhel", "--json")
    result = json.loads(r.stdout[r.stdout.index("{\n") :])
    assert result["image"]["name"] == "rhel"
    stored = repo_size(repo)
    # The PV's volumes hold 120 MiB of deleted random data on root: not stored.
    assert stored < 60 * MiB, stored

    # Same size: the PV byte for byte in its metadata, every volume's files.
    target = loop(800 * MiB)
    r = run_recovery("restore", f"{repo}::rhel", target, "--yes")
    assert "xfs_repair -n clean" in r.stdout + r.stderr, r.stdout + r.stderr
    tparts = loopdev.partition_paths(target)
    kind = loopdev.run("blkid", "-p", "-s", "TYPE", "-o", "value", tparts[2]).stdout.strip()
    assert kind == "LVM2_member"
    assert metadata_area(tparts[2]) == header
    assert volume_digests(tparts[2], src.pe_start, tmp_path) == want

    # Larger: the PV grows with its partition, root takes the new extents and its xfs grows
    # (through a loop device over the volume: nothing is activated).
    big = loop(1200 * MiB)
    r = run_recovery("restore", f"{repo}::rhel", big, "--yes")
    out = r.stdout + r.stderr
    assert "logical volume rhel/root extended" in out, out
    assert "FAILED" not in out, out
    bparts = loopdev.partition_paths(big)
    listing = json.loads(run_recovery("disks", "--json").stdout)
    bdisk = next(d for d in listing["disks"] if d["path"] == big)
    volumes = {v["name"]: v for v in bdisk["partitions"][2]["volume_group"]["volumes"]}
    assert volumes["root"]["size"] > 320 * MiB + 350 * MiB, volumes["root"]
    assert volumes["home"]["size"] == 120 * MiB
    grown = volume_digests(bparts[2], src.pe_start, tmp_path, root_size=volumes["root"]["size"])
    assert grown == want
