"""Importing a Clonezilla image folder into a repository, without devices.

The folder is made here as Clonezilla lays it out (docs/CLONEZILLA.md) around a partclone image
from tests/unit/partclone_writer.py; the imported image is read back through the repository's
own StreamReader, so the check is against what a restore would write.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import pytest

from recovery.engine import clonezilla, clonezilla_import
from recovery.engine.progress import CancelToken, NullProgress
from recovery.errors import PeerImageError
from recovery.repository.images import cell_size_of, streams_of
from recovery.repository.maps import StreamReader
from recovery.repository.store import Repository
from tests.unit.partclone_writer import write_image

BS = 4096
SWAP_UUID = "0a1b2c3d-1111-2222-3333-444455556666"


def make_folder(root: Path) -> tuple[Path, dict[str, bytes]]:
    folder = root / "2026-11-26-img"
    folder.mkdir(parents=True)
    blocks: list[bytes | None] = [
        os.urandom(BS) if i % 7 in (0, 1) or 600 < i < 700 else None for i in range(1024)
    ]
    blocks[5] = bytes(BS)  # a used block that is all zero
    boot, hidden = os.urandom(440), os.urandom(2047 * 512)
    mbr = boot + bytes(6) + bytes(64) + b"\x55\xaa"
    files = {
        "disk": b"sda\n",
        "parts": b"sda1\n",
        "sda-pt.sf": (
            b"label: dos\nlabel-id: 0x1234abcd\ndevice: /dev/sda\nunit: sectors\n"
            b"sector-size: 512\n\n"
            b"/dev/sda1 : start=        2048, size=        8192, type=83, bootable\n"
            b"/dev/sda2 : start=       10240, size=        2048, type=82\n"
        ),
        "sda-pt.parted": b"Model: test\nDisk /dev/sda: 16384s\nSector size: 512B\n",
        "sda-mbr": mbr,
        "sda-hidden-data-after-mbr": hidden,
        "sda1.ext4-ptcl-img.gz": gzip.compress(write_image(blocks, BS, 0x20, 10, 1)),
        "swappt-sda2.info": f'UUID="{SWAP_UUID}"\nLABEL="swap0"\n'.encode(),
        "blkid.list": b'/dev/sda1: LABEL="root" UUID="1652b393-dd8b-40d0-8f03-6513d17a3e70" '
        b'TYPE="ext4"\n',
        "clonezilla-img": b"This image was saved by Clonezilla at 2026-11-26 10:00:00 UTC.\n",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    expected = {
        "p1": b"".join(b if b is not None else bytes(BS) for b in blocks),
        "boot": boot,
        "hidden": hidden,
    }
    return folder, expected


def read_stream(repo: Repository, image: str, sid: str) -> bytes:
    body = repo.read_manifest(image)
    where = repo.manifest_where(image)
    (s,) = [s for s in streams_of(body, where) if s.id == sid]
    return StreamReader(repo, s, cell_size_of(body, where), image).pread(0, s.size)


def test_import_reads_back_as_restore_would_write(tmp_path: Path) -> None:
    folder, expected = make_folder(tmp_path / "cz")
    listed = clonezilla.list_images(str(tmp_path / "cz"))
    assert [(i.name, i.status, i.created) for i in listed] == [
        ("2026-11-26-img", "clonezilla", "2026-11-26T10:00:00Z")
    ]
    assert [p.fstype for p in listed[0].partitions] == ["ext4", "swap"]

    repo_path = str(tmp_path / "repo")
    plan = clonezilla_import.plan_import(str(tmp_path / "cz"), folder.name, repo_path)
    result = clonezilla_import.run_import(plan, NullProgress(), CancelToken())
    assert result.image.name == "2026-11-26-img"
    repo = Repository.open(repo_path)
    assert read_stream(repo, plan.name, "p1") == expected["p1"]
    disk = read_stream(repo, plan.name, "disk")
    assert len(disk) == 16384 * 512
    assert disk[:440] == expected["boot"] and disk[510:512] == b"\x55\xaa"
    assert disk[512 : 2048 * 512] == expected["hidden"]
    body = repo.read_manifest(plan.name)
    p1 = next(s for s in body["streams"] if s["id"] == "p1")
    assert (p1["fstype"], p1["label"], p1["start"]) == ("ext4", "root", 2048 * 512)
    p2 = next(s for s in body["streams"] if s["id"] == "p2")
    assert (p2["method"], p2["uuid"], p2["label"]) == ("swap-header", SWAP_UUID, "swap0")
    if shutil.which("mkswap"):
        header = read_stream(repo, plan.name, "p2")[:4096]
        assert header[4086:4096] == b"SWAPSPACE2"

    # The same image again: deduplicated, only the maps are new.
    again = clonezilla_import.plan_import(str(tmp_path / "cz"), folder.name, repo_path, "again")
    second = clonezilla_import.run_import(again, NullProgress(), CancelToken())
    assert second.new_bytes < result.new_bytes // 10


def test_damaged_partclone_data_stops_the_import(tmp_path: Path) -> None:
    folder, _ = make_folder(tmp_path / "cz")
    f = folder / "sda1.ext4-ptcl-img.gz"
    raw = bytearray(gzip.decompress(f.read_bytes()))
    raw[len(raw) // 2] ^= 0x40
    f.write_bytes(gzip.compress(bytes(raw)))
    plan = clonezilla_import.plan_import(str(tmp_path / "cz"), folder.name, str(tmp_path / "r"))
    with pytest.raises(PeerImageError, match="crc32 expected"):
        clonezilla_import.run_import(plan, NullProgress(), CancelToken())
    assert Repository.open(str(tmp_path / "r")).image_names() == []


def test_lvm_image_is_refused_in_one_line(tmp_path: Path) -> None:
    folder, _ = make_folder(tmp_path / "cz")
    (folder / "lvm_vg_dev.list").write_text("vg0 /dev/sda1 xyz\n")
    with pytest.raises(PeerImageError, match="LVM") as e:
        clonezilla.find_image(str(tmp_path / "cz"), folder.name)
    assert "\n" not in e.value.message
    assert "LVM" in clonezilla.list_images(str(tmp_path / "cz"))[0].status


def test_cli_lists_and_names_clonezilla_images(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from recovery.cli import main

    make_folder(tmp_path / "cz")
    assert main(["images", str(tmp_path / "cz")]) == 0
    out = capsys.readouterr().out
    assert "2026-11-26-img" in out and "clonezilla" in out
    assert main(["verify", f"{tmp_path / 'cz'}::2026-11-26-img"]) == 0
    assert "intact" in capsys.readouterr().out
    assert main(["restore", f"{tmp_path / 'cz'}::nope", "/dev/null", "--yes"]) == 6
    err = capsys.readouterr().err
    assert "no image 'nope'" in err and "2026-11-26-img" in err


def test_export_formats_match_the_engine() -> None:
    from recovery.commands.export import FORMATS
    from recovery.engine.vdisk import FORMATS as ENGINE_FORMATS

    assert FORMATS == ENGINE_FORMATS


def test_import_into_an_encrypted_location(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Imported chunks are named by the location's keyed hash, so they read back."""
    from recovery.repository import sealing

    monkeypatch.setattr(sealing, "KDF_MEMORY_KIB", 8 * 1024)
    monkeypatch.setenv("RECOVERY_PASSPHRASE", "import passphrase")
    folder, expected = make_folder(tmp_path / "cz")
    repo_path = str(tmp_path / "encrypted")
    Repository.open(repo_path, create=True, encrypt=True)
    plan = clonezilla_import.plan_import(str(tmp_path / "cz"), folder.name, repo_path)
    clonezilla_import.run_import(plan, NullProgress(), CancelToken())
    repo = Repository.open(repo_path)
    assert read_stream(repo, plan.name, "p1") == expected["p1"]


def test_the_engine_api_treats_a_clonezilla_folder_as_a_location(tmp_path: Path) -> None:
    """What the TUI relies on (issue 17): the location picker finds a folder of Clonezilla
    images (as Clonezilla keeps them at the top of a partition, or one level down), the engine's
    list_images lists them with the mark, and restore_plan takes them only as a whole disk."""
    from recovery.engine import api
    from recovery.engine.locations import Locations, find_repositories
    from recovery.errors import UsageError

    partition = tmp_path / "usb"
    (partition / "lost+found").mkdir(parents=True)
    make_folder(partition / "partimag")
    cz = str(partition / "partimag")
    assert find_repositories(partition) == [cz]
    assert find_repositories(partition / "partimag") == [cz]
    assert find_repositories(partition / "partimag" / "2026-11-26-img") == []
    assert Locations().directory(cz).repositories == (cz,)

    listed = api.list_images(cz)
    assert [(i.name, i.clonezilla) for i in listed] == [("2026-11-26-img", True)]
    with pytest.raises(UsageError, match="restored as a whole disk"):
        api.restore_plan(cz, "2026-11-26-img", "/dev/null", partitions=[1])
    assert api.verify(cz, "2026-11-26-img").ok
