"""Opening block devices safely, and the identity questions asked before writing to one.

Called by the engine. Promises: nothing is opened for writing unless it is a block device
(a missing partition node would otherwise become a regular file in /dev); a disk opened for
writing is opened O_EXCL, which the kernel refuses while any of its partitions is mounted or
otherwise held; library errors come back as DeviceError with the path and what to do.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import mmap
import os
import re
import stat
import threading
import time
from collections.abc import Collection, Iterator
from pathlib import Path

from recovery.errors import DeviceError, Refused

BLKGETSIZE64 = 0x80081272
BLKSSZGET = 0x1268
BLKZEROOUT = 0x127F
BLKFLSBUF = 0x1261


def is_block_device(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def require_block_device(path: str) -> None:
    if not os.path.exists(path):
        raise DeviceError(f"{path} does not exist: check the name with 'recovery disks'")
    if not is_block_device(path):
        raise DeviceError(f"{path} is not a block device: give a disk such as /dev/sdb")


def sysfs_name(path: str) -> str:
    """The kernel's name (``sda``, ``loop0p1``) of a block device path or symlink."""
    st = os.stat(path)
    link = Path(f"/sys/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
    return link.resolve().name


def whole_disk_of(path: str) -> str:
    """``/dev/sda`` for ``/dev/sda2`` (and for ``/dev/sda``)."""
    st = os.stat(path)
    sys = Path(f"/sys/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}").resolve()
    if (sys / "partition").exists():
        sys = sys.parent
    return f"/dev/{sys.name}"


def device_size(fd: int) -> int:
    import array

    buf = array.array("Q", [0])
    fcntl.ioctl(fd, BLKGETSIZE64, buf)
    return int(buf[0])


def logical_sector_size(fd: int) -> int:
    import array

    buf = array.array("i", [0])
    fcntl.ioctl(fd, BLKSSZGET, buf)
    return int(buf[0])


def size_of(path: str) -> int:
    fd = open_read(path)
    try:
        return device_size(fd)
    finally:
        os.close(fd)


def open_read(path: str) -> int:
    require_block_device(path)
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise DeviceError(f"cannot open {path}: {e.strerror}") from e


def open_exclusive_write(path: str) -> int:
    """Open a whole disk for writing, refusing while anything on it is mounted or held."""
    require_block_device(path)
    for attempt in range(20):
        try:
            return os.open(path, os.O_RDWR | os.O_EXCL | os.O_CLOEXEC)
        except OSError as e:
            if e.errno == errno.EBUSY:
                # udev may hold the disk for a moment while probing it; a mount holds it for good.
                if attempt < 19:
                    time.sleep(0.1)
                    continue
                raise Refused(
                    f"{path} is in use (a partition is mounted, or another program holds it): "
                    "unmount it and try again"
                ) from e
            raise DeviceError(f"cannot open {path} for writing: {e.strerror}") from e
    raise AssertionError("unreachable")


@contextlib.contextmanager
def disk_lock(fd: int) -> Iterator[None]:
    """systemd's block device locking: udev does not probe a disk while this is held."""
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def zero_range(fd: int, offset: int, length: int) -> None:
    """Make ``[offset, offset+length)`` read as zeros: BLKZEROOUT where it works, else writes."""
    import array

    if length <= 0:
        return
    try:
        fcntl.ioctl(fd, BLKZEROOUT, array.array("Q", [offset, length]))
        return
    except OSError:
        pass
    zeros = bytes(min(length, 8 << 20))
    done = 0
    while done < length:
        n = min(len(zeros), length - done)
        pwrite_all(fd, memoryview(zeros)[:n], offset + done)
        done += n


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise DeviceError(f"short write at byte {offset}")
        view = view[n:]
        offset += n


def flush(fd: int, what: str) -> None:
    """Push what was written to ``what`` (open as ``fd``) out to the device. A write that the
    device refused after it was accepted into memory (a dying disk, a pulled cable, a loop
    device whose backing file's file system is full) surfaces here, as one line."""
    try:
        os.fsync(fd)
    except OSError as e:
        raise write_failed(fd, None, e) from e


def write_failed(fd: int, offset: int | None, e: OSError) -> DeviceError:
    """The one line for a write to the disk open as ``fd`` that failed: the disk is then
    incomplete, whatever the reason."""
    try:
        what = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        what = "the target"
    where = f" at byte {offset}" if offset is not None else ""
    return DeviceError(
        f"cannot write to {what}{where}: {e.strerror}; was the disk removed, or is it failing? "
        f"{what} is incomplete"
    )


def mounted_devices() -> dict[str, str]:
    """``{"major:minor": mountpoint}`` for every mounted block device, swap included."""
    result: dict[str, str] = {}
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 4:
                result.setdefault(parts[2], parts[4].replace("\\040", " "))
    with contextlib.suppress(OSError), open("/proc/swaps") as f:
        for line in list(f)[1:]:
            dev = line.split()[0]
            with contextlib.suppress(OSError):
                st = os.stat(dev)
                result.setdefault(f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}", "[SWAP]")
    return result


def fstype_at(path: str) -> str | None:
    """The type of the file system that holds ``path`` ("ext4", "fuseblk", ...), as
    ``findmnt -T`` gives it: the mount with the longest mount point above the path's real
    location, the last one mounted where several share it; None when mountinfo is unreadable."""
    where = os.path.realpath(path)
    found: str | None = None
    longest = -1
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            parts, after = left.split(), right.split()
            if len(parts) < 5 or not after:
                continue
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[4])
            inside = point == "/" or where == point or where.startswith(point + "/")
            if inside and len(point) >= longest:
                found, longest = after[0], len(point)
    return found


def disk_members(disk: str) -> list[str]:
    """``major:minor`` of the disk and each of its partitions."""
    name = sysfs_name(disk)
    base = Path("/sys/class/block") / name
    out = [(base / "dev").read_text().strip()]
    for child in base.iterdir():
        if (child / "partition").exists():
            out.append((child / "dev").read_text().strip())
    return out


def mounts_on(disk: str) -> list[str]:
    """Mount points on the disk or its partitions, and the devices built on them (an active LVM
    volume or md array holds its partition as surely as a mount does)."""
    mounted = mounted_devices()
    return [mounted[m] for m in disk_members(disk) if m in mounted] + holders_of(disk)


def holders_of(disk: str) -> list[str]:
    """``"[held by NAME]"`` for each device-mapper or md device built on the disk or its
    partitions (NAME: the mapping's name, e.g. ``rhel-root``, or the md array's)."""
    base = Path("/sys/class/block") / sysfs_name(disk)
    members = [base, *(c for c in base.iterdir() if (c / "partition").exists())]
    out = []
    for member in members:
        with contextlib.suppress(OSError):
            for holder in sorted((member / "holders").iterdir()):
                name = holder.name
                with contextlib.suppress(OSError):
                    name = (holder / "dm" / "name").read_text().strip() or name
                out.append(f"[held by {name}]")
    return out


def disks_holding_path(path: str) -> list[str]:
    """The whole disks a write to ``path`` lands on: the disk of its file system and, when that
    is a loop device, the disk holding the loop's backing file (and so on)."""
    p = Path(path)
    while not p.exists():
        p = p.parent
    dev = os.stat(p).st_dev
    sysdir = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    if not sysdir.exists():
        return []  # tmpfs, network share, overlay: no block device holds it
    node = sysdir.resolve()
    if (node / "partition").exists():
        node = node.parent
    disks = [f"/dev/{node.name}"]
    backing = node / "loop" / "backing_file"
    if backing.exists():
        disks.extend(d for d in disks_holding_path(backing.read_text().strip()) if d not in disks)
    return disks


def holds_path(disk: str, path: str) -> bool:
    real = os.path.realpath(disk)
    return any(os.path.realpath(d) == real for d in disks_holding_path(path))


class _Buffers:
    """Page-aligned buffers for O_DIRECT, handed from thread to thread.

    Every thread that reads or writes with O_DIRECT needs an aligned buffer of a cell or so,
    and the engine's worker threads live for one phase (the measuring of a delta restore, its
    writing, the next file system): a buffer made per thread was new memory each time, and
    touching new memory costs a page fault per 4 KiB. A delta restore of the bench disk took
    16,000 such faults in these buffers alone (about 2 us each here). A thread now takes a
    buffer from here and gives it back when it ends, so the next phase's threads use the same
    pages. At most :data:`KEEP` bytes wait here; private mappings (shared ones, mmap's
    default, fault about half again as slowly)."""

    KEEP = 64 << 20
    SMALLEST = 4 << 20

    def __init__(self) -> None:
        self._free: list[mmap.mmap] = []
        self._lock = threading.Lock()

    def take(self, size: int) -> mmap.mmap:
        with self._lock:
            fits = [b for b in self._free if len(b) >= size]
            if fits:
                buf = min(fits, key=len)
                self._free.remove(buf)
                return buf
        size = -(-max(size, self.SMALLEST) // (1 << 20)) << 20
        return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)

    def give(self, buf: mmap.mmap) -> None:
        with self._lock:
            if buf.closed or sum(map(len, self._free)) + len(buf) > self.KEEP:
                return  # dropped: unmapped once no view of it is left
            self._free.append(buf)


_BUFFERS = _Buffers()


class _Held:
    """A thread's buffer from :data:`_BUFFERS`, given back when the thread (or the object whose
    ``threading.local`` holds it) goes away."""

    __slots__ = ("buf",)

    def __init__(self, size: int) -> None:
        self.buf = _BUFFERS.take(size)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # also at interpreter exit
            _BUFFERS.give(self.buf)


def _thread_buffer(local: threading.local, which: str, size: int) -> memoryview:
    """The first ``size`` bytes of this thread's aligned buffer ``which`` of ``local``, grown
    when too small (valid until the thread's next call for the same buffer)."""
    held: _Held | None = getattr(local, which, None)
    if held is None or len(held.buf) < size:
        held = _Held(size)
        setattr(local, which, held)  # the smaller one, if any, goes back to the pool
    return memoryview(held.buf)[:size]


class DirectWriter:
    """Writes to a block device with O_DIRECT, falling back to the given buffered descriptor.

    Large restores write through O_DIRECT so the data does not pass through (and evict) the
    page cache on its way to the device; pieces that are not sector-aligned, and devices that
    refuse O_DIRECT, go through ``fallback_fd``. Thread-safe: each thread has its own aligned
    buffer. The caller still fsyncs, to flush the device's own write cache.
    """

    def __init__(self, path: str, fallback_fd: int, sector: int = 512) -> None:
        self.fallback_fd = fallback_fd
        self.sector = sector
        self._local = threading.local()
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_DIRECT | os.O_CLOEXEC)
        except OSError:
            self.fd = -1

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _buffer(self, size: int, which: str = "buf") -> memoryview:
        return _thread_buffer(self._local, which, size)

    def matches(self, data: bytes | bytearray | memoryview, offset: int) -> bool:
        """Read ``len(data)`` bytes at ``offset`` back from the device and compare.

        With O_DIRECT the read comes from the device, not from what the page cache remembers
        of the write; unaligned pieces can only be compared through the cache.
        """
        n = len(data)
        if self.fd < 0 or offset % self.sector or n % self.sector:
            return os.pread(self.fallback_fd, n, offset) == bytes(data)
        buf = self._buffer(n, "check")
        done = 0
        while done < n:
            got = os.preadv(self.fd, [buf[done:]], offset + done)
            if got <= 0:
                return False
            done += got
        # A bytearray on the left compares with memcmp; memoryview == memoryview goes item by
        # item (70x slower on 4 MiB), and bytes.__eq__ does not take a memoryview at all.
        left = data if isinstance(data, bytearray) else bytearray(data)
        return left.__eq__(buf) is True

    def write_changed(self, data: bytes, offset: int, block: int) -> int:
        """Write only the ``block``-sized pieces of ``data`` that differ from what the device
        holds at ``offset`` now (read back with O_DIRECT first); the bytes written.

        Afterwards the device holds ``data`` there exactly as after :meth:`write`, provided
        nothing else writes it meanwhile (the caller holds it exclusively). Unaligned pieces
        and devices without O_DIRECT are written whole."""
        n = len(data)
        if self.fd < 0 or offset % self.sector or n % self.sector or block % self.sector:
            self.write(data, offset)
            return n
        held = self._buffer(n, "check")
        done = 0
        while done < n:
            got = os.preadv(self.fd, [held[done:]], offset + done)
            if got <= 0:
                raise DeviceError(f"the device ended at byte {offset + done}")
            done += got
        buf = self._buffer(n)
        buf[:] = data
        written = 0
        run_start = -1
        for pos in range(0, n + block, block):
            # bytes.startswith(view, pos) is a memcmp without copying either side
            # (memoryview == memoryview goes item by item).
            differs = pos < n and not data.startswith(held[pos : pos + block], pos)
            if differs and run_start < 0:
                run_start = pos
            elif not differs and run_start >= 0:
                end = min(pos, n)
                try:
                    pwrite_all(self.fd, buf[run_start:end], offset + run_start)
                except OSError as e:
                    if e.errno != errno.EINVAL:
                        raise
                    pwrite_all(self.fallback_fd, data[run_start:end], offset + run_start)
                written += end - run_start
                run_start = -1
        return written

    def write(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        n = len(data)
        if self.fd < 0 or offset % self.sector or n % self.sector:
            pwrite_all(self.fallback_fd, data, offset)
            return
        buf = self._buffer(n)
        buf[:] = data
        try:
            pwrite_all(self.fd, buf, offset)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            pwrite_all(self.fallback_fd, data, offset)


class DirectReader:
    """Reads a block device with O_DIRECT (from the device, not what the page cache holds),
    falling back to a buffered descriptor for unaligned pieces or devices that refuse it.

    Opened read-only: a descriptor opened for writing makes udev re-read the table when it is
    closed (ENVIRONMENT.md), so a plan that only looks at a target must never open it so.
    Thread-safe: each thread reads into its own aligned buffer, valid until its next read.
    """

    def __init__(self, path: str, sector: int = 512) -> None:
        self.sector = sector
        self._local = threading.local()
        self.fallback_fd = open_read(path)
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
        except OSError:
            self.fd = -1

    def close(self) -> None:
        for fd in (self.fd, self.fallback_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.fallback_fd = -1

    def read(self, offset: int, length: int) -> memoryview:
        """Exactly ``length`` bytes at ``offset``; DeviceError when the device ends first."""
        if self.fd < 0 or offset % self.sector or length % self.sector:
            data = os.pread(self.fallback_fd, length, offset)
            if len(data) != length:
                raise DeviceError(f"the device ended at byte {offset + len(data)}")
            return memoryview(data)
        view = _thread_buffer(self._local, "buf", length)
        done = 0
        while done < length:
            got = os.preadv(self.fd, [view[done:]], offset + done)
            if got <= 0:
                raise DeviceError(f"the device ended at byte {offset + done}")
            done += got
        return view


def writable_mounts(disk: str, numbers: Collection[int] | None = None) -> dict[str, str]:
    """``{device node: mount point}`` of the file systems on ``disk`` (only its partitions
    ``numbers`` when given) that are mounted read-write now.

    Read-write is the file system's own state (the super options of /proc/self/mountinfo),
    not one mount's: a read-only bind of a file system mounted read-write elsewhere still
    changes under a reader. Swap is not a mount and is not listed.
    """
    name = sysfs_name(disk)
    base = Path("/sys/class/block") / name
    wanted: dict[str, str] = {}
    if numbers is None:
        wanted[(base / "dev").read_text().strip()] = f"/dev/{name}"
    for child in base.iterdir():
        with contextlib.suppress(OSError, ValueError):
            number = int((child / "partition").read_text())
            if numbers is None or number in numbers:
                wanted[(child / "dev").read_text().strip()] = f"/dev/{child.name}"
    found: dict[str, str] = {}
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            parts, after = left.split(), right.split()
            if len(parts) < 5 or len(after) < 3 or parts[2] not in wanted:
                continue
            if "rw" in after[2].split(","):
                found.setdefault(wanted[parts[2]], parts[4].replace("\\040", " "))
    return found
