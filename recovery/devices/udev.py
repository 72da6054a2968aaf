"""udev's view of block devices, turned into the plain dataclasses of :mod:`recovery.devices.model`.

Called by :mod:`recovery.devices.disks` (listing, finding, the hot-plug watcher); the only module
of the project that imports pyudev. It promises:

- :func:`disk_from_properties` is pure: udev properties (as ``udevadm info --query=property
  --export`` prints them), a few sysfs attributes and the mount table in, a :class:`Disk` out.
  The sysfs+blkid path of :mod:`recovery.devices.disks` feeds it the same shape (``blkid -p -o
  udev`` prints udev's property names), so both paths give the same answer for the same disk.
- Sizes and offsets come from sysfs, which the kernel keeps current and always counts in 512-byte
  units, not from udev's database, which goes stale when nobody triggers a change event.
- :func:`skip_reason` says why a block device is not a disk a person would pick (RAM disks,
  unbacked loop devices, empty drives), so a listing and an error message agree.
- pyudev's exceptions do not leave this module; an unreadable udev is the same as no udev.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pyudev

from recovery.devices.model import Disk, Partition
from recovery.errors import DeviceError

SYS_BLOCK = Path("/sys/class/block")
UDEV_CONTROL = Path("/run/udev/control")
UDEV_DATA = Path("/run/udev/data")

SECTOR = 512
"""sysfs ``size`` and ``start``, and libblkid's PART_ENTRY_OFFSET/SIZE, count 512-byte units
whatever the logical sector size of the disk."""

DISK_SYSATTRS = (
    "size",
    "removable",
    "ro",
    "hidden",
    "queue/rotational",
    "queue/logical_block_size",
    "loop/backing_file",
    "serial",
    "device/model",
    "device/vendor",
    "device/serial",
    "device/name",
    "device/type",
    "device/vpd_pg80",
)
"""sysfs attributes, relative to ``/sys/class/block/NAME``, that a disk's conversion reads.
``device/vpd_pg80`` holds the SCSI unit serial number page; :func:`read_sysattrs` decodes it to
the serial text."""

PARTITION_SYSATTRS = ("partition", "start", "size")

SWAP_MOUNTPOINT = "[SWAP]"


@dataclass(frozen=True)
class BlockDevice:
    """One block device as udev (or sysfs and blkid) describe it; nothing of pyudev inside."""

    sysname: str
    """Kernel name: ``sda``, ``nvme0n1p2``, ``loop3``."""
    devtype: str
    """``disk`` or ``partition``."""
    parent: str | None
    """For a partition, the kernel name of its disk."""
    properties: Mapping[str, str]
    initialized: bool
    """udev has processed it: its database entry exists and holds the ID_* properties."""


# --- pure conversion -------------------------------------------------------------------------

_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")


def decode_udev_string(value: str) -> str:
    r"""Undo udev's and libblkid's ``\xHH`` escapes (the ``*_ENC`` properties, PART_ENTRY_NAME).

    The escapes stand for bytes of a UTF-8 string, so they are decoded as bytes first.
    """
    raw = _ESCAPE.sub(
        lambda m: bytes([int(m.group(1), 16)]), value.encode("utf-8", "surrogateescape")
    )
    return raw.decode("utf-8", "replace")


def _text(value: str | None) -> str | None:
    """Stripped text, or None for missing or blank values."""
    if value is None:
        return None
    value = " ".join(value.split())
    return value or None


def _prop(props: Mapping[str, str], name: str, exact: bool = False) -> str | None:
    """A property, preferring its ``_ENC`` form: the plain one has unsafe characters replaced.

    ``exact`` keeps the value as it is (labels: a person may have put two spaces in one), only
    an empty value becoming None; otherwise blanks are squeezed (models padded with spaces).
    """
    enc = props.get(name + "_ENC")
    value = decode_udev_string(enc) if enc is not None else props.get(name)
    if exact:
        return value or None
    return _text(value)


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def devnum(props: Mapping[str, str]) -> str | None:
    """``MAJOR:MINOR`` of a device, the key of the mount table."""
    major, minor = props.get("MAJOR"), props.get("MINOR")
    return f"{major}:{minor}" if major is not None and minor is not None else None


def sysname_of(props: Mapping[str, str]) -> str:
    devpath = props.get("DEVPATH")
    if devpath:
        return devpath.rstrip("/").rsplit("/", 1)[-1]
    return props.get("DEVNAME", "").rsplit("/", 1)[-1]


def device_path(props: Mapping[str, str]) -> str:
    name = props.get("DEVNAME") or sysname_of(props)
    return name if name.startswith("/") else "/dev/" + name


def skip_reason(props: Mapping[str, str], sysattrs: Mapping[str, str]) -> str | None:
    """Why this block device is not a disk a person would pick, or None if it is one."""
    name = sysname_of(props)
    if props.get("DEVTYPE") != "disk":
        return "it is a partition, not a whole disk"
    if name.startswith("zram"):
        return "it is a compressed RAM disk (zram)"
    if re.fullmatch(r"ram\d+", name):
        return "it is a RAM disk"
    if name.startswith("loop") and not sysattrs.get("loop/backing_file"):
        return "it is a loop device with no file attached"
    if name.startswith("loop") and sysattrs.get("loop/backing_file", "").startswith("/run/live/"):
        return "it is part of the running live system (its squashfs)"
    if name.startswith(("dm-", "md")):
        return "device-mapper and software RAID devices are not supported yet"
    if re.fullmatch(r"mmcblk\d+boot\d+", name):
        return "it is the boot area of an eMMC chip, not a disk"
    if name.startswith("mtdblock"):
        return "it is a raw flash chip (MTD), not a disk"
    if sysattrs.get("hidden") == "1":
        return "the kernel hides it (a path of a multipath NVMe namespace)"
    if (_int(sysattrs.get("size")) or 0) == 0:
        return "it holds no medium (an empty card reader or optical drive)"
    return None


def transport_of(props: Mapping[str, str]) -> str | None:
    """How the disk is attached, by what lsblk calls TRAN: usb, nvme, sata, ata, mmc, ..."""
    name = sysname_of(props)
    devpath = props.get("DEVPATH", "")
    bus = props.get("ID_BUS")
    if name.startswith("loop"):
        return "loop"
    # Before nvme and ata: a USB enclosure may hold either, and USB is what the person sees.
    if bus == "usb" or "/usb" in devpath:
        return "usb"
    if name.startswith("nvme") or "/nvme" in devpath:
        return "nvme"
    if name.startswith("mmcblk") or "/mmc_host/" in devpath:
        return "mmc"
    if bus == "ata" or props.get("ID_ATA") == "1" or "/ata" in devpath:
        # udev's ata_id says SATA explicitly; without it (no udev), libata hosts are SATA nearly
        # always, which is what lsblk reports too.
        if props.get("ID_ATA") == "1" and props.get("ID_ATA_SATA") != "1":
            return "ata"
        return "sata"
    if name.startswith("vd") or "/virtio" in devpath:
        return "virtio"
    if name.startswith("nbd"):
        return "nbd"
    if bus == "scsi" or re.search(r"/target\d+:", devpath):
        return "scsi"
    return _text(bus)


def _model(
    props: Mapping[str, str], sysattrs: Mapping[str, str], transport: str | None
) -> str | None:
    model = _prop(props, "ID_MODEL") or _text(sysattrs.get("device/model"))
    if transport == "mmc":
        model = _text(props.get("ID_NAME")) or _text(sysattrs.get("device/name")) or model
    vendor = _prop(props, "ID_VENDOR") or _text(sysattrs.get("device/vendor"))
    # USB and SCSI disks name the maker apart from the model ("SanDisk" + "Ultra"); ATA disks put
    # it in the model, and libata's SCSI vendor is just "ATA".
    if (
        model
        and vendor
        and transport in ("usb", "scsi")
        and vendor.upper() != "ATA"
        and not model.lower().startswith(vendor.lower())
    ):
        model = f"{vendor} {model}"
    return model


def _serial(props: Mapping[str, str], sysattrs: Mapping[str, str]) -> str | None:
    for value in (
        props.get("ID_SERIAL_SHORT"),
        props.get("ID_SERIAL") if "ID_SERIAL_SHORT" not in props else None,
        sysattrs.get("serial"),
        sysattrs.get("device/serial"),
        sysattrs.get("device/vpd_pg80"),
    ):
        text = _text(value)
        if text:
            return text
    return None


def partition_from_properties(
    props: Mapping[str, str],
    sysattrs: Mapping[str, str],
    mountpoints: Mapping[str, str],
) -> Partition:
    """One partition. Start and size from sysfs; udev's table entry only where sysfs lacks them.

    The kernel shows an MBR extended partition as a 1 KiB stub (enough for its first EBR), so
    its size is the table's, from libblkid's ID_PART_ENTRY_SIZE.
    """
    number = (
        _int(sysattrs.get("partition"))
        or _int(props.get("PARTN"))
        or _int(props.get("ID_PART_ENTRY_NUMBER"))
        or 0
    )
    start_sectors = _int(sysattrs.get("start"))
    if start_sectors is None:
        start_sectors = _int(props.get("ID_PART_ENTRY_OFFSET")) or 0
    size_sectors = _int(sysattrs.get("size"))
    if size_sectors is None:
        size_sectors = _int(props.get("ID_PART_ENTRY_SIZE")) or 0
    parttype = _text(props.get("ID_PART_ENTRY_TYPE"))
    parttype = parttype.lower() if parttype else None
    partition = Partition(
        path=device_path(props),
        number=number,
        start=start_sectors * SECTOR,
        size=size_sectors * SECTOR,
        fstype=_text(props.get("ID_FS_TYPE")),
        label=_prop(props, "ID_FS_LABEL", exact=True),
        uuid=_prop(props, "ID_FS_UUID", exact=True),
        partlabel=decode_udev_string(props.get("ID_PART_ENTRY_NAME", "")) or None,
        parttype=parttype,
        partuuid=_text(props.get("ID_PART_ENTRY_UUID")),
        mountpoint=mountpoints.get(devnum(props) or ""),
    )
    table_size = _int(props.get("ID_PART_ENTRY_SIZE"))
    if partition.extended and props.get("ID_PART_ENTRY_SCHEME") == "dos" and table_size:
        partition = replace(partition, size=table_size * SECTOR)
    return partition


def disk_from_properties(
    props: Mapping[str, str],
    partitions_props: Sequence[Mapping[str, str]],
    sysattrs: Mapping[str, Mapping[str, str]] | None = None,
    mountpoints: Mapping[str, str] | None = None,
    boot_devnums: Collection[str] = (),
) -> Disk:
    """A :class:`Disk` from udev properties of the disk and of its partitions.

    ``sysattrs`` maps a kernel name (``sda``, ``sda1``) to its sysfs attributes (names from
    :data:`DISK_SYSATTRS` and :data:`PARTITION_SYSATTRS`); ``mountpoints`` maps ``MAJOR:MINOR``
    to where that device is mounted; ``boot_devnums`` holds the ``MAJOR:MINOR`` of the device
    mounted as the live system's medium.
    """
    sysattrs = sysattrs or {}
    mountpoints = mountpoints or {}
    disk_attrs = sysattrs.get(sysname_of(props), {})
    transport = transport_of(props)
    partitions = sorted(
        (
            partition_from_properties(p, sysattrs.get(sysname_of(p), {}), mountpoints)
            for p in partitions_props
        ),
        key=lambda p: (p.number, p.path),
    )
    removable = (
        disk_attrs.get("removable") == "1"
        or transport == "usb"
        or (transport == "mmc" and disk_attrs.get("device/type") == "SD")
    )
    size_sectors = _int(disk_attrs.get("size"))
    table = _text(props.get("ID_PART_TABLE_TYPE"))
    own_devnums = {devnum(props)} | {devnum(p) for p in partitions_props}
    return Disk(
        path=device_path(props),
        size=(size_sectors or 0) * SECTOR,
        model=_model(props, disk_attrs, transport),
        serial=_serial(props, disk_attrs),
        transport=transport,
        removable=removable,
        rotational=disk_attrs.get("queue/rotational") == "1",
        table=table.lower() if table else None,
        ptuuid=_text(props.get("ID_PART_TABLE_UUID")),
        logical_sector_size=_int(disk_attrs.get("queue/logical_block_size")) or SECTOR,
        partitions=tuple(partitions),
        boot_medium=bool(own_devnums & set(boot_devnums)),
        backing_file=_text(disk_attrs.get("loop/backing_file")),
        read_only=disk_attrs.get("ro") == "1",
        fstype=_text(props.get("ID_FS_TYPE")),
        label=_prop(props, "ID_FS_LABEL", exact=True),
        uuid=_prop(props, "ID_FS_UUID", exact=True),
        mountpoint=mountpoints.get(devnum(props) or ""),
    )


def parse_properties(text: str) -> dict[str, str]:
    """``KEY=value`` or ``KEY='value'`` lines (``udevadm info --export``, ``blkid -o udev``)."""
    props: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if not sep or not key or key.startswith("#"):
            continue
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        props[key] = value
    return props


# --- sysfs -----------------------------------------------------------------------------------


def read_sysattrs(sysname: str, names: Sequence[str]) -> dict[str, str]:
    """The named sysfs attributes of ``/sys/class/block/SYSNAME`` that exist, as stripped text."""
    base = SYS_BLOCK / sysname
    attrs: dict[str, str] = {}
    for name in names:
        try:
            raw = (base / name).read_bytes()
        except OSError:
            continue
        if name == "device/vpd_pg80":
            # SCSI VPD page 0x80: 4-byte header, byte 3 the length of the serial that follows.
            if len(raw) < 4:
                continue
            raw = raw[4 : 4 + raw[3]]
        attrs[name] = raw.decode("utf-8", "replace").strip().strip("\x00")
    return attrs


# --- pyudev ---------------------------------------------------------------------------------


def udev_running() -> bool:
    """udevd is running and has a database (the condition for trusting udev's properties)."""
    return UDEV_CONTROL.exists() and UDEV_DATA.is_dir()


def _parent_of(devpath: str, devtype: str) -> str | None:
    if devtype != "partition":
        return None
    parts = devpath.rstrip("/").split("/")
    return parts[-2] if len(parts) >= 2 else None


def _block_device(device: pyudev.Device) -> BlockDevice:
    props = {str(k): str(v) for k, v in device.properties.items()}
    devtype = props.get("DEVTYPE", "")
    return BlockDevice(
        sysname=str(device.sys_name),
        devtype=devtype,
        parent=_parent_of(props.get("DEVPATH", ""), devtype),
        properties=props,
        initialized=bool(device.is_initialized),
    )


def block_devices() -> list[BlockDevice] | None:
    """Every block device the kernel has, with udev's properties; None if udev cannot be read.

    The enumeration walks sysfs, so it lists what exists now; the properties come from udev's
    database and are as current as the last event udevd processed.
    """
    try:
        context = pyudev.Context()
        return [_block_device(d) for d in context.list_devices(subsystem="block")]
    except (ImportError, OSError, LookupError, ValueError):
        # ImportError: pyudev loads libudev.so.1 only here, and a system may lack it.
        return None


class BlockMonitor:
    """Block device events from a background thread: ``callback(action, device)``.

    ``action`` is the kernel's (``add``, ``change``, ``remove``). With ``kernel_events`` the
    events come straight from the kernel (no udevd needed, no ID_* properties); otherwise from
    udevd after its rules ran, so the database is current when the callback runs. The callback
    runs in the monitor thread; an exception in it goes to ``on_error`` and the monitor goes on.
    """

    def __init__(
        self,
        callback: Callable[[str, BlockDevice], None],
        kernel_events: bool = False,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        self._callback = callback
        self._kernel_events = kernel_events
        self._on_error = on_error
        self._observer: pyudev.MonitorObserver | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start receiving; events from this moment on reach the callback."""
        with self._lock:
            if self._observer is not None:
                return
            try:
                context = pyudev.Context()
                monitor = pyudev.Monitor.from_netlink(
                    context, source="kernel" if self._kernel_events else "udev"
                )
                monitor.filter_by("block")
                monitor.start()
            except (ImportError, OSError, ValueError) as e:
                raise DeviceError(
                    f"Cannot watch for disks being plugged in or removed: {e}. "
                    "Run recovery as root; until then, list the disks again by hand."
                ) from e
            observer = pyudev.MonitorObserver(
                monitor, callback=self._dispatch, name="recovery-disk-watcher"
            )
            observer.start()
            self._observer = observer

    def _dispatch(self, device: pyudev.Device) -> None:
        try:
            self._callback(str(device.action or ""), _block_device(device))
        except Exception as e:  # the thread must outlive a failing callback
            if self._on_error is not None:
                with contextlib.suppress(Exception):
                    self._on_error(e)

    def stop(self) -> None:
        """Stop; when this returns, the callback is not called again."""
        with self._lock:
            observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()


def refresh_device(path: str, timeout: float = 30.0) -> None:
    """Make udevd probe a disk and its partitions again, and wait until it has.

    ``udevadm trigger --action=change --settle`` waits for the disk's own event; the ``settle``
    after it waits for the partition events udevd queues from it.
    """
    try:
        for cmd in (
            ["udevadm", "trigger", "--action=change", "--settle", path],
            ["udevadm", "settle", f"--timeout={max(1, int(timeout))}"],
        ):
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
            if r.returncode != 0:
                raise DeviceError(
                    f"udev could not re-read {path}: {r.stderr.strip() or 'udevadm failed'}. "
                    "The disk list may show the old partitions; unplug and replug the disk "
                    "or restart recovery."
                )
    except subprocess.TimeoutExpired as e:
        raise DeviceError(
            f"udev did not finish re-reading {path} within {timeout:.0f} s. "
            "The disk list may show the old partitions; list the disks again in a moment."
        ) from e
    except OSError as e:
        raise DeviceError(
            f"Cannot run udevadm to re-read {path}: {e}. Install the udev package."
        ) from e
