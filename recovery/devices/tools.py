"""The external programs the engine runs, each described once, and whether they are here.

Called by the file system homes (:mod:`recovery.filesystems`), which say which programs each of
their actions runs, and by the engine's planners, which call :func:`require` over everything a
plan will run before the plan is accepted: a missing ``resize2fs`` is a refusal that names the
Debian package, given before the disk is written, not a failure after it (blivet's
``tasks/availability.py`` does the same).

A program is looked up on ``PATH`` the way :mod:`subprocess` will look it up when it runs, so
the answer here is the answer the run gets. :func:`run` and :func:`output` are the one place
those programs are started; they turn a missing program and a timeout into a result, never an
exception, because their callers report every outcome as a line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from recovery.errors import MissingTool


@dataclass(frozen=True)
class Tool:
    command: str
    package: str
    """The Debian package that installs ``command`` (what the message tells the person)."""
    used_for: str
    """What the engine runs it for (all of it; a plan's :class:`Need` says which part)."""


TOOLS: dict[str, Tool] = {
    t.command: t
    for t in (
        Tool("sfdisk", "fdisk", "reading and writing partition tables"),
        Tool("partx", "util-linux", "telling the kernel about new partitions (BLKPG)"),
        Tool("blkid", "util-linux", "recognising file systems"),
        Tool("udevadm", "udev", "refreshing what udev knows after a disk was written"),
        Tool(
            "mount",
            "mount",
            "mounting backup locations (NFS exports too), and the file systems of an open image",
        ),
        Tool(
            "umount",
            "mount",
            "unmounting backup locations, an open image, the view a file system is shrunk on "
            "and what was mounted to grow it",
        ),
        Tool("modprobe", "kmod", "loading the kernel's NFS client for an nfs:// location"),
        Tool("findmnt", "util-linux", "finding where a file backup's source is mounted"),
        Tool("fusermount3", "fuse3", "serving FUSE views (open, and a shrinking restore's view)"),
        Tool(
            "losetup",
            "mount",
            "attaching a virtual disk file, an open image's partitions, and a logical volume's "
            "bytes without device-mapper",
        ),
        Tool("qemu-img", "qemu-utils", "exporting to, and backing up, virtual disk files"),
        Tool(
            "ip",
            "iproute2",
            "showing network addresses, asking DHCP again and clearing an interface's addresses",
        ),
        Tool(
            "systemctl",
            "systemd",
            "having systemd-networkd take a static address (it restarts and reads its files)",
        ),
        Tool("mkswap", "util-linux", "recreating swap after a restore or clone"),
        Tool("e2fsck", "e2fsprogs", "checking ext2/3/4, and before growing it"),
        Tool("resize2fs", "e2fsprogs", "growing and shrinking ext2/3/4"),
        Tool("debugfs", "e2fsprogs", "looking inside ext2/3/4 without mounting it"),
        Tool("fsck.vfat", "dosfstools", "checking FAT"),
        Tool("mdir", "mtools", "looking inside FAT without mounting it"),
        Tool("ntfs-3g", "ntfs-3g", "mounting NTFS backup locations"),
        Tool("ntfs-3g.probe", "ntfs-3g", "asking whether Windows is hibernated before growing"),
        Tool("ntfsresize", "ntfs-3g", "growing and shrinking NTFS"),
        Tool("ntfsfix", "ntfs-3g", "checking NTFS"),
        Tool("ntfsls", "ntfs-3g", "looking inside NTFS without mounting it"),
        Tool("xfs_repair", "xfsprogs", "checking xfs"),
        Tool("xfs_growfs", "xfsprogs", "growing xfs (mounted)"),
        Tool("btrfs", "btrfs-progs", "checking and growing btrfs"),
        Tool("pvresize", "lvm2", "growing an LVM physical volume with its partition"),
        Tool("lvextend", "lvm2", "extending the logical volume that takes a PV's new space"),
        Tool(
            "efibootmgr",
            "efibootmgr",
            "adding a UEFI boot entry for a restored or cloned EFI system partition",
        ),
    )
}
"""Every program the engine runs, by command name."""


@dataclass(frozen=True)
class Need:
    """One program a plan will run, and what for (the end of "X is needed ...")."""

    command: str
    purpose: str
    """Completes "<command> is needed ...", e.g. "to grow ext4 on the target"."""

    @property
    def tool(self) -> Tool:
        return TOOLS[self.command]


def available(command: str, path: str | None = None) -> bool:
    """Whether ``command`` would be found on ``path`` (default: this process's PATH)."""
    return shutil.which(command, path=path) is not None


def unavailable(needs: Iterable[Need], path: str | None = None) -> list[str]:
    """Why each missing program is needed and which package installs it; empty when all are here.

    One line per missing program (the first purpose that names it), in the order asked.
    """
    reasons: list[str] = []
    seen: set[str] = set()
    for need in needs:
        if need.command in seen:
            continue
        seen.add(need.command)
        if not available(need.command, path):
            reasons.append(f"{need.command} is needed {need.purpose}: install {need.tool.package}")
    return reasons


def require(needs: Iterable[Need], path: str | None = None) -> None:
    """Raise :class:`MissingTool` naming every missing program and its package."""
    reasons = unavailable(needs, path)
    if reasons:
        raise MissingTool("; ".join(reasons) + "; nothing was written")


def _spawn(
    cmd: list[str],
    input: str | None,
    env: Mapping[str, str] | None,
    timeout: float | None,
) -> subprocess.CompletedProcess[str]:
    """``cmd`` run to its end with its output captured; ``env`` adds to ours."""
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        check=False,
        input=input,
        env=None if env is None else dict(os.environ, **env),
        timeout=timeout,
    )


def run(
    cmd: list[str],
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> tuple[int, str]:
    """Exit status and combined output of ``cmd``; 127 with a sentence when it is missing."""
    try:
        r = _spawn(cmd, input, env, timeout)
    except FileNotFoundError:
        return 127, f"{cmd[0]} is not installed"
    except subprocess.TimeoutExpired:
        return 124, f"{cmd[0]} did not finish in {timeout} s"
    return r.returncode, (r.stdout + r.stderr).strip()


def output(
    cmd: list[str],
    timeout: float = 60,
    env: Mapping[str, str] | None = None,
    any_status: bool = False,
) -> str:
    """Standard output of ``cmd`` when it succeeds; empty when it fails, is missing or hangs.

    ``any_status``: its output whatever its exit status (mdir exits non-zero for an empty
    directory, and on warnings after a listing).
    """
    try:
        r = _spawn(cmd, None, env, timeout)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return r.stdout if r.returncode == 0 or any_status else ""
