"""open, extract and close on a real image (issue 12, "Done when"): a GPT disk with a FAT32 EFI
partition, an ext4 root and an NTFS data partition is backed up with the CLI, opened, read,
compared with the original, extracted from, and closed; a damaged chunk gives EIO."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import loopdev
from tests.storage.disks import MiB, mounted, run_recovery
from tests.storage.open_disk import left_behind, make_open_disk

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (loop devices, mounts)")
ENV = dict(os.environ, MTOOLS_SKIP_CHECK="1")


def entry(p: Path, times: bool = True) -> tuple[object, ...]:
    st = p.lstat()
    if stat.S_ISLNK(st.st_mode):
        return ("link", os.readlink(p), st.st_uid, st.st_gid)
    try:
        xattrs = {n: os.getxattr(p, n) for n in os.listxattr(p, follow_symlinks=False)}
    except OSError as e:  # the FAT driver has no extended attributes at all
        if e.errno != errno.ENOTSUP:
            raise
        xattrs = {}
    what: tuple[object, ...] = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, xattrs)
    if times:
        what += (st.st_mtime_ns,)
    if stat.S_ISDIR(st.st_mode):
        return ("dir", *what)
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    return ("file", digest, st.st_size, *what)


def tree(root: Path, times: bool = True, dir_times: bool = True) -> dict[str, tuple[object, ...]]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if rel.startswith("lost+found"):
            continue
        e = entry(p, times and (dir_times or not p.is_dir()))
        out[rel] = e
    return out


def hard_links(root: Path) -> list[list[str]]:
    groups: dict[int, list[str]] = {}
    for p in root.rglob("*"):
        st = p.lstat()
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            groups.setdefault(st.st_ino, []).append(str(p.relative_to(root)))
    return sorted(sorted(g) for g in groups.values())


@pytest.fixture
def ntfs_mounted() -> Iterator:  # type: ignore[type-arg]
    made: list[Path] = []

    def mount(part: str) -> Path:
        d = Path(tempfile.mkdtemp(prefix="recovery-test-ntfs-"))
        loopdev.run("ntfs-3g", "-o", "ro", part, str(d))
        made.append(d)
        return d

    yield mount
    for d in made:
        loopdev.run("umount", str(d), check=False)
        d.rmdir()


def fat_files(part: str) -> dict[str, str]:
    """Every file of a FAT partition (upper-cased path -> sha256), read with mtools."""
    listing = subprocess.run(
        ["mdir", "-/", "-b", "-i", part, "::/"], check=True, env=ENV, capture_output=True, text=True
    ).stdout.split()
    out = {}
    for name in listing:
        data = subprocess.run(
            ["mtype", "-i", part, name], env=ENV, capture_output=True, check=False
        )
        if data.returncode == 0 and not name.endswith("/"):
            out[name.removeprefix("::/").upper()] = hashlib.sha256(data.stdout).hexdigest()
    return out


def view_fat_files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)).upper(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file() and p.name.upper() != "ESP"  # fusefat lists the volume label as a file
    }


def test_open_extract_close(loop, tmp_path: Path, ntfs_mounted) -> None:  # type: ignore[no-untyped-def]
    src, parts = make_open_disk(loop)
    repo = tmp_path / "repo"
    run_recovery("backup", src, "--to", str(repo), "--name", "img")
    want_fat = fat_files(parts[0])
    assert {"EFI/BOOT/BOOTX64.EFI", "EFI/BOOT/GRUB.CFG", "EFI/DEBIAN/SHIMX64.EFI"} <= set(want_fat)
    with mounted(parts[1], readonly=True) as m:
        want_ext4 = tree(m)
        want_ext4_links = hard_links(m)
    want_ntfs = tree(ntfs_mounted(parts[2]))

    view = tmp_path / "view"
    view.mkdir()
    r = run_recovery("open", f"{repo}::img", str(view), "--json")
    opened = json.loads(r.stdout)
    pid = opened["pid"]
    try:
        by_number = {p["number"]: p for p in opened["partitions"]}
        assert {n: p["fstype"] for n, p in by_number.items()} == {1: "vfat", 2: "ext4", 3: "ntfs"}
        assert all(p["mounted"] for p in by_number.values()), opened
        # The ext4's loop device reads the view with direct I/O: its bytes are not cached twice
        # (the view's page cache and the loop device's), which made open_read 1.27x, not 1.5x.
        backing = {
            Path(d, "loop/backing_file").read_text().strip(): Path(d, "loop/dio").read_text()
            for d in Path("/sys/block").glob("loop*")
            if Path(d, "loop/backing_file").exists()
        }
        assert backing.get(str(view / "p2.img")) == "1\n", backing
        assert sorted(os.listdir(view)) == [
            "disk.img",
            "p1",
            "p1.img",
            "p2",
            "p2.img",
            "p3",
            "p3.img",
        ]

        # Every file's bytes, mode, owner, times, links and xattrs as in the original.
        assert tree(view / "p2") == want_ext4
        assert hard_links(view / "p2") == want_ext4_links
        assert tree(view / "p3") == want_ntfs
        assert view_fat_files(view / "p1") == want_fat
        # What the FAT driver shows (modes, times): extract must keep it.
        seen_efi = tree(view / "p1" / "EFI")
        assert os.getxattr(view / "p2/home/alice/tagged.txt", "user.origin") == b"issue-12"

        # disk.img is the source disk where restore writes (here: everywhere the image holds
        # data), and pN.img is disk.img's bytes at the partition's offset.
        size = os.path.getsize(view / "disk.img")
        assert size == int(loopdev.run("blockdev", "--getsize64", src).stdout)
        restored = loop(size)
        run_recovery("restore", f"{repo}::img", restored, "--yes")
        with open(view / "disk.img", "rb") as a, open(restored, "rb") as b:
            for offset in range(0, size, 16 * MiB):
                assert a.read(16 * MiB) == b.read(16 * MiB), f"disk.img differs at {offset}"
        with open(view / "disk.img", "rb") as a, open(view / "p2.img", "rb") as p2:
            start = int(Path(f"/sys/class/block/{Path(parts[1]).name}/start").read_text()) * 512
            a.seek(start)
            assert a.read(8 * MiB) == p2.read(8 * MiB)

        # A second image open at the same time.
        other = tmp_path / "other"
        other.mkdir()
        r2 = run_recovery("open", f"{repo}::img", str(other), "--json")
        pid2 = json.loads(r2.stdout)["pid"]
        assert (other / "p2/etc/hostname").read_text() == "testbox\n"
        run_recovery("close", str(other))
        assert left_behind(other, pid2) == []

        # Opening into a folder in use is refused with one line.
        again = run_recovery("open", f"{repo}::img", str(view), check=False)
        assert again.returncode != 0 and len(again.stderr.strip().splitlines()) == 1
    finally:
        run_recovery("close", str(view))
    assert left_behind(view, pid) == []

    # extract: a folder from each file system.
    out = tmp_path / "out"
    r = run_recovery(
        "extract", f"{repo}::img", "p2:/home/alice", "p3:/Users/bob", "p1:/EFI", "--to", str(out)
    )
    assert "Copied" in r.stdout
    with mounted(parts[1], readonly=True) as m:
        assert tree(out / "alice") == tree(m / "home" / "alice")
        assert hard_links(out / "alice") == hard_links(m / "home" / "alice")
    ntfs = ntfs_mounted(parts[2])
    # ntfs-3g shows every file as 0777 root:root; the copy keeps what it shows.
    assert tree(out / "bob") == tree(ntfs / "Users" / "bob")
    assert hard_links(out / "bob") == [["Documents/small-link.txt", "Documents/small.txt"]]
    efi = {k: v for k, v in want_fat.items() if k.startswith("EFI/")}
    assert {f"EFI/{k}": v for k, v in view_fat_files(out / "EFI").items()} == efi
    assert tree(out / "EFI") == seen_efi

    # Never overwrites unless asked; refuses a folder inside the backup location.
    (out / "alice" / "notes.txt").write_text("changed\n")
    r = run_recovery("extract", f"{repo}::img", "p2:/home/alice", "--to", str(out), check=False)
    assert r.returncode == 3 and "--overwrite" in r.stderr
    assert (out / "alice" / "notes.txt").read_text() == "changed\n"
    run_recovery("extract", f"{repo}::img", "p2:/home/alice", "--to", str(out), "--overwrite")
    assert (out / "alice" / "notes.txt").read_text() == "thesis notes\n" * 100
    r = run_recovery("extract", f"{repo}::img", "p2:/etc", "--to", str(repo / "x"), check=False)
    assert r.returncode == 3 and "inside the backup location" in r.stderr
    assert not list(Path("/run/recovery").glob("extract-*"))


def test_damaged_chunk_gives_eio_for_its_file_only(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src, parts = make_open_disk(loop, big=24 * MiB)
    repo = tmp_path / "repo"
    run_recovery("backup", src, "--to", str(repo), "--name", "img")
    # Where big.bin's 5th MiB lies in the partition, and so which cell (chunk) holds it.
    block_size = int(
        next(
            ln
            for ln in loopdev.run("dumpe2fs", "-h", parts[1]).stdout.splitlines()
            if ln.startswith("Block size:")
        ).split()[-1]
    )
    block = int(
        loopdev.run(
            "debugfs", "-R", f"bmap /home/alice/big.bin {5 * MiB // block_size}", parts[1]
        ).stdout.split()[-1]
    )
    manifest = repo / "images" / "img.image"
    body = json.loads(manifest.read_bytes()[12:-32])
    stream = next(s for s in body["streams"] if s["id"] == "p2")
    cell = block * block_size // body["cell_size"]
    map_chunk = repo / "chunks" / stream["map"][0][:2] / stream["map"][0]
    import zstandard

    raw_map = map_chunk.read_bytes()
    records = (
        zstandard.ZstdDecompressor().decompress(raw_map[16:], max_output_size=2 << 20)
        if raw_map[5] == 1
        else raw_map[16:]
    )
    digest = records[cell * 40 + 8 : cell * 40 + 40].hex()
    chunk = repo / "chunks" / digest[:2] / digest
    blob = bytearray(chunk.read_bytes())
    blob[len(blob) // 2] ^= 0x55
    chunk.write_bytes(bytes(blob))

    view = tmp_path / "view"
    view.mkdir()
    opened = json.loads(run_recovery("open", f"{repo}::img", str(view), "--json").stdout)
    try:
        with pytest.raises(OSError) as e, open(view / "p2/home/alice/big.bin", "rb") as f:
            while f.read(MiB):
                pass
        assert e.value.errno == errno.EIO
        assert (view / "p2/home/alice/notes.txt").read_text() == "thesis notes\n" * 100
        assert (view / "p3/Users/bob/Documents/small.txt").read_text() == "hello from ntfs\n"
        log = Path(opened["log"]).read_text()
        assert digest in log and "EIO" in log

        # The backup location goes away (a pulled disk): reads not yet cached fail, at once.
        gone = tmp_path / "gone"
        repo.rename(gone)
        try:
            r = subprocess.run(
                ["timeout", "60", "cat", str(view / "p3/Users/bob/Documents/report.docx")],
                capture_output=True,
                text=True,
            )
            assert r.returncode == 1 and "Input/output error" in r.stderr, r
        finally:
            gone.rename(repo)
    finally:
        run_recovery("close", str(view))
    assert left_behind(view, opened["pid"]) == []
    Path(opened["log"]).unlink()  # kept by close because it recorded failed reads

    # extract copies what it can and names what it could not.
    r = run_recovery(
        "extract", f"{repo}::img", "p2:/home/alice", "--to", str(tmp_path / "out"), check=False
    )
    assert r.returncode == 7
    assert "p2:/home/alice/big.bin" in r.stdout and "damaged" in r.stdout
    assert not (tmp_path / "out" / "alice" / "big.bin").exists()
    assert (tmp_path / "out" / "alice" / "tagged.txt").read_text() == "has an xattr\n"
