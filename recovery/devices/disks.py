"""The disks of this machine, as plain :class:`~recovery.devices.model.Disk` values.

Called by the ``disks`` command, the engine (to check sources and targets, and :func:`refresh`
after it writes a partition table) and the TUI (:class:`DiskWatcher` for hot-plug). It promises:

- :func:`list_disks` lists every disk a person could pick, and nothing else: no RAM disks, no
  unbacked loop devices, no empty drives (see :func:`recovery.devices.udev.skip_reason`).
- With udevd running, details come from udev's database; a device udev has not processed yet is
  probed with ``blkid -p``. Without udevd, one warning line goes to stderr (or to ``warn``) and
  the whole list comes from sysfs and ``blkid -p`` probing: the same fields, the same values.
  Setting ``RECOVERY_NO_UDEV=1`` in the environment forces that path (tests use it beside a
  running udevd).
- Sizes and offsets are bytes, read from sysfs; mount points come from ``/proc/self/mountinfo``
  and ``/proc/swaps`` (swap in use shows as ``[SWAP]``); the disk holding the live system's
  medium (``/run/live/medium``) is marked ``boot_medium``.
- Errors are :class:`~recovery.errors.DeviceError` with a message a person can act on.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from recovery.devices import udev
from recovery.devices.model import Disk, Partition
from recovery.devices.udev import (
    DISK_SYSATTRS,
    PARTITION_SYSATTRS,
    SWAP_MOUNTPOINT,
    SYS_BLOCK,
    BlockDevice,
)
from recovery.errors import DeviceError

NO_UDEV_WARNING = "udev is not running: disk details come from sysfs and blkid"
FORCE_SYSFS_ENV = "RECOVERY_NO_UDEV"
"""Set to ``1`` to read disks from sysfs and blkid even when udevd runs."""

LIVE_MEDIUM_MOUNTS = ("/run/live/medium", "/lib/live/mount/medium")
"""Where live-boot mounts the medium it booted from (Debian 12, and older releases)."""

BLKID_TIMEOUT = 20.0
"""Seconds one ``blkid -p`` may take: a failing disk can stall reads for long, and a slow
listing is better than a hung one."""

Warn = Callable[[str], None]

_warned = False
_warn_lock = threading.Lock()


def _warn_once_on_stderr(message: str) -> None:
    global _warned
    with _warn_lock:
        if _warned:
            return
        _warned = True
    print(f"recovery: warning: {message}", file=sys.stderr)


# --- the mount table -------------------------------------------------------------------------


@dataclass(frozen=True)
class MountTable:
    mountpoints: Mapping[str, str] = field(default_factory=dict)
    """``MAJOR:MINOR`` -> where it is mounted (the first mount of it), or ``[SWAP]``."""
    live_medium: frozenset[str] = frozenset()
    """``MAJOR:MINOR`` of the device the live system's medium is mounted from."""


_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape_mount_field(value: str) -> str:
    r"""The kernel writes space, tab, newline and backslash in paths as ``\040`` and so on."""
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), value)


def _rdev_of(path: str, stat_fn: Callable[[str], os.stat_result]) -> str | None:
    try:
        st = stat_fn(path)
    except OSError:
        return None
    if not stat.S_ISBLK(st.st_mode):
        return None
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"


def mount_table(
    mountinfo: str,
    swaps: str = "",
    stat_fn: Callable[[str], os.stat_result] = os.stat,
) -> MountTable:
    """Parse ``/proc/self/mountinfo`` and ``/proc/swaps`` text into a :class:`MountTable`.

    A mount's device number is the one mountinfo gives; for file systems that report an
    anonymous device (btrfs: major 0) the source path is looked up instead.
    """
    mountpoints: dict[str, str] = {}
    live: set[str] = set()
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 7 or "-" not in fields[6:]:
            continue
        sep = fields.index("-", 6)
        if len(fields) < sep + 3:
            continue
        number, mountpoint = fields[2], _unescape_mount_field(fields[4])
        source = _unescape_mount_field(fields[sep + 2])
        if number.startswith("0:"):
            if not source.startswith("/dev/"):
                continue
            resolved = _rdev_of(source, stat_fn)
            if resolved is None:
                continue
            number = resolved
        mountpoints.setdefault(number, mountpoint)
        if mountpoint in LIVE_MEDIUM_MOUNTS:
            live.add(number)
    for line in swaps.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 2 and fields[1] == "partition":
            swap = _rdev_of(_unescape_mount_field(fields[0]), stat_fn)
            if swap is not None:
                mountpoints.setdefault(swap, SWAP_MOUNTPOINT)
    return MountTable(mountpoints=mountpoints, live_medium=frozenset(live))


def read_mount_table() -> MountTable:
    def read(path: str) -> str:
        try:
            return Path(path).read_text()
        except OSError:
            return ""

    return mount_table(read("/proc/self/mountinfo"), read("/proc/swaps"))


# --- sysfs and blkid -------------------------------------------------------------------------


def _uevent(sysdir: Path) -> dict[str, str]:
    try:
        return udev.parse_properties((sysdir / "uevent").read_text())
    except OSError:
        return {}


def sysfs_block_devices() -> list[BlockDevice]:
    """Every block device from ``/sys/class/block``, with only the kernel's own properties."""
    devices: list[BlockDevice] = []
    try:
        entries = sorted(SYS_BLOCK.iterdir())
    except OSError as e:
        raise DeviceError(f"Cannot read {SYS_BLOCK}: {e}. Is /sys mounted?") from e
    for entry in entries:
        props = _uevent(entry)
        if not props:
            continue
        real = entry.resolve()
        props["DEVPATH"] = str(real)[len("/sys") :] if str(real).startswith("/sys/") else str(real)
        props["DEVNAME"] = "/dev/" + props.get("DEVNAME", entry.name).removeprefix("/dev/")
        props["SUBSYSTEM"] = "block"
        devtype = props.get("DEVTYPE", "")
        devices.append(
            BlockDevice(
                sysname=entry.name,
                devtype=devtype,
                parent=real.parent.name if devtype == "partition" else None,
                properties=props,
                initialized=False,
            )
        )
    return devices


def probe_with_blkid(paths: Iterable[str]) -> dict[str, dict[str, str]]:
    """``blkid -p -o udev`` for each path, run side by side: path -> udev-named properties.

    ``-o udev`` names the values as udev's database does (``ID_FS_LABEL_ENC`` with ``\\xHH``
    escapes), so the one conversion in :mod:`recovery.devices.udev` reads both. ``-p`` probes
    the device itself and ignores blkid's cache.
    """
    procs: dict[str, subprocess.Popen[str]] = {}
    results: dict[str, dict[str, str]] = {}
    for path in paths:
        try:
            procs[path] = subprocess.Popen(
                ["blkid", "-p", "-o", "udev", path],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        except OSError as e:
            raise DeviceError(
                f"Cannot run blkid to probe {path}: {e}. Install util-linux (blkid)."
            ) from e
    for path, proc in procs.items():
        try:
            out, _ = proc.communicate(timeout=BLKID_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            out = ""
        results[path] = udev.parse_properties(out)
    return results


# --- listing ---------------------------------------------------------------------------------


def _use_udev(use_udev: bool | None, warn: Warn | None) -> bool:
    if use_udev is not None:
        return use_udev
    if os.environ.get(FORCE_SYSFS_ENV) == "1":
        return False
    if udev.udev_running():
        return True
    (warn or _warn_once_on_stderr)(NO_UDEV_WARNING)
    return False


def _block_devices(use_udev: bool, warn: Warn | None) -> list[BlockDevice]:
    if use_udev:
        devices = udev.block_devices()
        if devices is not None:
            return devices
        (warn or _warn_once_on_stderr)(NO_UDEV_WARNING)
    return sysfs_block_devices()


def _disk_order(disk: Disk) -> tuple[bool, tuple[str, ...]]:
    """Real disks first, loop devices last; sdb before sdb10, nvme0n1 before nvme1n1."""
    parts = re.split(r"(\d+)", disk.path)
    return disk.transport == "loop", tuple(p.zfill(12) if p.isdigit() else p for p in parts)


def _build_disks(
    devices: list[BlockDevice], only: str | None = None
) -> tuple[list[Disk], dict[str, str]]:
    """Disks from block devices (``only``: just the disk of that kernel name).

    Returns the disks and, for each whole disk left out, why.
    """
    by_disk: dict[str, list[BlockDevice]] = {}
    disks: dict[str, BlockDevice] = {}
    for dev in devices:
        if dev.devtype == "disk":
            disks[dev.sysname] = dev
        elif dev.devtype == "partition" and dev.parent:
            by_disk.setdefault(dev.parent, []).append(dev)
    if only is not None:
        disks = {only: disks[only]} if only in disks else {}

    sysattrs: dict[str, dict[str, str]] = {}
    skipped: dict[str, str] = {}
    chosen: list[BlockDevice] = []
    for name, dev in disks.items():
        attrs = udev.read_sysattrs(name, DISK_SYSATTRS)
        reason = udev.skip_reason(dev.properties, attrs)
        if reason is not None:
            skipped[name] = reason
            continue
        sysattrs[name] = attrs
        chosen.append(dev)
        for part in by_disk.get(name, ()):
            sysattrs[part.sysname] = udev.read_sysattrs(part.sysname, PARTITION_SYSATTRS)

    # Devices udev has not processed (or all of them, without udev): probe them ourselves.
    members = [d for dev in chosen for d in (dev, *by_disk.get(dev.sysname, ()))]
    unprobed = [d for d in members if not d.initialized]
    probed = probe_with_blkid(udev.device_path(d.properties) for d in unprobed)

    def props_of(dev: BlockDevice) -> Mapping[str, str]:
        if dev.initialized:
            return dev.properties
        return {**dev.properties, **probed.get(udev.device_path(dev.properties), {})}

    mounts = read_mount_table()
    result = [
        udev.disk_from_properties(
            props_of(dev),
            [props_of(p) for p in by_disk.get(dev.sysname, ())],
            sysattrs,
            mounts.mountpoints,
            mounts.live_medium,
        )
        for dev in chosen
    ]
    result.sort(key=_disk_order)
    return result, skipped


def list_disks(*, use_udev: bool | None = None, warn: Warn | None = None) -> list[Disk]:
    """Every disk a person could pick, real disks first, then loop devices.

    ``use_udev``: None decides by whether udevd runs (and ``RECOVERY_NO_UDEV``); False forces
    sysfs and blkid. ``warn`` receives the one-line notice that udev is missing (default: print
    it on stderr, once per process).
    """
    disks, _ = _build_disks(_block_devices(_use_udev(use_udev, warn), warn))
    return disks


# --- finding one -----------------------------------------------------------------------------


def _block_node(path: str) -> tuple[str, Path]:
    """``MAJOR:MINOR`` and sysfs directory of a block device path (symlinks followed)."""
    try:
        st = os.stat(path)
    except FileNotFoundError as e:
        raise DeviceError(f"{path} does not exist. Run 'recovery disks' to see the disks.") from e
    except OSError as e:
        raise DeviceError(f"Cannot look at {path}: {e.strerror}.") from e
    if not stat.S_ISBLK(st.st_mode):
        raise DeviceError(
            f"{path} is not a block device. Give a disk such as /dev/sdb "
            "(run 'recovery disks' to see them)."
        )
    number = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    sysdir = Path("/sys/dev/block") / number
    if not sysdir.exists():
        raise DeviceError(f"{path} ({number}) is not known to the kernel any more; replug it.")
    return number, sysdir.resolve()


def _same_device(path: str, number: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" == number


def _find(path: str, use_udev: bool | None, warn: Warn | None) -> tuple[Disk, Partition | None]:
    number, sysdir = _block_node(path)
    is_partition = (sysdir / "partition").exists()
    disk_name = sysdir.parent.name if is_partition else sysdir.name
    devices = _block_devices(_use_udev(use_udev, warn), warn)
    disks, skipped = _build_disks(devices, only=disk_name)
    if not disks:
        reason = skipped.get(disk_name, "it is not a disk")
        what = f"/dev/{disk_name}" + (f" (the disk of {path})" if is_partition else "")
        raise DeviceError(f"{what} is not a disk recovery works with: {reason}.")
    disk = disks[0]
    if not is_partition:
        return disk, None
    for part in disk.partitions:
        if _same_device(part.path, number):
            return disk, part
    raise DeviceError(
        f"{path} is not among the partitions of {disk.path}. Run 'recovery disks' to see them."
    )


def find_disk(path: str, *, use_udev: bool | None = None, warn: Warn | None = None) -> Disk:
    """The whole disk at ``path`` (``/dev/sdb``, ``/dev/disk/by-id/...``).

    Raises DeviceError if the path is missing, not a block device, a partition, or a device
    :func:`list_disks` leaves out.
    """
    disk, part = _find(path, use_udev, warn)
    if part is not None:
        raise DeviceError(
            f"{path} is partition {part.number} of {disk.path}, not a whole disk. "
            f"Give the disk itself ({disk.path})."
        )
    return disk


def find_partition(
    path: str, *, use_udev: bool | None = None, warn: Warn | None = None
) -> tuple[Disk, Partition]:
    """The partition at ``path`` and the disk that holds it.

    Raises DeviceError if the path is missing, not a block device, or a whole disk.
    """
    disk, part = _find(path, use_udev, warn)
    if part is None:
        example = f" such as {disk.partitions[0].path}" if disk.partitions else ""
        raise DeviceError(
            f"{path} is a whole disk, not a partition. Give one of its partitions{example}."
        )
    return disk, part


# --- keeping the list current ----------------------------------------------------------------


def refresh(disk_path: str) -> None:
    """Make udev re-read a disk after its table or file systems were written, and wait for it.

    Without udevd there is nothing to refresh: sysfs and blkid are read fresh every time.
    """
    if os.environ.get(FORCE_SYSFS_ENV) == "1" or not udev.udev_running():
        return
    udev.refresh_device(disk_path)


@dataclass(frozen=True)
class DiskEvent:
    action: str
    """``added``, ``removed``, or ``changed`` (partitions, file systems or size changed)."""
    path: str
    disk: Disk
    """The disk as it is now; for ``removed``, as it was last seen."""


class DiskWatcher:
    """Reports disks appearing, disappearing and changing, from a background thread.

    ``callback(event)`` runs in the watcher's thread (a UI must hand the event to its own
    thread). "Added" and "removed" follow what :func:`list_disks` would show, not raw kernel
    events: attaching a file to a loop device adds a disk, detaching it removes one, and a card
    put into a reader adds one.
    """

    def __init__(
        self,
        callback: Callable[[DiskEvent], None],
        *,
        use_udev: bool | None = None,
        warn: Warn | None = None,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        self._callback = callback
        self._use_udev_arg = use_udev
        self._warn = warn
        self._on_error = on_error
        self._lock = threading.Lock()
        self._known: dict[str, Disk] = {}
        self._monitor: udev.BlockMonitor | None = None
        self._use_udev = True

    @property
    def disks(self) -> list[Disk]:
        """The disks as the watcher last saw them."""
        with self._lock:
            return sorted(self._known.values(), key=_disk_order)

    def start(self) -> None:
        """Start watching. The disks present now are known, not reported as added."""
        if self._monitor is not None:
            return
        self._use_udev = _use_udev(self._use_udev_arg, self._warn)
        monitor = udev.BlockMonitor(
            self._on_block_event, kernel_events=not self._use_udev, on_error=self._on_error
        )
        # Hold the lock from before the first event can arrive until the snapshot is taken, so
        # every event is compared with a state at least as old as itself.
        with self._lock:
            monitor.start()
            self._monitor = monitor
            disks, _ = _build_disks(_block_devices(self._use_udev, self._warn))
            self._known = {Path(d.path).name: d for d in disks}

    def stop(self) -> None:
        """Stop watching; when this returns, the callback is not called again."""
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            monitor.stop()

    def _on_block_event(self, action: str, device: BlockDevice) -> None:
        name = device.sysname if device.devtype == "disk" else device.parent
        if not name:
            return
        with self._lock:
            if self._monitor is None:
                return
            if action == "remove" and device.devtype == "disk":
                now = None
            else:
                devices = _block_devices(self._use_udev, self._warn)
                found, _ = _build_disks(devices, only=name)
                now = found[0] if found else None
            before = self._known.get(name)
            if now is not None:
                self._known[name] = now
            else:
                self._known.pop(name, None)
        if before is None and now is not None:
            self._callback(DiskEvent("added", now.path, now))
        elif before is not None and now is None:
            self._callback(DiskEvent("removed", before.path, before))
        elif before is not None and now is not None and before != now:
            self._callback(DiskEvent("changed", now.path, now))
