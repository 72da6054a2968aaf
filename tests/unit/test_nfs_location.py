"""nfs:// locations (issue 14): the parts that hold on any kernel.

The mount itself needs the kernel's NFS client, which this machine's kernel lacks (no modules
at all); tests/boot/test_network_live.py backs up to an NFS server through the live system's
kernel. Here: the address, the mount options, and the one-line refusal on a kernel without the
client, given before anything is made."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from recovery.devices import nfs
from recovery.errors import DeviceError
from recovery.repository.kinds import open_backend
from recovery.repository.nfs import NfsBackend
from recovery.repository.store import Repository


def test_proc_filesystems_is_read_into_names(tmp_path: Path) -> None:
    table = tmp_path / "filesystems"
    table.write_text("nodev\tsysfs\nnodev\ttmpfs\n\text4\nnodev\tnfs\nnodev\tnfs4\n")
    assert nfs.filesystems(str(table)) == {"sysfs", "tmpfs", "ext4", "nfs", "nfs4"}
    assert nfs.filesystems(str(tmp_path / "missing")) == set()


def test_mount_options_name_the_server_by_address_over_tcp() -> None:
    assert nfs.mount_options("10.0.2.2", None, "4.2") == (
        "vers=4.2,proto=tcp,port=2049,addr=10.0.2.2,soft,timeo=200,retrans=2"
    )
    assert "port=20490," in nfs.mount_options("10.0.2.2", 20490, "4.1")
    assert nfs.server_ip("127.0.0.1") == "127.0.0.1"
    assert nfs.server_ip("localhost") in ("127.0.0.1", "::1")
    with pytest.raises(DeviceError, match=r"NFS server no-such-host\.invalid not found"):
        nfs.server_ip("no-such-host.invalid")


def test_an_nfs_address_opens_an_nfs_backend_that_mounts_nothing_yet() -> None:
    backend = open_backend("nfs://10.0.2.2:20490/export/pc1")
    assert isinstance(backend, NfsBackend)
    assert backend.location == "nfs://10.0.2.2:20490/export/pc1"
    assert (backend.where.share, backend.where.path) == ("export", "pc1")
    assert backend.local_path() is None


@pytest.mark.skipif(
    "nfs4" in nfs.filesystems(), reason="this kernel has an NFS client: the refusal is not seen"
)
def test_a_kernel_without_nfs_is_one_line_saying_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(nfs, "MOUNTS", tmp_path / "mounts")
    with pytest.raises(DeviceError) as refused:
        Repository.open("nfs://127.0.0.1/export/pc1", create=True)
    message = refused.value.message
    assert "\n" not in message
    assert "nfs:// needs the kernel's NFS client" in message
    assert "the recovery live system has it" in message
    assert os.listdir(tmp_path) == []  # no mount folder, no local folder named nfs:
