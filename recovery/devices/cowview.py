"""A copy-on-write view of one partition as a file: reads come from the device, writes stay in
memory, bounded; the device is never written.

Called by :mod:`recovery.engine.journal`, which runs a file system's own journal replay
(``e2fsck -E journal_only``) on :attr:`CowView.path` and then reads the partition through the
pages replay wrote (:class:`~recovery.core.overlay.Overlay`). The view is a FUSE file (mfusepy
over libfuse 3, as ``recovery open`` uses) served by a forked child process, so libfuse's signal
handlers and threads stay out of the engine's process; the device is opened read-only there.
When the view closes, the child hands its pages back through a pipe and ends.

Bounded memory: at most ``limit`` bytes of pages (a write past it fails with ENOSPC, so the
replay fails and the caller falls back to imaging every block); a journal's replay writes at
most about as many blocks as the journal holds.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import shutil
import stat
import struct
import subprocess
import tempfile
import threading
import time
from typing import Any

from recovery.core.overlay import PAGE, Overlay, PageWriter
from recovery.errors import DeviceError

OVERLAY_LIMIT = 256 << 20
"""The most bytes replay may write into a view (pages of 4 KiB)."""
READY_TIMEOUT = 30.0
NAME = "part.img"
_END = struct.Struct("<cQ?")
"""After the pages: b"E", how many pages came, whether a write was refused (limit reached)."""
_PAGE_HEAD = struct.Struct("<Q")


def _fuse() -> Any:
    # libfuse 3 (Debian's fuse3 package: libfuse3-3 and fusermount3), chosen before import.
    os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
    import mfusepy

    return mfusepy


class _DeviceRange:
    """``pread`` over ``[start, start + size)`` of an open device."""

    def __init__(self, fd: int, start: int, size: int) -> None:
        self.fd = fd
        self.start = start
        self.size = size

    def pread(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        out = bytearray()
        while len(out) < length:
            got = os.pread(self.fd, length - len(out), self.start + offset + len(out))
            if not got:
                break
            out += got
        return bytes(out)


class CowView:
    """``with CowView(device, start, size) as view:`` run a tool on ``view.path``; then
    :meth:`overlay` gives what it wrote (after the view is closed)."""

    def __init__(self, device: str, start: int, size: int, limit: int = OVERLAY_LIMIT) -> None:
        self.device = device
        self.start = start
        self.size = size
        self.limit = limit
        self.dir = ""
        self._pid = 0
        self._pipe = -1
        self._overlay: Overlay | None = None
        self.overflowed = False
        """A write was refused because the view's memory limit was reached."""

    @property
    def path(self) -> str:
        return os.path.join(self.dir, NAME)

    def __enter__(self) -> CowView:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        if not os.path.exists("/dev/fuse") or shutil.which("fusermount3") is None:
            raise DeviceError("FUSE is not available here (/dev/fuse and fusermount3 of fuse3)")
        fuse = _fuse()  # imported before the fork, not in the child
        self.dir = tempfile.mkdtemp(prefix="recovery-cow-")
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the forked process
            try:
                os.close(r)
                _serve(fuse, self.device, self.start, self.size, self.limit, self.dir, w)
            finally:
                os._exit(0)
        os.close(w)
        self._pid, self._pipe = pid, r
        ready, _, _ = select.select([r], [], [], READY_TIMEOUT)
        first = os.read(r, 1) if ready else b""
        if first != b"R":
            self._end(unmount=True)
            raise DeviceError(f"the copy-on-write view of {self.device} did not start")
        # The kernel answers the first stat once the mount is in place.
        for _ in range(100):
            with contextlib.suppress(OSError):
                if os.stat(self.path).st_size == self.size:
                    return
            time.sleep(0.05)
        self._end(unmount=True)
        raise DeviceError(f"the copy-on-write view of {self.device} did not appear")

    def close(self) -> None:
        if self._pid:
            self._end(unmount=True)

    def overlay(self) -> Overlay:
        """What was written into the view (only after :meth:`close`)."""
        if self._overlay is None:
            raise DeviceError(f"the copy-on-write view of {self.device} ended without its pages")
        return self._overlay

    def _end(self, unmount: bool) -> None:
        if unmount and self.dir:
            for _ in range(50):
                r = subprocess.run(["fusermount3", "-u", self.dir], capture_output=True)
                if r.returncode == 0 or not _mounted(self.dir):
                    break
                time.sleep(0.1)
            else:
                subprocess.run(["fusermount3", "-u", "-z", self.dir], capture_output=True)
        data = bytearray()
        if self._pipe >= 0:
            while True:
                ready, _, _ = select.select([self._pipe], [], [], 60)
                chunk = os.read(self._pipe, 1 << 20) if ready else b""
                if not chunk:
                    break
                data += chunk
            os.close(self._pipe)
            self._pipe = -1
        if self._pid:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self._pid, 0)
            self._pid = 0
        if self.dir:
            with contextlib.suppress(OSError):
                os.rmdir(self.dir)
        self._overlay = self._parse(bytes(data))

    def _parse(self, data: bytes) -> Overlay | None:
        if len(data) < _END.size:
            return None
        mark, count, refused = _END.unpack_from(data, len(data) - _END.size)
        record = _PAGE_HEAD.size + PAGE
        if mark != b"E" or len(data) != count * record + _END.size:
            return None
        self.overflowed = refused
        pages = {}
        for i in range(count):
            pos = i * record
            (index,) = _PAGE_HEAD.unpack_from(data, pos)
            pages[index] = data[pos + _PAGE_HEAD.size : pos + record]
        return Overlay(pages)


def _mounted(directory: str) -> bool:
    with contextlib.suppress(OSError), open("/proc/self/mounts") as f:
        return any(line.split()[1] == directory for line in f if line.strip())
    return False


def _serve(
    fuse: Any, device: str, start: int, size: int, limit: int, directory: str, w: int
) -> None:  # pragma: no cover - runs in the forked process
    """The child: serve the view until unmounted, then hand the pages back through ``w``."""
    # libfuse writes notices to stdout/stderr: they must not land in a TUI's screen.
    null = os.open(os.devnull, os.O_RDWR)
    for std in (0, 1, 2):
        os.dup2(null, std)
    os.close(null)
    fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    writer = PageWriter(_DeviceRange(fd, start, size), limit)
    mutex = threading.Lock()
    refused = False
    now = time.time_ns()
    path = "/" + NAME

    class View(fuse.Operations):  # type: ignore[misc]
        use_ns = True

        def init(self, p: str) -> None:
            os.write(w, b"R")

        def getattr(self, p: str, fh: int | None = None) -> dict[str, int]:
            times = {"st_atime": now, "st_mtime": now, "st_ctime": now, "st_uid": 0, "st_gid": 0}
            if p == "/":
                return {**times, "st_mode": stat.S_IFDIR | 0o700, "st_nlink": 2}
            if p == path:
                return {**times, "st_mode": stat.S_IFREG | 0o600, "st_nlink": 1, "st_size": size}
            raise fuse.FuseOSError(errno.ENOENT)

        def readdir(self, p: str, fh: int) -> list[str]:
            return [".", "..", NAME]

        def open(self, p: str, flags: int) -> int:
            if p != path:
                raise fuse.FuseOSError(errno.ENOENT)
            return 0

        def read(self, p: str, length: int, offset: int, fh: int) -> bytes:
            with mutex:
                return writer.read(offset, length)

        def write(self, p: str, data: bytes, offset: int, fh: int) -> int:
            nonlocal refused
            with mutex:
                if not writer.write(bytes(data), offset):
                    refused = True
                    raise fuse.FuseOSError(errno.ENOSPC)
            return len(data)

        def truncate(self, p: str, length: int, fh: int | None = None) -> int:
            if length != size:
                raise fuse.FuseOSError(errno.EPERM)  # a partition keeps its size
            return 0

        def fsync(self, p: str, datasync: int, fh: int) -> int:
            return 0

        def flush(self, p: str, fh: int) -> int:
            return 0

        def release(self, p: str, fh: int) -> int:
            return 0

        def statfs(self, p: str) -> dict[str, int]:
            return {"f_bsize": PAGE, "f_frsize": PAGE, "f_blocks": size // PAGE, "f_namemax": 255}

    fuse.FUSE(View(), directory, foreground=True, fsname="recovery-cow", subtype="recovery")
    os.close(fd)
    pages = sorted(writer.pages.items())
    for index, page in pages:
        _write_all(w, _PAGE_HEAD.pack(index) + bytes(page))
    _write_all(w, _END.pack(b"E", len(pages), refused))
    os.close(w)


def _write_all(fd: int, data: bytes) -> None:  # pragma: no cover - runs in the forked process
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
