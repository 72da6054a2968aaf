"""Backup locations on a real partition: found, mounted read-only without writing a byte,
remounted read-write when chosen for a backup, searched for repositories, unmounted at the end."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from recovery.devices.disks import find_disk
from recovery.engine.locations import Locations, current_mounts
from tests import loopdev
from tests.storage.disks import mounted

MiB = 1 << 20


def digest(dev: str) -> str:
    h = hashlib.sha256()
    with open(dev, "rb") as f:
        while block := f.read(4 * MiB):
            h.update(block)
    return h.hexdigest()


def test_partition_location_read_only_then_read_write(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dev = loop(96 * MiB)
    (part,) = loopdev.partition(dev, "label: gpt\ntype=linux\n")
    loopdev.mkfs(part, "ext4", "-L", "backups")
    with mounted(part) as m:
        (m / "laptop").mkdir()
        header = {"format": "recovery-repository", "version": 1, "id": "x", "created": "2024"}
        (m / "laptop" / "recovery-repo").write_text(json.dumps(header))
    before = digest(part)

    locations = Locations(mount_root=tmp_path / "mnt")
    (loc,) = locations.candidates([find_disk(dev)])
    assert (loc.device, loc.fstype, loc.label, loc.mountpoint) == (part, "ext4", "backups", None)

    found = locations.mount(loc, writable=False)
    assert found.mountpoint == str(tmp_path / "mnt" / Path(part).name)
    assert found.repositories == (f"{found.mountpoint}/laptop",)
    assert found.free is not None and found.free > 50 * MiB
    assert current_mounts()[part] == (found.mountpoint, False)
    locations.release_all()
    assert part not in current_mounts()
    assert digest(part) == before  # looking for backups wrote nothing (no journal replay)

    searched = locations.search(loc)  # "search all": read-only, then unmounted when not chosen
    assert current_mounts()[part] == (searched.mountpoint, False)
    assert locations.unmount(searched).mountpoint is None
    assert part not in current_mounts()

    ro = locations.mount(loc, writable=False)
    rw = locations.mount(ro, writable=True)  # chosen for a backup: remounted read-write
    assert rw.writable and current_mounts()[part] == (rw.mountpoint, True)
    assert rw.mountpoint is not None
    (Path(rw.mountpoint) / "written").write_text("ok")
    locations.release_all()
    assert part not in current_mounts()
