"""File backup (issue 13) on real partitions: ext4 and NTFS on loop disks the tests attach.

A tree with every kind of entry is backed up with excludes through ``recovery backup --files``
(the partition mounted read-only by recovery itself), extracted into an empty folder and
compared name by name: bytes, mode, times, symlink targets, hard-link grouping, extended
attributes; excluded paths must be absent. A second backup of the unchanged tree must read no
file contents and store almost nothing; a file on an unreadable range of a failing disk is
skipped and listed while every other file is saved.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import loopdev
from tests.storage.disks import MiB, mounted, run_recovery

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (loop devices)")

NS = 1_000_000_000


def backup(*args: str, check: bool = True) -> dict[str, Any]:
    r = run_recovery("backup", "--files", *args, "--json", check=False)
    if check and r.returncode not in (0, 7):
        raise AssertionError(f"backup exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return {**json.loads(r.stdout[r.stdout.index("{\n") :]), "rc": r.returncode}


def snapshot(root: Path) -> dict[str, dict[str, Any]]:
    """Everything we promise to keep, per path relative to ``root``."""
    out: dict[str, dict[str, Any]] = {}
    inodes: dict[int, str] = {}
    # Every stat before any read: reading a hard-linked file moves the atime of its twins.
    stats = {p: p.lstat() for p in root.rglob("*")}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in [*dirnames, *sorted(filenames)]:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if rel.startswith("lost+found"):
                continue
            st = stats[p]
            rec: dict[str, Any] = {
                "mode": st.st_mode,
                "mtime": st.st_mtime_ns,
                "xattrs": {
                    n: os.getxattr(p, n, follow_symlinks=False)
                    for n in sorted(os.listxattr(p, follow_symlinks=False))
                    if n.startswith("user.")
                },
            }
            if stat.S_ISLNK(st.st_mode):
                rec["target"] = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                rec["bytes"] = p.read_bytes()
                rec["atime"] = st.st_atime_ns
                if st.st_nlink > 1:
                    rec["link_group"] = inodes.setdefault(st.st_ino, rel)
            out[rel] = rec
    return out


def fill_linux_tree(m: Path) -> None:
    home = m / "home" / "alice"
    (home / "docs" / "deep" / "er").mkdir(parents=True)
    (home / ".cache" / "thumbs").mkdir(parents=True)
    (home / "proj" / "node_modules" / "left").mkdir(parents=True)
    (home / "docs" / "letter.txt").write_text("Dear reader,\n" * 300)
    (home / "docs" / "deep" / "er" / "empty").write_bytes(b"")
    # Seeded, not os.urandom: where content-defined chunking cuts depends on the bytes, and the
    # edit test below needs the piece around 3 MiB to be the same size in every run (with fresh
    # random bytes it was over 3 MiB about once in a few dozen runs; the largest piece is 4 MiB).
    (home / "docs" / "photo.raw").write_bytes(random.Random(2026).randbytes(6 * MiB + 12345))
    for i in range(200):
        (home / "docs" / f"note{i:03}.md").write_text(f"note {i}\n" * (i + 1))
    (home / "docs" / "scratch.tmp").write_text("throw away")
    (home / ".cache" / "thumbs" / "a.png").write_bytes(os.urandom(5000))
    (home / "proj" / "node_modules" / "left" / "index.js").write_text("module.exports = 1")
    (home / "proj" / "main.py").write_text("print('hi')\n")
    os.chmod(home / "proj" / "main.py", 0o750)
    os.symlink("docs/letter.txt", home / "letter-link")
    os.symlink("/nowhere/at/all", home / "dangling")
    os.link(home / "docs" / "letter.txt", home / "letter-hard")
    os.mkfifo(home / "pipe")
    os.setxattr(home / "docs" / "letter.txt", "user.origin", b"scanner \x00\xff")
    os.setxattr(home / "docs", "user.folder-note", b"kept")
    (m / "etc").mkdir()
    (m / "etc" / "hostname").write_text("box\n")
    os.chown(home / "docs" / "photo.raw", 1234, 5678)
    for i, p in enumerate(sorted(m.rglob("*"))):
        if not p.is_symlink():
            os.utime(p, ns=(1_600_000_000 * NS + i * 1111, 1_500_000_000 * NS + i * 7777))
    os.sync()


EXT4_EXCLUDES = ("*.tmp", "node_modules/", "/home/*/.cache")
EXT4_EXCLUDED = (
    "home/alice/docs/scratch.tmp",
    "home/alice/proj/node_modules",
    "home/alice/.cache",
)


@pytest.fixture
def ext4_part(loop) -> Iterator[str]:  # type: ignore[no-untyped-def]
    dev = loop(96 * MiB)
    (part,) = loopdev.partition(dev, "label: gpt\ntype=linux, name=data\n")
    loopdev.mkfs(part, "ext4", "-L", "data")
    with mounted(part) as m:
        fill_linux_tree(m)
    yield part


def compare(source: dict[str, Any], out: dict[str, Any], excluded: tuple[str, ...]) -> None:
    for rel in source:
        if any(rel == x or rel.startswith(x + "/") for x in excluded):
            assert rel not in out, f"{rel} was excluded but extracted"
            continue
        if stat.S_ISSOCK(source[rel]["mode"]):
            continue
        assert rel in out, f"{rel} missing from the extracted tree"
        want, got = dict(source[rel]), dict(out[rel])
        assert got == want, f"{rel}: differs"
    extra = set(out) - set(source)
    assert not extra, f"extracted but not in the source: {sorted(extra)}"


def test_ext4_backup_excludes_extract_and_unchanged_second(  # type: ignore[no-untyped-def]
    ext4_part: str, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    excl: list[str] = []
    for x in EXT4_EXCLUDES:
        excl += ["--exclude", x]
    first = backup(ext4_part, "--to", str(repo), "--name", "first", *excl)
    assert first["rc"] == 0 and not first["skipped"]
    assert first["files"] == 205  # 200 notes, letter, empty, photo, main.py, hostname

    with mounted(ext4_part, readonly=True) as m:
        source = snapshot(m)
    out = tmp_path / "out"
    run_recovery("extract", f"{repo}::first", "/", "--to", str(out))
    compare(source, snapshot(out), EXT4_EXCLUDED)
    assert (out / "home/alice/letter-hard").stat().st_ino == (
        out / "home/alice/docs/letter.txt"
    ).stat().st_ino
    assert (out / "home/alice/docs/photo.raw").stat().st_uid == 1234

    second = backup(ext4_part, "--to", str(repo), "--name", "second", *excl)
    assert second["read_bytes"] == 0, "the files cache should vouch for every file"
    assert second["reused_files"] == second["files"] == first["files"]
    assert second["new_bytes"] <= first["new_bytes"] // 100

    # One folder out, by plain path: only it lands in the destination.
    part_out = tmp_path / "part"
    run_recovery("extract", f"{repo}::second", "/home/alice/docs/deep", "--to", str(part_out))
    assert sorted(p.name for p in part_out.rglob("*")) == ["deep", "empty", "er"]

    # An edit in the middle of a big file stores only the changed region (content-defined).
    with mounted(ext4_part) as m, open(m / "home/alice/docs/photo.raw", "r+b") as f:
        f.seek(3 * MiB)
        f.write(b"edited" * 100)
    third = backup(ext4_part, "--to", str(repo), "--name", "third", *excl)
    assert third["read_bytes"] == 6 * MiB + 12345
    assert third["new_bytes"] < 3 * MiB

    verify = run_recovery("verify", f"{repo}::third")
    assert "intact" in verify.stdout
    listing = json.loads(run_recovery("images", str(repo), "--json").stdout)
    kinds = {i["name"]: (i["kind"], i["files"]) for i in listing["images"]}
    assert kinds["first"] == ("files", 205)

    # open: the tree at DIR/files/, read through the pieces.
    view = tmp_path / "view"
    view.mkdir()
    run_recovery("open", f"{repo}::third", str(view))
    try:
        files = view / "files" / "home" / "alice"
        assert (files / "docs" / "letter.txt").read_text() == "Dear reader,\n" * 300
        assert os.readlink(files / "letter-link") == "docs/letter.txt"
        assert os.getxattr(files / "docs" / "letter.txt", "user.origin") == b"scanner \x00\xff"
        with mounted(ext4_part, readonly=True) as m:
            want = (m / "home/alice/docs/photo.raw").read_bytes()
        assert (files / "docs" / "photo.raw").read_bytes() == want
        assert not (files / ".cache").exists()
    finally:
        run_recovery("close", str(view))

    # Removing images keeps what the others refer to (garbage collection counts file images).
    run_recovery("remove", f"{repo}::first", "--yes")
    run_recovery("remove", f"{repo}::second", "--yes")
    assert "intact" in run_recovery("verify", f"{repo}::third").stdout
    shutil.rmtree(out)
    run_recovery("extract", f"{repo}::third", "/home/alice/docs", "--to", str(out))
    assert (out / "docs/letter.txt").read_text() == "Dear reader,\n" * 300


# -- NTFS: a Windows-style tree, the user-data preset -----------------------------------------


def mkntfs(part: str) -> None:
    start = int(loopdev.run("cat", f"/sys/class/block/{os.path.basename(part)}/start").stdout)
    loopdev.mkfs(part, "ntfs", "-L", "Windows", "-p", str(start), "-H", "255", "-S", "63")


def fill_windows(m: Path) -> None:
    (m / "Windows" / "System32").mkdir(parents=True)
    (m / "Windows" / "System32" / "kernel32.dll").write_bytes(os.urandom(200_000))
    (m / "pagefile.sys").write_bytes(os.urandom(MiB))
    # Hibernated: ntfs-3g mounts it read-only only, and nothing may write to it.
    (m / "hiberfil.sys").write_bytes(b"HIBR" + os.urandom(MiB))
    (m / "$RECYCLE.BIN" / "S-1-5-21").mkdir(parents=True)
    (m / "$RECYCLE.BIN" / "S-1-5-21" / "$R1.docx").write_text("deleted")
    for user in ("alice", "bob"):
        u = m / "Users" / user
        for folder in ("Documents", "Desktop", "Pictures", "Downloads"):
            (u / folder).mkdir(parents=True)
        (u / "AppData" / "Local" / "Temp").mkdir(parents=True)
        (u / "AppData" / "Local" / "Temp" / "x.tmp").write_text("temp")
        (u / "Documents" / "report.docx").write_bytes(os.urandom(300_000))
        (u / "Documents" / "Old Report.BAK").write_text("old")
        (u / "Documents" / "Sub dir").mkdir()
        (u / "Documents" / "Sub dir" / "notes.txt").write_text(f"{user}'s notes\r\n" * 100)
        (u / "Pictures" / "holiday.jpg").write_bytes(os.urandom(2 * MiB + 7))
        (u / "Desktop" / "todo.txt").write_text("buy milk")
        (u / "Downloads" / "setup.exe").write_bytes(os.urandom(70_000))
        (u / "NTUSER.DAT").write_bytes(os.urandom(20_000))
        # What NTFS has beside plain files (through ntfs-3g): a symbolic link (a reparse
        # point), a hard link, and a named stream shown as a user xattr.
        (u / "Documents" / "shortcut.docx").symlink_to("report.docx")
        os.link(u / "Documents" / "report.docx", u / "Documents" / "report (link).docx")
        os.setxattr(u / "Documents" / "Sub dir" / "notes.txt", "user.tag", b"blue")
    for i, p in enumerate(sorted(m.rglob("*"))):
        os.utime(
            p,
            ns=(1_600_000_000 * NS + i * 100, 1_500_000_000 * NS + i * 700),
            follow_symlinks=False,
        )
    os.sync()


@pytest.mark.skipif(not loopdev.have("ntfs-3g"), reason="needs ntfs-3g")
def test_ntfs_user_data_preset_extracts_the_profiles(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dev = loop(64 * MiB)
    (part,) = loopdev.partition(dev, "label: gpt\ntype=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n")
    mkntfs(part)
    m = tmp_path / "ntfs"
    m.mkdir()
    loopdev.run("ntfs-3g", part, str(m))
    try:
        fill_windows(m)
    finally:
        loopdev.run("umount", str(m))
    repo = tmp_path / "repo"
    before = hashlib.sha256(Path(part).read_bytes()).hexdigest()
    first = backup(part, "--to", str(repo), "--preset", "user-data", "--exclude", "*.bak")
    assert first["rc"] == 0, first
    assert hashlib.sha256(Path(part).read_bytes()).hexdigest() == before, "the source changed"
    out = tmp_path / "out"
    name = first["image"]["name"]
    run_recovery("extract", f"{repo}::{name}", "/", "--to", str(out))
    loopdev.run("ntfs-3g", "-o", "ro", part, str(m))
    try:
        source = snapshot(m)
    finally:
        loopdev.run("umount", str(m))
    got = snapshot(out)
    kept = {
        rel
        for rel in source
        if rel.split("/")[:1] == ["Users"]
        and len(rel.split("/")) >= 3
        and rel.split("/")[2] in ("Documents", "Desktop", "Pictures", "Downloads")
        and not rel.lower().endswith(".bak")
    }
    assert kept and kept <= set(got)
    for rel in kept:
        want, have = dict(source[rel]), dict(got[rel])
        if stat.S_ISDIR(want["mode"]):
            # ntfs-3g shows every folder 0777 and every file 0777/0644 by its own mapping:
            # what was read is what is restored.
            assert have["mtime"] == want["mtime"], rel
            continue
        assert have == want, rel
    # Only the profiles' user folders, and the folders on the way to them.
    assert "Users/alice/Documents/Old Report.BAK" not in got  # case-insensitive exclude
    for absent in (
        "pagefile.sys",
        "hiberfil.sys",
        "Windows",
        "$RECYCLE.BIN",
        "Users/alice/AppData",
    ):
        assert absent not in got, absent
    assert set(got) - kept == {"Users", "Users/alice", "Users/bob"}
    docs = "Users/alice/Documents"
    assert got[f"{docs}/shortcut.docx"]["target"] == "report.docx"
    assert (
        got[f"{docs}/report (link).docx"]["link_group"] == got[f"{docs}/report.docx"]["link_group"]
    )
    assert got[f"{docs}/Sub dir/notes.txt"]["xattrs"] == {"user.tag": b"blue"}

    # NTFS creation times came through ntfs-3g's xattr into the tree.
    from recovery.repository import filetree
    from recovery.repository.store import Repository

    r = Repository.open(str(repo))
    body = r.read_manifest(name)
    entries = {e.path: e for e in filetree.read_tree(r, body, name)}
    doc = entries[b"Users/alice/Documents/report.docx"]
    assert doc.btime_ns > 1_700_000_000 * NS  # made by the test, just now
    assert body["preset"] == "user-data" and "/pagefile.sys" in body["exclude"]


# -- a failing disk under the partition --------------------------------------------------------


def test_unreadable_file_is_skipped_and_listed(tmp_path: Path) -> None:
    from tests.storage.test_faults import failing_disk

    with failing_disk(tmp_path) as disk:
        repo = tmp_path / "repo"
        result = backup(disk.part, "--to", str(repo), "--name", "failing")
        assert result["rc"] == 7
        assert [s.split(":")[0] for s in result["skipped"]] == ["victim.bin"]
        out = tmp_path / "out"
        run_recovery("extract", f"{repo}::failing", "/", "--to", str(out))
        want = dict(disk.files)
        del want["victim.bin"]
        from tests.storage.disks import tree_digest

        assert tree_digest(out) == want
        body = json.loads(run_recovery("images", str(repo), "--json").stdout)
        assert body["images"][0]["files"] == len([v for v in want.values() if v != "dir"])


@pytest.mark.skipif(not loopdev.have("fusefat"), reason="needs fusefat (no vfat in this kernel)")
def test_fat_partition_through_the_fuse_driver(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.storage.disks import fat_put

    dev = loop(64 * MiB)
    (part,) = loopdev.partition(dev, "label: gpt\ntype=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n")
    loopdev.mkfs(part, "vfat", "-F", "32", "-n", "STICK")
    photo = os.urandom(700_000)
    fat_put(part, "PHOTO.JPG", photo)
    fat_put(part, "NOTES.TXT", b"remember\r\n")
    fat_put(part, "CACHE.TMP", b"junk")
    repo = tmp_path / "repo"
    first = backup(part, "--to", str(repo), "--exclude", "*.tmp", "--name", "fat")
    assert first["rc"] == 0 and first["files"] == 2, first  # *.tmp matched CACHE.TMP
    out = tmp_path / "out"
    run_recovery("extract", f"{repo}::fat", "/", "--to", str(out))
    names = {p.name.upper(): p for p in out.iterdir()}
    assert names["PHOTO.JPG"].read_bytes() == photo
    assert names["NOTES.TXT"].read_bytes() == b"remember\r\n"
    assert "CACHE.TMP" not in names


@pytest.mark.parametrize(("fstype", "size"), [("xfs", 320 * MiB), ("btrfs", 160 * MiB)])
def test_xfs_and_btrfs_are_read_without_log_replay(  # type: ignore[no-untyped-def]
    loop, tmp_path: Path, fstype: str, size: int
) -> None:
    if not loopdev.have(f"mkfs.{fstype}"):
        pytest.skip(f"needs mkfs.{fstype}")
    dev = loop(size)
    (part,) = loopdev.partition(dev, "label: gpt\ntype=linux\n")
    loopdev.run(f"mkfs.{fstype}", "-f", part)
    data = os.urandom(1_500_000)
    with mounted(part) as m:
        (m / "home" / "bob").mkdir(parents=True)
        (m / "home" / "bob" / "thesis.pdf").write_bytes(data)
        os.symlink("thesis.pdf", m / "home" / "bob" / "latest")
    before = hashlib.sha256(Path(part).read_bytes()).hexdigest()
    repo = tmp_path / "repo"
    result = backup(f"{part}:/home", "--to", str(repo), "--name", fstype)
    assert result["rc"] == 0 and result["files"] == 1, result
    assert hashlib.sha256(Path(part).read_bytes()).hexdigest() == before, "the source changed"
    out = tmp_path / "out"
    run_recovery("extract", f"{repo}::{fstype}", "/home/bob", "--to", str(out))
    assert (out / "bob" / "thesis.pdf").read_bytes() == data
    assert os.readlink(out / "bob" / "latest") == "thesis.pdf"
