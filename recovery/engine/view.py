"""An image as a read-only FUSE file system: ``disk.img``, ``pN.img`` and ``pN/`` mount points.

Served by the process that :mod:`recovery.engine.opened` forks for ``recovery open``. Reads go
through the maps (any byte range of any stream without reading the rest), each cell verified
against its hash as it is loaded, and a :class:`~recovery.core.view.CellCache` of at most
256 MiB keeps cells for repeated reads; libfuse runs the callbacks in several threads. A damaged
or missing chunk, or a backup location that stopped answering, fails the read with EIO and logs
one line naming the chunk: a reader never gets wrong bytes.

The file system mounts of ``pN/`` (a read-only loop device over ``pN.img``, or a FUSE driver on
the file) are done here too, once the view answers; :data:`MOUNTS` says how, per file system.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from recovery.core.view import CellCache, DiskLayout, Placed, ReadAhead
from recovery.devices import loops
from recovery.devices.tools import Need, unavailable
from recovery.errors import IntegrityError, RecoveryError
from recovery.filesystems.mounts import MOUNTS, NO_FILES
from recovery.repository.images import cell_size_of, streams_of
from recovery.repository.maps import DATA, StreamInfo, StreamReader
from recovery.repository.store import Repository, check_name


class Span(NamedTuple):
    """``length`` bytes of ``data`` from ``start``: a piece of a cached cell, not a copy."""

    data: bytes
    start: int
    length: int


@dataclass
class Partition:
    number: int
    stream: StreamInfo
    fstype: str | None
    mounted: bool = False
    reason: str | None = None
    loop: str | None = None


@dataclass
class ViewResult:
    """What ``open`` reports: where things are and why a partition is not mounted."""

    dir: str
    pid: int
    files: list[str]
    partitions: list[dict[str, Any]] = field(default_factory=list)
    log: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "dir": self.dir,
            "pid": self.pid,
            "files": self.files,
            "partitions": self.partitions,
            "log": self.log,
        }


def _log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"{stamp} {message}", file=sys.stderr, flush=True)


class ImageView:
    """The bytes of an image's files, read through the maps with a shared cell cache."""

    PREFETCH = 8
    """Cells read ahead of a sequential reader, decompressed in the background: zstd releases
    the GIL, so a file read in order is decompressed on every core, not only the reader's.
    Eight cells (32 MiB) on at least four threads: against four on two threads, a cold read
    of a 200 MiB file on this 2-core machine under load took 2.5-5.3 s (median 3.7) instead
    of 3.4-5.9 s (median 4.7), eight rounds each."""

    def __init__(self, repo_path: str, image: str, cache_limit: int | None = None) -> None:
        self.repo = Repository.open(repo_path)
        self.image = check_name(image)
        self.body = self.repo.read_manifest(image)
        where = self.repo.manifest_where(image)
        self.cell_size = cell_size_of(self.body, where)
        streams = streams_of(self.body, where)
        self.readers = {s.id: StreamReader(self.repo, s, self.cell_size, image) for s in streams}
        self.cache = CellCache() if cache_limit is None else CellCache(cache_limit)
        self._prefetch = ThreadPoolExecutor(
            max(4, os.cpu_count() or 2), thread_name_prefix="view-prefetch"
        )
        self._zeros = b""
        self.read_ahead = ReadAhead(self.PREFETCH)
        self.partitions: list[Partition] = []
        placed: list[Placed] = []
        for s in streams:
            if s.id == "disk":
                continue
            number = int(s.raw.get("number", 0) or 0)
            self.partitions.append(Partition(number, s, s.raw.get("fstype")))
            placed.append(Placed(s.id, int(s.raw.get("start", 0) or 0), s.size))
        disk = self.readers.get("disk")
        source = self.body.get("source") or {}
        size = max([int(source.get("size", 0) or 0), *(p.end for p in placed)])
        base = Placed("disk", 0, disk.size) if disk is not None else None
        self.layout = DiskLayout(size, base, placed)
        created = str(self.body.get("created", ""))
        try:
            self.mtime_ns = int(datetime.fromisoformat(created).timestamp() * 1e9)
        except ValueError:
            self.mtime_ns = time.time_ns()
        # name -> (size, reader): every regular file of the view's root
        self.files: dict[str, tuple[int, Callable[[int, int], list[Span]]]] = {
            "disk.img": (size, self.disk_spans)
        }
        for p in self.partitions:
            self.files[f"p{p.number}.img"] = (p.stream.size, self._stream_reader(p.stream.id))

    def _stream_reader(self, sid: str) -> Callable[[int, int], list[Span]]:
        return lambda offset, length: self.stream_spans(sid, offset, length)

    def close(self) -> None:
        self._prefetch.shutdown(wait=False, cancel_futures=True)

    def cell(self, sid: str, cell: int) -> bytes:
        """One verified cell, or for UNUSED and ZERO a shared zero buffer at least as long;
        IntegrityError/RepositoryError."""
        reader = self.readers[sid]
        rec = reader.record(cell)
        if rec.kind != DATA:
            return self._zero_bytes(rec.length)

        def load() -> bytes:
            data = self.repo.get_chunk(rec.digest, reader.where(cell))
            if len(data) != rec.length:
                raise IntegrityError(f"{reader.where(cell)}: chunk length differs from the map")
            return data

        return self.cache.get((sid, cell), load)

    def _zero_bytes(self, length: int) -> bytes:
        """A shared zero buffer of at least ``length`` bytes (one per view: a read of an unused
        area allocates nothing)."""
        if len(self._zeros) < length:
            self._zeros = bytes(max(length, self.cell_size))
        return self._zeros

    def _ahead(self, sid: str, cell: int) -> None:
        """Start loading the cells after ``cell`` when ``sid`` is being read in order."""
        for c in self.read_ahead.note(sid, cell):
            if c < self.readers[sid].stream.cells and (sid, c) not in self.cache:
                self._prefetch.submit(self._quiet_cell, sid, c)

    def _quiet_cell(self, sid: str, cell: int) -> None:
        # The reader that needs the cell meets the error itself and logs it.
        with contextlib.suppress(RecoveryError, OSError):
            self.cell(sid, cell)

    def stream_spans(self, sid: str, offset: int, length: int) -> list[Span]:
        """Bytes ``[offset, offset+length)`` of stream ``sid`` (cut at its end) as spans of
        cached cells, so that the caller copies each byte once, straight where it goes."""
        reader = self.readers[sid]
        end = min(offset + length, reader.size)
        spans: list[Span] = []
        while offset < end:
            cell, within = divmod(offset, self.cell_size)
            self._ahead(sid, cell)
            take = min(self.cell_size - within, end - offset)
            spans.append(Span(self.cell(sid, cell), within, take))
            offset += take
        return spans

    def disk_spans(self, offset: int, length: int) -> list[Span]:
        spans: list[Span] = []
        for piece in self.layout.pieces(offset, length):
            if piece.stream is None:
                spans.append(Span(self._zero_bytes(piece.length), 0, piece.length))
            else:
                spans.extend(self.stream_spans(piece.stream, piece.offset, piece.length))
        return spans


def _fuse() -> Any:
    # libfuse 3 (Debian's fuse3 package: libfuse3-3 and fusermount3), chosen before import.
    os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
    import mfusepy

    return mfusepy


def serve(view: ImageView, mountpoint: str, on_ready: Callable[[], None]) -> None:
    """Serve ``view`` at ``mountpoint`` until it is unmounted; ``on_ready`` runs in its own
    thread once the kernel talks to us (then the sub-mounts can read through the view)."""
    fuse = _fuse()

    class View(fuse.Operations):  # type: ignore[misc,name-defined]
        use_ns = True

        def __init__(self) -> None:
            self.hidden: set[str] = set()

        def init(self, path: str) -> None:
            threading.Thread(target=on_ready, name="view-ready", daemon=True).start()

        def _dirs(self) -> list[str]:
            return [
                f"p{p.number}"
                for p in view.partitions
                if f"p{p.number}" not in self.hidden and not p.reason
            ]

        def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
            base = {
                "st_uid": 0,
                "st_gid": 0,
                "st_atime": view.mtime_ns,
                "st_mtime": view.mtime_ns,
                "st_ctime": view.mtime_ns,
            }
            name = path.lstrip("/")
            if path == "/" or name in self._dirs():
                return {**base, "st_mode": stat.S_IFDIR | 0o555, "st_nlink": 2}
            f = view.files.get(name)
            if f is None:
                raise fuse.FuseOSError(errno.ENOENT)
            return {
                **base,
                "st_mode": stat.S_IFREG | 0o444,
                "st_nlink": 1,
                "st_size": f[0],
                "st_blocks": (f[0] + 511) // 512,
                "st_blksize": 1 << 20,
            }

        def readdir(self, path: str, fh: int) -> list[str]:
            if path != "/":
                return [".", ".."]
            return [".", "..", *view.files, *self._dirs()]

        def open(self, path: str, flags: int) -> int:
            if path.lstrip("/") not in view.files:
                raise fuse.FuseOSError(errno.ENOENT)
            if flags & (os.O_WRONLY | os.O_RDWR):
                raise fuse.FuseOSError(errno.EROFS)
            return 0

        def spans(self, path: str, size: int, offset: int) -> list[Span]:
            f = view.files.get(path.lstrip("/"))
            if f is None:
                raise fuse.FuseOSError(errno.ENOENT)
            try:
                return f[1](offset, size)
            except (RecoveryError, OSError) as e:
                text = e.message if isinstance(e, RecoveryError) else str(e)
                _log(f"EIO: {path} bytes {offset}-{offset + size - 1}: {text}")
                raise fuse.FuseOSError(errno.EIO) from None

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            # mfusepy registers libfuse's read callback because this exists; Server.read
            # below is what libfuse calls.
            return b"".join(
                memoryview(s.data)[s.start : s.start + s.length]
                for s in self.spans(path, size, offset)
            )

        def statfs(self, path: str) -> dict[str, int]:
            return {"f_bsize": 4096, "f_frsize": 4096, "f_namemax": 255}

    class Server(fuse.FUSE):  # type: ignore[misc,name-defined]
        def read(self, path: bytes | None, buf: Any, size: int, offset: int, fip: Any) -> int:
            """libfuse's read callback: each byte is copied once, from the cached cell into
            libfuse's buffer (mfusepy's own read copies what ``View.read`` returns, which
            would already be a copy of the cell)."""
            spans = ops.spans((path or b"").decode(errors="surrogateescape"), size, offset)
            at = ctypes.cast(buf, ctypes.c_void_p).value or 0
            for s in spans:
                # c_char_p of a bytes object points at its own buffer, without a copy; ``s``
                # holds the object while memmove runs.
                src = ctypes.cast(ctypes.c_char_p(s.data), ctypes.c_void_p).value or 0
                ctypes.memmove(at, src + s.start, s.length)
                at += s.length
            return sum(s.length for s in spans)

    ops = View()
    Server(
        ops,
        mountpoint,
        foreground=True,
        ro=True,
        allow_other=True,
        default_permissions=True,
        kernel_cache=True,
        fsname=f"recovery:{view.image}",
        subtype="recovery",
    )


# -- the file system mounts under pN/ ----------------------------------------------------------


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def _kernel_has(fstype: str) -> bool:
    try:
        with open("/proc/filesystems") as f:
            return any(line.split()[-1] == fstype for line in f if line.strip())
    except OSError:
        return False


def _tool(name: str) -> bool:
    import shutil

    return shutil.which(name) is not None


def mount_partition(p: Partition, image_file: str, target: str) -> None:
    """Mount partition ``p`` (served as ``image_file``) read-only at ``target``; on failure
    set ``p.reason`` to one line and leave nothing mounted or attached."""
    fstype = p.fstype
    if p.stream.method == "swap-header" or fstype in NO_FILES:
        p.reason = NO_FILES.get(fstype or "swap", "no files in it")
        return
    if not fstype:
        p.reason = "no file system recognised (read pN.img as raw bytes)"
        return
    ways = MOUNTS.get(fstype)
    if ways is None:
        p.reason = f"{fstype}: no read-only mount known for this file system"
        return
    failures: list[str] = []
    for how, options in ways:
        if how == "kernel":
            if not _kernel_has(fstype):
                failures.append(f"this kernel has no {fstype} driver")
                continue
            missing = unavailable(
                [Need("losetup", f"to mount {fstype}"), Need("mount", f"to mount {fstype}")]
            )
            if missing:
                failures += missing
                continue
            loop, why = loops.attach_read_only(image_file)
            if loop is None:
                failures.append(why)
                continue
            m = _run("mount", "-t", fstype, "-o", options, loop, target)
            if m.returncode == 0:
                p.loop, p.mounted = loop, True
                return
            _run("losetup", "-d", loop)
            failures.append(m.stderr.strip().splitlines()[-1] if m.stderr.strip() else "failed")
        else:
            if not _tool(how):
                failures.append(f"{how} is not installed")
                continue
            m = _run(how, "-o", options, image_file, target)
            if m.returncode == 0:
                p.mounted = True
                return
            text = m.stderr.strip() or m.stdout.strip()
            failures.append(f"{how}: {text.splitlines()[-1] if text else 'failed'}")
    p.reason = f"{fstype} not mounted: {'; '.join(dict.fromkeys(failures))}"


def unmount_partition(target: str, loop: str | None) -> str | None:
    """Undo :func:`mount_partition`; a line saying what could not be undone, or None."""
    problem = None
    if os.path.ismount(target):
        r = _run("umount", target)
        if r.returncode != 0:
            r = _run("umount", "-l", target)
            if r.returncode != 0:
                problem = f"cannot unmount {target}: {r.stderr.strip()}"
    if loop:
        for _ in range(20):
            r = _run("losetup", "-d", loop)
            if r.returncode == 0 or "No such device" in r.stderr:
                break
            time.sleep(0.1)
    return problem
