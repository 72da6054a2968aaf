"""Where backups can go and where they are: partitions with free space, repositories on them.

Called by the TUI's location picker (from worker threads: mounting and scanning block), and by
anything else that looks for backup locations on the machine's disks. Promises:
a partition is mounted under ``/run/recovery/mnt/<name>`` only when the person picks it;
read-only (with journal replay disabled, so nothing is written) to look for backups, read-write
only when it is chosen as the destination of a backup; partitions already mounted elsewhere are
used where they are. A repository is a directory holding a ``recovery-repo`` header whose
``format`` is ``recovery-repository`` (docs/FORMAT.md). Which file systems are offered and how
each is mounted (driver, read-only options) is their home's answer
(:class:`recovery.filesystems.base.Kind`). Errors are
:class:`recovery.errors.RecoveryError` subclasses; nothing here imports textual.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

from recovery.devices.model import Disk
from recovery.errors import DeviceError, Refused
from recovery.filesystems.base import kind_of
from recovery.peers.clonezilla import is_clonezilla_image
from recovery.repository.store import is_repository

MOUNT_ROOT = Path("/run/recovery/mnt")
DEFAULT_FOLDER = "recovery-backups"
"""The folder a backup goes into when a whole partition is picked as the location: the engine
initialises only a missing or empty directory, and a partition's root rarely is one."""


@dataclass(frozen=True)
class Location:
    """A partition that can hold backups, or a directory typed by the person."""

    device: str | None
    """The partition, or None for a plain directory."""
    label: str | None
    fstype: str | None
    size: int
    """Bytes of the partition (0 for a directory)."""
    mountpoint: str | None
    free: int | None
    """Bytes free, known once mounted."""
    repositories: tuple[str, ...] = ()
    """Repository directories found on it (absolute paths)."""
    writable: bool = False

    @property
    def name(self) -> str:
        if self.device:
            return self.device
        return self.mountpoint or "?"


def find_repositories(path: str | Path, depth: int = 2) -> list[str]:
    """Backup locations at ``path`` and in its subdirectories down to ``depth`` levels: our
    repositories, and folders holding Clonezilla image folders (restored and verified from
    there, read-only; Clonezilla keeps them at the top of its partition, its /home/partimag)."""
    root = Path(path)
    found: list[str] = []
    if is_repository(root):
        return [str(root)]
    if depth <= 0:
        return found
    try:
        children = sorted(e for e in root.iterdir() if e.is_dir() and not e.is_symlink())
    except OSError:
        return found
    if any(is_clonezilla_image(child) for child in children):
        return [str(root)]
    for child in children:
        found.extend(find_repositories(child, depth - 1))
    return found


def free_space(path: str | Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def current_mounts() -> dict[str, tuple[str, bool]]:
    """Device path -> (mount point, writable) from /proc/self/mounts (first mount wins)."""
    mounts: dict[str, tuple[str, bool]] = {}
    try:
        text = Path("/proc/self/mounts").read_text()
    except OSError:
        return mounts
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or not fields[0].startswith("/dev/"):
            continue
        device = os.path.realpath(_unescape(fields[0]))
        if device not in mounts:
            options = fields[3].split(",")
            mounts[device] = (_unescape(fields[1]), "rw" in options)
    return mounts


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


class Locations:
    """The real location finder: reads /proc/self/mounts, mounts with mount(8)."""

    def __init__(self, mount_root: Path = MOUNT_ROOT) -> None:
        self.mount_root = mount_root
        self._ours: list[str] = []

    def candidates(self, disks: list[Disk]) -> list[Location]:
        """Partitions of ``disks`` with a file system that can hold backups."""
        mounts = current_mounts()
        out: list[Location] = []
        for disk in disks:
            for p in disk.partitions:
                if kind_of((p.fstype or "").lower()).mount_type is None:
                    continue
                mountpoint, writable = mounts.get(os.path.realpath(p.path), (None, False))
                loc = Location(
                    device=p.path,
                    label=p.label or p.partlabel,
                    fstype=p.fstype,
                    size=p.size,
                    mountpoint=mountpoint,
                    free=None,
                    writable=writable,
                )
                out.append(self.inspect(loc) if mountpoint else loc)
        return out

    def inspect(self, loc: Location) -> Location:
        """Free space and repositories of a mounted location."""
        if not loc.mountpoint:
            return loc
        try:
            free = free_space(loc.mountpoint)
        except OSError:
            free = None
        return replace(loc, free=free, repositories=tuple(find_repositories(loc.mountpoint)))

    def directory(self, path: str) -> Location:
        """A typed directory (it need not exist yet: a backup creates it)."""
        p = Path(path)
        probe = p
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            free = free_space(probe)
        except OSError:
            free = None
        repos = tuple(find_repositories(p, depth=1)) if p.is_dir() else ()
        return Location(None, None, None, 0, str(p), free, repos, os.access(probe, os.W_OK))

    def mount(self, loc: Location, writable: bool) -> Location:
        """Mount ``loc`` (read-only unless ``writable``) and inspect it."""
        if loc.device is None:
            return self.inspect(loc)
        device = loc.device
        mounts = current_mounts()
        current = mounts.get(os.path.realpath(device))
        if current is not None:
            mountpoint, is_rw = current
            if writable and not is_rw:
                if not mountpoint.startswith(str(self.mount_root) + "/"):
                    raise Refused(
                        f"{device} is mounted read-only at {mountpoint} by someone else. "
                        "Unmount it, or pick another location."
                    )
                self._run_mount(["mount", "-o", "remount,rw", mountpoint], device)
                is_rw = True
            return self.inspect(replace(loc, mountpoint=mountpoint, writable=is_rw))
        try:
            is_block = stat.S_ISBLK(os.stat(device).st_mode)
        except OSError:
            is_block = False
        if not is_block:
            raise DeviceError(f"{device} is not a block device any more. Was it unplugged?")
        target = self.mount_root / _mount_name(device)
        target.mkdir(parents=True, exist_ok=True)
        fstype = (loc.fstype or "").lower()
        kind = kind_of(fstype)
        # The home knows the driver (NTFS: ntfs-3g) and the options that keep "ro" from writing.
        options = "rw" if writable else kind.read_only_options
        cmd = ["mount", "-o", options]
        driver = kind.mount_type or fstype
        if driver:
            cmd += ["-t", driver]
        self._run_mount([*cmd, device, str(target)], device)
        self._ours.append(str(target))
        return self.inspect(replace(loc, mountpoint=str(target), writable=writable))

    def _run_mount(self, cmd: list[str], device: str) -> None:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise DeviceError(f"Could not mount {device}: {e}. Pick another location.") from e
        if r.returncode != 0:
            why = (r.stderr or r.stdout).strip().splitlines()
            reason = why[-1] if why else f"mount exited with {r.returncode}"
            raise DeviceError(
                f"Could not mount {device}: {reason}. If it is a Windows partition, shut "
                "Windows down fully (no fast startup) first; or pick another location."
            )

    def search(self, loc: Location) -> Location:
        """Mount read-only (unless already mounted) and inspect; for "search everything"."""
        if loc.mountpoint:
            return self.inspect(loc)
        return self.mount(loc, writable=False)

    def unmount(self, loc: Location) -> Location:
        """Unmount ``loc`` if this object mounted it; otherwise leave it as it is."""
        if loc.mountpoint is None or loc.mountpoint not in self._ours:
            return loc
        r = subprocess.run(["umount", loc.mountpoint], capture_output=True, text=True, check=False)
        if r.returncode != 0:
            return loc
        self._ours.remove(loc.mountpoint)
        with contextlib.suppress(OSError):
            os.rmdir(loc.mountpoint)
        return replace(loc, mountpoint=None, free=None, repositories=(), writable=False)

    def release_all(self) -> None:
        """Unmount what this object mounted (the app calls this when it ends)."""
        for mountpoint in reversed(self._ours):
            r = subprocess.run(["umount", mountpoint], capture_output=True, check=False)
            if r.returncode == 0:
                with contextlib.suppress(OSError):
                    os.rmdir(mountpoint)
        self._ours.clear()


def _mount_name(device: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", Path(device).name) or "disk"
