"""Partition tables on devices: read with ``sfdisk --json``, write with an sfdisk script.

Called by the engine (backup reads, restore and clone write). sfdisk (libfdisk) is used rather
than libparted because it reads and writes every identifier a restored system boots by: the GPT
disk GUID, partition GUIDs, names and attribute bits, and the MBR disk signature, in one script
format for GPT and MBR alike (pyparted exposes none of the GUIDs).

Where partitions should start on a disk (:func:`alignment_of`, which a shrunk layout follows;
docs/SHRINK.md) is read from the kernel's topology in sysfs, the same figures libparted reads;
libparted itself is not used: it opens the disk read-write (and fsyncs it on close) just to
answer that read-only question.

After writing, the kernel is told about partitions with BLKPG (``partx``), never BLKRRPART: a
kernel without partition parsers drops every partition on BLKRRPART, and on any kernel BLKPG
does not disturb partitions that are in use elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from recovery.core.layout import Alignment
from recovery.core.table import ALIGN, InvalidTable, Table, sfdisk_script
from recovery.devices.blockio import disk_lock, flush, sysfs_name
from recovery.devices.tools import TOOLS
from recovery.errors import DeviceError, MissingTool


def _run(cmd: list[str], input: str | None = None) -> subprocess.CompletedProcess[str]:
    with _tool(cmd[0]):
        return subprocess.run(cmd, input=input, text=True, capture_output=True, check=False)


@contextlib.contextmanager
def _tool(name: str) -> Iterator[None]:
    """Starting the program ``name`` in the block: MissingTool, saying which package has it,
    when it is not installed."""
    try:
        yield
    except FileNotFoundError as e:
        raise MissingTool(f"{name} is not installed: install {TOOLS[name].package}") from e


MAX_GRAIN = 64 << 20
"""A topology asking for a coarser grain than this is taken as a 1 MiB one (as libparted
does with sizes it cannot use)."""


def alignment_of(disk: str, sector_size: int) -> Alignment:
    """Where partitions should start on ``disk``: every ``optimal_io_size`` bytes (never finer
    than 1 MiB, the grain every partitioning tool uses by default), shifted by the disk's
    ``alignment_offset``; read-only, from sysfs."""
    name = sysfs_name(disk)
    base = Path(f"/sys/class/block/{name}")
    optimal = _sysfs_int(base / "queue" / "optimal_io_size")
    offset = _sysfs_int(base / "alignment_offset")
    grain = ALIGN if optimal <= 0 else math.lcm(ALIGN, optimal)
    if grain > MAX_GRAIN or grain % sector_size:
        grain = ALIGN
    return Alignment(grain // sector_size, (offset % grain) // sector_size)


def _sysfs_int(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0  # an old kernel, or a device without the attribute: no constraint


def read_table(disk: str) -> Table | None:
    """The partition table of ``disk``, or None when it has none."""
    r = _run(["sfdisk", "--json", disk])
    if r.returncode != 0:
        if "does not contain a recognized partition table" in r.stderr or not r.stdout.strip():
            return None
        raise DeviceError(f"cannot read the partition table of {disk}: {r.stderr.strip()}")
    try:
        data = json.loads(r.stdout)["partitiontable"]
        return Table.from_json(data)
    except (ValueError, KeyError, TypeError, InvalidTable) as e:
        raise DeviceError(f"cannot understand the partition table of {disk}: {e}") from e


def write_table(fd: int, disk: str, table: Table) -> None:
    """Write ``table`` onto ``disk`` (opened by the caller as ``fd``, O_EXCL) and tell the kernel.

    The caller holds the disk lock (see :func:`recovery.devices.blockio.disk_lock`) if it wants
    udev kept away for longer than this call.
    """
    script = sfdisk_script(table, disk)
    last = ""
    for attempt in range(8):
        r = _run(
            [
                "sfdisk",
                "--no-reread",
                "--no-tell-kernel",
                "--quiet",
                "--wipe",
                "always",
                "--wipe-partitions",
                "never",
                disk,
            ],
            input=script,
        )
        if r.returncode == 0:
            break
        last = r.stderr.strip()
        time.sleep(0.1 * (attempt + 1))
    else:
        raise DeviceError(f"cannot write the partition table of {disk}: {last}")
    flush(fd, disk)
    tell_kernel(disk)


def tell_kernel(disk: str) -> None:
    """Bring the kernel's partitions of ``disk`` in line with its table, through BLKPG."""
    for attempt in range(10):
        # A partition that something (udev's probe) holds open is not deleted, and adding it
        # then fails; it is let go within moments (seen here about once in ten restores).
        _run(["partx", "--delete", disk])
        r = _run(["partx", "--add", disk])
        if r.returncode == 0 or "no partitions" in r.stderr.lower():
            return
        time.sleep(0.2 * (attempt + 1))
    if r.returncode != 0:
        raise DeviceError(
            f"the kernel did not accept the new partitions of {disk}: {r.stderr.strip()}"
        )


def kernel_has(disk: str, table: Table) -> bool:
    """Whether the kernel's partitions of ``disk`` are exactly those of ``table`` (sysfs:
    the same numbers, starts and sizes, no others), so :func:`tell_kernel` has nothing to do."""
    base = Path("/sys/class/block") / sysfs_name(disk)
    have: dict[int, tuple[int, int]] = {}
    try:
        for part in base.iterdir():
            if (part / "partition").exists():
                have[int((part / "partition").read_text())] = (
                    int((part / "start").read_text()),
                    int((part / "size").read_text()),
                )
    except (OSError, ValueError):
        return False
    unit = table.sector_size // 512  # sysfs counts 512-byte sectors
    want = {e.number: (e.start * unit, e.size * unit) for e in table.entries}
    return have == want


def refresh_udev(disk: str) -> None:
    """Let udev re-probe ``disk`` and its partitions so what is shown next is current."""
    probe_udev(disk)
    settle_udev()


def probe_udev(disk: str) -> None:
    """The first half of :func:`refresh_udev`: udev starts probing ``disk`` and its partitions
    (reading them only) while the caller goes on; :func:`settle_udev` waits for it."""
    _run(["udevadm", "trigger", "--action=change", disk])


SETTLE_SECONDS = 20


def settle_udev() -> None:
    _run(["udevadm", "settle", f"--timeout={SETTLE_SECONDS}"])


@contextlib.contextmanager
def udev_probing(disk: str) -> Iterator[None]:
    """:func:`refresh_udev` around the caller's block, which must only read the disk (file
    system checks): udev probes it meanwhile, and ``udevadm settle`` waits beside the block,
    so it is usually done when the block is. Sound because the trigger's event is numbered
    before settle starts, and settle waits for every event up to the number it finds; a
    read-only open makes no new event. Saves settle's own 10-20 ms after a delta restore."""
    probe_udev(disk)
    with _tool("udevadm"):
        settling = subprocess.Popen(
            ["udevadm", "settle", f"--timeout={SETTLE_SECONDS}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    try:
        yield
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            settling.wait(SETTLE_SECONDS + 5)


__all__ = [
    "disk_lock",
    "kernel_has",
    "probe_udev",
    "read_table",
    "refresh_udev",
    "settle_udev",
    "tell_kernel",
    "udev_probing",
    "write_table",
]
