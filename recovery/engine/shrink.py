"""Restore and clone onto a smaller disk: the shrunk layout, and the shrink itself.

Called by :mod:`recovery.engine.restore` and :mod:`recovery.engine.clone` (design:
docs/SHRINK.md). While planning, :func:`plan_shrink` lays the table out with the main partition
smaller (core/layout.py), after asking the main file system's tool how small it can get, and
refuses, before anything is written, what cannot work (a file system that cannot shrink, data
that does not fit), naming the smallest target that would. While running, after the main
partition's front was written, :func:`shrink_partition` runs the file system's own tool over a
composed file: the target's new partition range in front, the source (image or disk) behind,
read-only, with writes there kept in a bounded overlay (core/composed.py).

The composed file is served by FUSE (mfusepy over libfuse 3) from a forked child, as ``recovery
open``'s view is: libfuse's signal handlers stay out of the caller (the CLI or the TUI), and the
child uses the caller's open descriptors (the target disk held O_EXCL, the image reader or the
source disk). The child is unmounted and reaped before the caller goes on.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from recovery.core.composed import ComposedFile, OverlayFull, Reader
from recovery.core.layout import plan_shrunk_layout, smallest_unchanged
from recovery.core.table import Layout, Table, choose_main, partition_node
from recovery.core.units import human_size
from recovery.devices import blockio
from recovery.devices.partitions import alignment_of
from recovery.devices.tools import Need, require
from recovery.engine.progress import Progress
from recovery.engine.targets import Target
from recovery.errors import DeviceError, RecoveryError, Refused
from recovery.filesystems.base import kind_of

OVERLAY_LIMIT = 64 << 20
"""The most bytes a shrink may write beyond the new end (kept in memory, then dropped)."""
READY_TIMEOUT = 30.0
PR_SET_PDEATHSIG = 1
FILE = "partition"
PREFIX = "recovery-shrink-"


def plan_shrink(
    table: Table,
    target: Target,
    fstypes: Mapping[int, str | None],
    minimum_of: Callable[[int], int],
) -> Layout:
    """The layout of ``table`` on ``target`` (too small for it unchanged) with the main
    partition shrunk; ``minimum_of(number)`` asks that partition's file system how small it can
    get (called only for a partition whose file system can shrink)."""
    what = target.path
    need = smallest_unchanged(table)
    main = choose_main(table, {e.number for e in table.entries})
    if main is None:
        raise Refused(
            f"{what} is too small: the partitions need {need} bytes ({human_size(need)}) and "
            f"none of them can shrink; the target has {human_size(target.size)}; choose a "
            "larger disk; nothing was written"
        )
    fstype = fstypes.get(main)
    kind = kind_of(fstype)
    if not kind.can_shrink:
        cannot = f"{fstype} cannot be shrunk" if fstype else "its content is unknown"
        raise Refused(
            f"{what} is too small for the partitions as they are, and partition {main} would "
            f"have to shrink, but {cannot}; the smallest target that "
            f"works has {need} bytes ({human_size(need)}); choose a larger disk; "
            "nothing was written"
        )
    require(shrink_needs(fstype))
    alignment = alignment_of(target.path, table.sector_size)
    return plan_shrunk_layout(table, target.size, main, minimum_of(main), alignment, what)


def shrink_needs(fstype: str | None) -> list[Need]:
    return [*kind_of(fstype).shrink_needs(), Need("umount", "to end the shrink's view")]


def minimum_of_stream(kind_name: str | None, size: int, read: Reader) -> int:
    """How small the file system held by a stream (read through ``read``) can get: its tool runs
    on a read-only composed file of the stream, nothing written anywhere."""
    composed = ComposedFile(size, 0, _no_front, None, read, 0)
    with serve_composed(composed) as view:
        return kind_of(kind_name).minimum_size(view.path)


def _no_front(offset: int, length: int) -> bytes:
    return b""


def shrink_partition(
    fd: int,
    disk: str,
    number: int,
    fstype: str | None,
    target_start: int,
    new_size: int,
    old_size: int,
    tail_read: Reader,
    progress: Progress,
) -> None:
    """Shrink partition ``number``'s file system, whose first ``new_size`` bytes are already on
    ``disk`` (open as ``fd``) at ``target_start``, to ``new_size``; the bytes beyond come from
    ``tail_read`` (offsets within the old partition). Raises :class:`DeviceError` when the tool
    fails: the target is then incomplete."""

    def front_read(offset: int, length: int) -> bytes:
        return os.pread(fd, length, target_start + offset)

    def front_write(data: bytes, offset: int) -> None:
        blockio.pwrite_all(fd, data, target_start + offset)

    composed = ComposedFile(old_size, new_size, front_read, front_write, tail_read, OVERLAY_LIMIT)
    node = partition_node(disk, number)
    progress.step(f"shrinking partition {number} ({fstype}) to {human_size(new_size)}", 0)

    def step(what: str) -> None:
        progress.step(what, 0)

    with serve_composed(composed) as view:
        lines = kind_of(fstype).shrink(view.path, new_size, step)
    blockio.flush(fd, disk)
    lines = [line.replace(view.path, node) for line in lines]
    failed = [line for line in lines if line.startswith("FAILED")] + view.problems
    if failed:
        raise DeviceError(
            f"partition {number} could not be shrunk ({failed[0]}); {disk} is incomplete: "
            "restore or clone again onto a larger disk"
        )
    for line in lines:
        progress.log(line)


@dataclass
class ServedFile:
    path: str
    problems: list[str] = field(default_factory=list)
    """What the server refused or could not read (filled when the view ends)."""


@contextlib.contextmanager
def serve_composed(composed: ComposedFile) -> Iterator[ServedFile]:
    """``composed`` as a file under a private FUSE mount, for the duration of the block."""
    fuse = _fuse()  # imported before the fork: another thread may hold the import lock
    base = "/run" if os.access("/run", os.W_OK) else tempfile.gettempdir()
    _remove_stale_mountpoints(base)
    mountpoint = tempfile.mkdtemp(prefix=PREFIX, dir=base)
    r, w = os.pipe()
    parent = os.getpid()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked child
        try:
            os.close(r)
            # If the engine dies (kill -9), libfuse gets SIGTERM and unmounts.
            _die_with_parent(parent)
            _child(fuse, composed, mountpoint, w)
        finally:
            os._exit(0)
    os.close(w)
    served = ServedFile(f"{mountpoint}/{FILE}")
    buf = b""
    try:
        buf = _wait_ready(r, child)
        yield served
    finally:
        _unmount(mountpoint)
        _reap(child)
        with contextlib.suppress(OSError):
            while chunk := os.read(r, 65536):
                buf += chunk
        os.close(r)
        with contextlib.suppress(OSError):
            os.rmdir(mountpoint)
        served.problems.extend(
            line.removeprefix("problem ")
            for line in buf.decode(errors="replace").splitlines()
            if line.startswith("problem ")
        )


def _remove_stale_mountpoints(base: str) -> None:
    """Empty mount points left by an engine that was killed (its view went with it); only old
    ones, so another engine's that is about to be mounted stays."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(base):
            if not entry.name.startswith(PREFIX) or os.path.ismount(entry.path):
                continue
            with contextlib.suppress(OSError):
                if time.time() - entry.stat(follow_symlinks=False).st_mtime > 600:
                    os.rmdir(entry.path)  # only ever an empty directory


def _wait_ready(r: int, child: int) -> bytes:
    buf = b""
    deadline = time.monotonic() + READY_TIMEOUT
    while b"ready\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([r], [], [], left)
        if not ready:
            continue
        data = os.read(r, 65536)
        if not data:
            break
        buf += data
    if b"ready\n" not in buf:
        text = buf.decode(errors="replace").strip().splitlines()
        raise DeviceError(
            "the view a file system is shrunk on did not start"
            + (f": {text[-1]}" if text else "")
            + "; is FUSE available (/dev/fuse, fuse3)?"
        )
    return buf


def _unmount(mountpoint: str) -> None:
    for _ in range(50):
        r = subprocess.run(["umount", mountpoint], capture_output=True, text=True, check=False)
        if r.returncode == 0 or not os.path.ismount(mountpoint):
            return
        time.sleep(0.1)  # a tool that just ended may still hold the file for a moment
    subprocess.run(["umount", "-l", mountpoint], capture_output=True, check=False)


def _reap(child: int) -> None:
    for _ in range(100):
        done, _ = os.waitpid(child, os.WNOHANG)
        if done:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)


def _fuse() -> Any:
    # libfuse 3 (Debian's fuse3 package: libfuse3-3 and fusermount3), chosen before import.
    os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
    import mfusepy

    return mfusepy


def _die_with_parent(parent: int) -> None:  # pragma: no cover - runs in the forked child
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the line above
        os._exit(0)


def _child(mfusepy: Any, composed: ComposedFile, mountpoint: str, w: int) -> None:
    """The forked server: quiet, deaf to the terminal's Ctrl-C (the parent handles it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    null = os.open(os.devnull, os.O_RDWR)
    for n in (0, 1, 2):
        os.dup2(null, n)
    os.close(null)

    def tell(line: str) -> None:
        with contextlib.suppress(OSError):
            os.write(w, line.encode() + b"\n")

    mode = 0o600 if composed.writable else 0o400

    class Composed(mfusepy.Operations):  # type: ignore[misc]
        use_ns = True

        def init(self, path: str) -> None:
            tell("ready")

        def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
            if path == "/":
                return {"st_mode": stat.S_IFDIR | 0o700, "st_nlink": 2}
            if path != f"/{FILE}":
                raise mfusepy.FuseOSError(errno.ENOENT)
            return {
                "st_mode": stat.S_IFREG | mode,
                "st_nlink": 1,
                "st_size": composed.size,
                "st_blocks": (composed.size + 511) // 512,
                "st_blksize": 4096,
            }

        def readdir(self, path: str, fh: int) -> list[str]:
            return [".", "..", FILE]

        def open(self, path: str, flags: int) -> int:
            if path != f"/{FILE}":
                raise mfusepy.FuseOSError(errno.ENOENT)
            if flags & (os.O_WRONLY | os.O_RDWR) and not composed.writable:
                raise mfusepy.FuseOSError(errno.EROFS)
            return 0

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            try:
                return composed.read(offset, size)
            except (RecoveryError, OSError) as e:
                text = e.message if isinstance(e, RecoveryError) else str(e)
                tell(f"problem cannot read bytes {offset}-{offset + size - 1}: {text}")
                raise mfusepy.FuseOSError(errno.EIO) from None

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            try:
                return composed.write(bytes(data), offset)
            except OverlayFull as e:
                tell(f"problem {e}")
                raise mfusepy.FuseOSError(errno.ENOSPC) from None
            except OSError as e:
                tell(f"problem cannot write bytes {offset}-{offset + len(data) - 1}: {e}")
                raise mfusepy.FuseOSError(errno.EIO) from None

        def truncate(self, path: str, length: int, fh: int | None = None) -> int:
            # The tools never need the file to change size; a shrunk file system simply ends
            # before the file does.
            return 0

        def fsync(self, path: str, datasync: int, fh: int) -> int:
            return 0

        def flush(self, path: str, fh: int) -> int:
            return 0

        def statfs(self, path: str) -> dict[str, int]:
            return {"f_bsize": 4096, "f_frsize": 4096, "f_namemax": 255}

    try:
        mfusepy.FUSE(
            Composed(),
            mountpoint,
            foreground=True,
            direct_io=True,
            attr_timeout=0,
            ro=not composed.writable,
            fsname="recovery-shrink",
        )
    except BaseException as e:
        tell(f"problem cannot mount the view: {e}")
