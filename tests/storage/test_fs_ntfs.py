"""The NTFS reader on a real partition of a loop device, filled through ntfs-3g (FUSE).

The partition is read through FileSource over the whole disk at the partition's offset, as the
engine does. A fragmented pagefile.sys (hundreds of runs, so its data is spread over extension
records behind an $ATTRIBUTE_LIST) checks that its clusters are found and left out, and a copy
of only the used extents must be a clean volume whose files read back identically.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

import pytest

from recovery.core.extents import Extent
from recovery.filesystems.base import FileSource, open_filesystem
from recovery.filesystems.ntfs import Ntfs, Volume, find_system_files
from tests import loopdev

pytestmark = pytest.mark.skipif(
    not all(loopdev.have(t) for t in ("mkfs.ntfs", "ntfs-3g", "ntfsinfo", "ntfsfix")),
    reason="ntfs-3g (Debian package ntfs-3g) is not installed",
)

BASIC_DATA = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"


def mount(what: str | Path, where: Path, *options: str) -> None:
    loopdev.run("ntfs-3g", *options, str(what), str(where))


def unmount(where: Path) -> None:
    loopdev.run("umount", str(where))


def tree_hashes(root: Path, skip: set[str]) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_file() and rel not in skip:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def partition_range(part: str) -> tuple[int, int]:
    name = Path(part).name
    start = int(Path(f"/sys/class/block/{name}/start").read_text()) * 512
    size = int(Path(f"/sys/class/block/{name}/size").read_text()) * 512
    return start, size


def fragment_free_space(mnt: Path, files: int) -> None:
    """Fill the volume, then free every other cluster of ``files`` one-cluster files: the only
    free space left is 4 KiB holes, so what is written next gets one run per hole."""
    chunk = os.urandom(4096)
    for i in range(files):
        (mnt / f"hole{i}").write_bytes(chunk)
    # Exactly the free space: a write that fails for lack of space may leave clusters free.
    st = os.statvfs(mnt)
    left = st.f_bavail * st.f_frsize
    with open(mnt / "filler", "wb", buffering=0) as f:
        while left > 0:
            n = min(left, 1 << 20)
            f.write(os.urandom(n))
            left -= n
    # ntfs-3g places consecutive small files alternately in two areas, so freeing files 0, 1,
    # 4, 5, 8, 9, ... frees every other cluster of each area.
    for i in range(files):
        if i // 2 % 2 == 0:
            (mnt / f"hole{i}").unlink()


def fill(mnt: Path) -> None:
    """Files in folders, then a pagefile.sys fragmented into one-cluster holes."""
    (mnt / "Users" / "someone" / "Documents").mkdir(parents=True)
    for i in range(30):
        (mnt / "Users" / "someone" / "Documents" / f"doc{i}.bin").write_bytes(
            os.urandom(1000 + 9000 * i)
        )
    (mnt / "Windows").mkdir()
    (mnt / "Windows" / "small.txt").write_text("resident\n")
    fragment_free_space(mnt, 600)
    (mnt / "pagefile.sys").write_bytes(os.urandom(1_100_000))
    (mnt / "hiberfil.sys").write_bytes(bytes(4096) + os.urandom(20_000))


def test_ntfs_partition_round_trip(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dev = loop(64 << 20)
    (part,) = loopdev.partition(dev, f"label: gpt\nstart=2048, size=80000, type={BASIC_DATA}\n")
    loopdev.mkfs(part, "ntfs", "-c", "4096", "-L", "Windows")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mount(part, mnt)
    try:
        fill(mnt)
        before = tree_hashes(mnt, {"pagefile.sys", "hiberfil.sys"})
    finally:
        unmount(mnt)
    start, size = partition_range(part)

    fd = os.open(dev, os.O_RDONLY)
    try:
        source = FileSource(fd, start, size)
        fs = open_filesystem(source, "ntfs")
        assert isinstance(fs, Ntfs)
        assert fs.geometry.label == "Windows"
        assert fs.geometry.fs_size == size
        extents = list(fs.used_extents())
        fs.keep_system_files = True
        kept = list(fs.used_extents())

        # Against ntfs-3g's count of free clusters; the backup boot sector is the last sector.
        info = loopdev.run("ntfsinfo", "-m", part).stdout
        m = re.search(r"Free Clusters: (\d+)", info)
        assert m
        used = (fs.boot.total_clusters - int(m.group(1))) * fs.boot.cluster_size
        assert sum(n for _, n in kept) == used + 512
        assert kept[-1] == Extent(size - 512, 512)

        # pagefile.sys is spread over extension records; all its clusters are left out.
        vol = Volume(source, fs.boot)
        vol.open_mft()
        page = next(sf.record for sf in find_system_files(vol) if sf.name == "pagefile.sys")
        assert vol.record(page).find(0x20) is not None, "pagefile.sys should need an attribute list"
        data = vol.stream(vol.record(page), 0x80, "", "pagefile.sys")
        assert data is not None and len(data.runs) > 100
        page_bytes = sum(r.length for r in data.runs) * fs.boot.cluster_size
        hiber_bytes = -(-(4096 + 20_000) // fs.boot.cluster_size) * fs.boot.cluster_size
        left_out = sum(n for _, n in kept) - sum(n for _, n in extents)
        # hiberfil.sys is not in use (zero header): left out but for its header cluster.
        assert left_out == page_bytes + hiber_bytes - fs.boot.cluster_size
        assert any("Not stored: the contents of" in n for n in fs.geometry.notes)

        # The same answer through the partition node.
        pfd = os.open(part, os.O_RDONLY)
        try:
            via_node = Ntfs.open(FileSource(pfd, 0, size))
            assert list(via_node.used_extents()) == extents
        finally:
            os.close(pfd)

        copy = tmp_path / "copy.img"
        with open(copy, "wb") as out:
            out.truncate(size)
            for s, n in extents:
                out.seek(s)
                out.write(source.pread(s, n))
    finally:
        os.close(fd)

    check = subprocess.run(["ntfsfix", "-n", str(copy)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    mount(copy, mnt, "-o", "ro")
    try:
        assert tree_hashes(mnt, {"pagefile.sys", "hiberfil.sys"}) == before
        assert (mnt / "pagefile.sys").stat().st_size == 1_100_000
    finally:
        unmount(mnt)


def test_fragmented_mft(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """An MFT in hundreds of pieces: its own $DATA spread over extension records."""
    dev = loop(64 << 20)
    (part,) = loopdev.partition(dev, f"label: gpt\nstart=2048, size=80000, type={BASIC_DATA}\n")
    loopdev.mkfs(part, "ntfs", "-c", "4096")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mount(part, mnt)
    try:
        fragment_free_space(mnt, 1200)
        (mnt / "many").mkdir()
        names = []
        for i in range(2000):  # each new file takes an MFT record: the MFT grows into holes
            try:
                (mnt / "many" / f"e{i}").write_bytes(b"x")
            except OSError:
                break
            names.append(f"e{i}")
    finally:
        unmount(mnt)
    start, size = partition_range(part)
    fd = os.open(dev, os.O_RDONLY)
    try:
        source = FileSource(fd, start, size)
        fs = Ntfs.open(source)
        vol = Volume(source, fs.boot)
        mft = vol.open_mft()
        assert vol.record(0).find(0x20) is not None, "the MFT should need an attribute list"
        assert len(mft.runs) > 100
        extents = list(fs.used_extents())
        info = loopdev.run("ntfsinfo", "-m", part).stdout
        m = re.search(r"Free Clusters: (\d+)", info)
        assert m
        used = (fs.boot.total_clusters - int(m.group(1))) * fs.boot.cluster_size
        assert sum(n for _, n in extents) == used + 512
        copy = tmp_path / "copy.img"
        with open(copy, "wb") as out:
            out.truncate(size)
            for s, n in extents:
                out.seek(s)
                out.write(source.pread(s, n))
    finally:
        os.close(fd)
    check = subprocess.run(["ntfsfix", "-n", str(copy)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    listed = [
        n
        for n in loopdev.run("ntfsls", "-p", "/many", str(copy)).stdout.split()
        if n not in (".", "..")
    ]
    assert sorted(listed) == sorted(names)
