"""A backup location written by the first release (format version 1, before the storage
backend, encryption and network locations) still lists, verifies and restores.

``fixtures/v1-location.tar.gz`` was made by recovery at commit e7d7d9e (the last commit before
the redesign): ``recovery backup`` of a 16 MiB GPT disk whose ext4 partition (label v1root)
holds ``letter.txt`` (2000 lines "line N: written by recovery 0.1.0 in format version 1") and
``dir/hello.txt``, then ``recovery verify``.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from tests import loopdev
from tests.storage.disks import MiB, blkid, mounted, run_recovery

FIXTURE = Path(__file__).parent / "fixtures" / "v1-location.tar.gz"
LETTER = "".join(f"line {i}: written by recovery 0.1.0 in format version 1\n" for i in range(2000))


def test_a_version_1_location_opens_verifies_and_restores(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with tarfile.open(FIXTURE) as t:
        t.extractall(tmp_path)  # our own fixture (no filter= on Python 3.11.2)
    repo = tmp_path / "repo"
    header = json.loads((repo / "recovery-repo").read_text())
    assert header["version"] == 1

    listing = json.loads(run_recovery("images", str(repo), "--json").stdout)
    (image,) = listing["images"]
    assert image["name"] == "v1-image" and image["status"] == "verified"
    assert "intact" in run_recovery("verify", f"{repo}::v1-image").stdout

    target = loop(16 * MiB)
    run_recovery("restore", f"{repo}::v1-image", target, "--yes")
    (part,) = loopdev.partition_paths(target)
    loopdev.run("e2fsck", "-fn", part)
    assert blkid(part)["LABEL"] == "v1root"
    with mounted(part, readonly=True) as m:
        assert (m / "letter.txt").read_text() == LETTER
        assert (m / "dir" / "hello.txt").read_text() == "hello\n"

    # Written to by this version, it stays version 1 and the old image stays intact.
    run_recovery("backup", target, "--to", str(repo), "--name", "after")
    assert json.loads((repo / "recovery-repo").read_text())["version"] == 1
    assert "intact" in run_recovery("verify", f"{repo}::v1-image").stdout
