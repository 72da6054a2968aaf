"""Virtual disks: an image exported to qcow2 (and back), and a qcow2 file as backup source."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.storage.disks import MiB, run_recovery
from tests.storage.test_clonezilla import make_source

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-utils missing")


def digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def test_qcow2_export_and_qcow2_source(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src, _parts = make_source(loop)
    repo = tmp_path / "repo"
    run_recovery("backup", src, "--to", str(repo), "--name", "disk", "--yes")

    qcow2 = tmp_path / "vm" / "disk.qcow2"
    qcow2.parent.mkdir()
    run_recovery("export", f"{repo}::disk", str(qcow2))
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(qcow2)], capture_output=True, check=True
        ).stdout
    )
    assert info["format"] == "qcow2" and info["virtual-size"] == 64 * MiB
    assert info["actual-size"] < 32 * MiB  # sparse: about the data, not the disk
    back = tmp_path / "back.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(qcow2), str(back)], check=True)

    restored = loop(64 * MiB)
    run_recovery("restore", f"{repo}::disk", restored, "--yes")
    assert digest(back) == digest(restored)

    # The qcow2 file as a backup source: its restore equals the disk inside it.
    run_recovery("backup", str(qcow2), "--to", str(tmp_path / "repo2"), "--name", "vm", "--yes")
    assert sorted(p.name for p in qcow2.parent.iterdir()) == ["disk.qcow2"]  # temp file gone
    second = loop(64 * MiB)
    run_recovery("restore", f"{tmp_path / 'repo2'}::vm", second, "--yes")
    assert digest(second) == digest(back)
    attached = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    assert str(qcow2.parent) not in attached


def test_export_refuses_an_existing_file(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src, _parts = make_source(loop)
    repo = tmp_path / "repo"
    run_recovery("backup", src, "--to", str(repo), "--name", "disk", "--yes")
    target = tmp_path / "x.qcow2"
    target.write_bytes(b"keep")
    r = run_recovery("export", f"{repo}::disk", str(target), check=False)
    assert r.returncode == 3 and "exists" in r.stderr
    assert target.read_bytes() == b"keep"
