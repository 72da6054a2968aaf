"""Mounting an NFS export with the kernel's own NFS client, for an ``nfs://`` backup location.

Called by :class:`recovery.repository.nfs.NfsBackend` on its first operation. NFSv4 over TCP
only: one port (2049), no rpcbind, no mount protocol, no lock daemon, so nothing but the kernel
is needed. util-linux ``mount -t nfs4`` hands the options to mount(2) itself when nfs-common's
``mount.nfs4`` helper is not installed (the live system has none); the kernel then needs the
server's IP address in ``addr=``, since it does not resolve names, which :func:`server_ip` does.
A machine whose kernel has no NFS client (this project's build machines: no modules at all) is
told so in one line by :func:`require_client`, before anything is mounted.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

from recovery.devices import tools
from recovery.errors import DeviceError

MOUNTS = Path("/run/recovery/nfs")
"""Where exports are mounted: private to this program, in RAM."""

VERSIONS = ("4.2", "4.1")
"""Tried in this order: 4.2 and 4.1 need no callback channel to the client, which NAT (and
QEMU's user network) would block; 4.0 would."""

NFS_PORT = 2049


def filesystems(path: str = "/proc/filesystems") -> set[str]:
    try:
        text = Path(path).read_text()
    except OSError:
        return set()
    return {line.split()[-1] for line in text.splitlines() if line.split()}


def require_client() -> None:
    """Refuse, in one line, on a kernel without an NFS client. The client may be a module that
    is not loaded yet: ``modprobe nfs`` is tried once first (its failure says nothing more)."""
    if "nfs4" in filesystems():
        return
    tools.run(["modprobe", "nfs"], timeout=30)
    if "nfs4" not in filesystems():
        raise DeviceError(
            f"nfs:// needs the kernel's NFS client, and this kernel ({os.uname().release}) has "
            "none (no nfs4 in /proc/filesystems, no nfs module); the recovery live system has "
            "it. Elsewhere, give a folder where the export is mounted, or use smb:// or sftp://"
        )


def server_ip(host: str) -> str:
    """The server's address, for the kernel (an IPv4 one first when it has both)."""
    try:
        found = socket.getaddrinfo(host, NFS_PORT, type=socket.SOCK_STREAM)
    except OSError as e:
        raise DeviceError(f"NFS server {host} not found: {e.strerror or e}") from None
    found.sort(key=lambda f: f[0] != socket.AF_INET)
    return str(found[0][4][0])


def mount_options(ip: str, port: int | None, version: str) -> str:
    """``soft``: a server that goes away makes reads and writes fail with an error after about
    a minute (timeo is in tenths of a second, three tries), where ``hard`` would hang the
    backup for ever; the repository's write order keeps the location valid either way."""
    return f"vers={version},proto=tcp,port={port or NFS_PORT},addr={ip},soft,timeo=200,retrans=2"


def mount_export(host: str, port: int | None, export: str, target: Path) -> None:
    """Mount ``host``'s ``/export`` on ``target`` (made if missing). Each version of
    :data:`VERSIONS` is tried in turn; the last error is the one reported."""
    require_client()
    ip = server_ip(host)
    source = f"[{ip}]:/{export}" if ":" in ip else f"{ip}:/{export}"
    target.mkdir(parents=True, exist_ok=True)
    out = ""
    for version in VERSIONS:
        cmd = ["mount", "-t", "nfs4", "-o", mount_options(ip, port, version), source, str(target)]
        status, out = tools.run(cmd, timeout=120)
        if status == 0:
            return
    with contextlib.suppress(OSError):
        target.rmdir()
    shown = f"{host}:/{export}"
    raise DeviceError(f"could not mount the NFS export {shown}: {out or 'mount failed'}")


def unmount(target: Path) -> None:
    """Unmount ``target`` and remove the folder; lazily when still busy (an open file of a
    worker that is being stopped), so the program's end never waits on the server."""
    status, _ = tools.run(["umount", str(target)], timeout=120)
    if status != 0:
        tools.run(["umount", "-l", str(target)], timeout=30)
    with contextlib.suppress(OSError):
        target.rmdir()
