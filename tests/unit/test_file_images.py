"""File images of a folder of this machine (no devices, no root): plain and encrypted
locations alike, the files cache, and what a file image leaves of a location's version.

The storage tests (tests/storage/test_file_backup.py) do the same from real partitions."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from recovery.engine import api
from recovery.errors import UsageError
from recovery.repository import sealing, secrets
from recovery.repository.store import Repository
from tests.unit.test_encryption import Fixed


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "docs" / "sub").mkdir(parents=True)
    (src / "docs" / "a.txt").write_text("alpha\n" * 1000)
    (src / "docs" / "sub" / "big.bin").write_bytes(os.urandom(2_500_000))
    (src / "docs" / "skip.tmp").write_text("x")
    os.symlink("a.txt", src / "docs" / "link")
    return src


@pytest.fixture
def encrypted(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(sealing, "KDF_MEMORY_KIB", 8 * 1024)
    monkeypatch.setattr(sealing, "KDF_ITERATIONS", 1)
    before = secrets.current()
    secrets.use(Fixed("correct horse"))
    yield
    secrets.use(before)


def backup(tree: Path, repo: Path, name: str, encrypt: bool = False) -> api.FileBackupResult:
    plan = api.file_backup_plan(
        [str(tree)], str(repo), name=name, excludes=["*.tmp"], encrypt=encrypt
    )
    assert plan.files == 2  # skip.tmp is left out already in the plan
    return api.file_backup_run(plan)


@pytest.mark.parametrize("encrypt", [False, True], ids=["plain", "encrypted"])
def test_folder_round_trip(tree: Path, tmp_path: Path, encrypt: bool, encrypted: None) -> None:
    repo = tmp_path / "repo"
    first = backup(tree, repo, "one", encrypt)
    assert (first.files, first.reused_files, first.skipped) == (2, 0, ())
    second = backup(tree, repo, "two")
    assert second.read_bytes == 0 and second.reused_files == 2
    assert second.new_bytes <= first.new_bytes // 100
    header = json.loads((repo / "recovery-repo").read_text())
    assert header["version"] == (2 if encrypt else 1)  # file images change no header
    names = os.listdir(repo / "images")
    assert any(n == "one.image" for n in names) is (not encrypt)  # hidden names when sealed
    out = tmp_path / "out"
    plan = api.extract_plan(str(repo), "two", [str(tree / "docs")], str(out))
    result = api.extract_run(plan)
    assert result.ok and result.files == 2 and result.links == 1
    assert (out / "docs" / "sub" / "big.bin").read_bytes() == (
        tree / "docs" / "sub" / "big.bin"
    ).read_bytes()
    assert os.readlink(out / "docs" / "link") == "a.txt"
    assert not (out / "docs" / "skip.tmp").exists()
    api.remove(str(repo), "one")
    assert api.verify(str(repo), "two").ok
    info = {i.name: i for i in api.list_images(str(repo))}
    assert info["two"].kind == "files" and info["two"].files == 2


def test_a_run_straight_after_its_plan_reuses_the_walk_and_a_late_one_walks_again(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recovery.engine import filebackup

    repo = tmp_path / "repo"
    backup(tree, repo, "one")
    # Straight on (the command line): the run uses what the plan walked, so a file made in
    # between is not seen, as if it had come after the backup.
    plan = api.file_backup_plan([str(tree)], str(repo), name="two", excludes=["*.tmp"])
    (tree / "docs" / "new.txt").write_text("new")
    assert api.file_backup_run(plan).files == 2
    # After a pause longer than REUSE_WALK_SECONDS (the TUI's confirmation) the run walks again.
    plan = api.file_backup_plan([str(tree)], str(repo), name="three", excludes=["*.tmp"])
    (tree / "docs" / "newer.txt").write_text("newer")
    monkeypatch.setattr(filebackup, "REUSE_WALK_SECONDS", -1.0)
    assert api.file_backup_run(plan).files == 4
    assert not filebackup._walks  # a walk is used once, and not kept after its run


def test_an_image_removed_between_plan_and_run_vouches_for_nothing(
    tree: Path, tmp_path: Path
) -> None:
    # The run reuses the plan's walk, but reads the files cache under the location's lock: an
    # image removed in between (its chunks freed) must not vouch for any file.
    repo = tmp_path / "repo"
    backup(tree, repo, "one")
    plan = api.file_backup_plan([str(tree)], str(repo), name="two", excludes=["*.tmp"])
    api.remove(str(repo), "one")
    result = api.file_backup_run(plan)
    assert result.reused_files == 0 and result.read_bytes == result.total_bytes > 0
    assert api.verify(str(repo), "two").ok


def test_extract_names_a_missing_path(tree: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    backup(tree, repo, "one")
    with pytest.raises(UsageError, match="holds no /nowhere"):
        api.extract_plan(str(repo), "one", ["/nowhere"], str(tmp_path / "out"))


def test_damaged_content_chunk_is_reported(tree: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    backup(tree, repo, "one")
    r = Repository.open(str(repo))
    body = r.read_manifest("one")
    from recovery.repository import filetree

    entries = list(filetree.read_tree(r, body, "one"))
    big = next(e for e in entries if e.path.endswith(b"big.bin"))
    h = big.pieces[0].digest.hex()
    chunk = repo / "chunks" / h[:2] / h
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 0xFF
    chunk.write_bytes(bytes(data))
    check = api.verify(str(repo), "one")
    assert not check.ok and any(h in p for p in check.problems)
    out = tmp_path / "out"
    result = api.extract_run(api.extract_plan(str(repo), "one", ["/"], str(out)))
    assert not result.ok and any("big.bin" in p for p in result.problems)
    assert not list(out.rglob("big.bin"))  # no partial copy left looking complete


def test_a_file_image_is_not_restored_onto_a_disk(tree: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    backup(tree, repo, "one")
    target = tmp_path / "disk.img"
    target.write_bytes(bytes(1 << 20))
    with pytest.raises(UsageError, match="is a file image"):
        api.restore_plan(str(repo), "one", str(target))


def test_the_file_system_type_of_a_folder_is_what_findmnt_says(tmp_path: Path) -> None:
    """A folder source's type (case-insensitive names on vfat and NTFS, unstable inodes on
    FUSE) comes from mountinfo, as ``findmnt -T`` gives it, without running findmnt."""
    import shutil
    import subprocess

    from recovery.devices.blockio import fstype_at

    if shutil.which("findmnt") is None:
        pytest.skip("findmnt is missing")
    (tmp_path / "a b").mkdir()  # a space: mountinfo escapes it in mount points
    for path in ("/", "/proc", "/sys", str(tmp_path), str(tmp_path / "a b")):
        r = subprocess.run(
            ["findmnt", "-n", "-o", "FSTYPE", "-T", path], capture_output=True, text=True
        )
        assert fstype_at(path) == r.stdout.split()[-1], path
