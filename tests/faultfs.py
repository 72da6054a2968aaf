"""A FUSE file system that serves one disk image and fails on command (tests only).

Used by the storage fault tests (tests/storage/test_faults.py) to stand in for a failing disk,
since this kernel has no device-mapper (no ``dm-error``/``dm-flakey``): a loop device is
attached over the served file, and the loop device then answers reads of the chosen byte ranges
with EIO, exactly as a disk with bad sectors does. It can also be told to *disappear*: every
read and write of the image then fails, as a pulled USB disk does.

The server runs in a subprocess (``python -m tests.faultfs CONFIG MOUNTPOINT``) so that a test
that kills things with SIGKILL, or hangs in the kernel, cannot take the FUSE daemon with it, and
libfuse's signal handlers stay out of pytest. Its mount holds two files:

- ``/<name>``: the image, backed by a real file; reads of a *bad* range fail with EIO (bad
  ranges fail reads only: a real disk remaps a sector that is written). After ``die``, every
  read, write and fsync fails (a disk that is still attached but answers nothing); after
  ``disappear`` the file also reports size 0, as a removed disk does once the kernel notices
  (``losetup -c`` on the loop device makes the kernel notice, as it does for a pulled USB disk).
- ``/control``: write one command per ``write()``: ``bad OFFSET LENGTH`` (add a bad range),
  ``clear`` (no bad ranges), ``slow SECONDS`` (every image read takes at least that long),
  ``die [ERRNO]``, ``disappear [ERRNO]`` (errno name, default EIO;
  a loop device turns every error into EIO anyway), ``reappear``. Reading it gives JSON
  counters: ``reads``, ``failed_reads``, ``writes``, ``disappeared``.

The image is opened with FUSE ``direct_io``, so no page cache sits between the loop device and
this daemon: every read the loop device passes on reaches the fault logic. (Reads of the loop
device itself are still cached in the block device's page cache; tests flush it with
``blockdev --flushbufs`` after setting faults.)

Built on mfusepy (ctypes over libfuse 3, see the module's import below).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CONTROL = "control"


@dataclass
class Config:
    backing: str
    name: str = "disk.img"
    bad: tuple[tuple[int, int], ...] = ()

    def to_json(self) -> str:
        return json.dumps({"backing": self.backing, "name": self.name, "bad": list(self.bad)})

    @classmethod
    def from_json(cls, text: str) -> Config:
        d = json.loads(text)
        return cls(d["backing"], d.get("name", "disk.img"), tuple((o, n) for o, n in d["bad"]))


# -- the server (runs in its own process) --------------------------------------------------------


def _serve(config: Config, mountpoint: str) -> None:
    # libfuse 3 (Debian's fuse3 package: libfuse3-3 and fusermount3), chosen before import.
    os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
    import mfusepy

    class FaultFS(mfusepy.Operations):  # type: ignore[misc]
        use_ns = True

        def __init__(self) -> None:
            self.fd = os.open(config.backing, os.O_RDWR)
            self.size = os.fstat(self.fd).st_size
            self.mutex = threading.Lock()  # not "lock": that name is a FUSE callback
            self.bad: list[tuple[int, int]] = list(config.bad)
            self.gone = 0  # errno while dead or disappeared, else 0
            self.sizeless = False  # disappeared: the file reports size 0
            self.delay = 0.0  # seconds each image read takes at least ("slow")
            self.counters = {"reads": 0, "failed_reads": 0, "writes": 0}
            self.now = time.time_ns()

        def _image(self, path: str) -> bool:
            return path == "/" + config.name

        def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
            base = {
                "st_uid": 0,
                "st_gid": 0,
                "st_atime": self.now,
                "st_mtime": self.now,
                "st_ctime": self.now,
            }
            if path == "/":
                return {**base, "st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
            if self._image(path):
                return {
                    **base,
                    "st_mode": stat.S_IFREG | 0o644,
                    "st_nlink": 1,
                    "st_size": 0 if self.sizeless else self.size,
                }
            if path == "/" + CONTROL:
                return {**base, "st_mode": stat.S_IFREG | 0o644, "st_nlink": 1, "st_size": 4096}
            raise mfusepy.FuseOSError(errno.ENOENT)

        def readdir(self, path: str, fh: int) -> list[str]:
            return [".", "..", config.name, CONTROL]

        def open(self, path: str, flags: int) -> int:
            if not (self._image(path) or path == "/" + CONTROL):
                raise mfusepy.FuseOSError(errno.ENOENT)
            return 0

        def truncate(self, path: str, length: int, fh: int | None = None) -> int:
            if path == "/" + CONTROL:
                return 0
            raise mfusepy.FuseOSError(errno.EPERM)  # the image keeps its size, like a disk

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            if path == "/" + CONTROL:
                with self.mutex:
                    state = {**self.counters, "disappeared": bool(self.gone), "bad": self.bad}
                return json.dumps(state).encode()[offset : offset + size]
            with self.mutex:
                self.counters["reads"] += 1
                fail = self.gone or (
                    errno.EIO
                    if any(o < offset + size and offset < o + n for o, n in self.bad)
                    else 0
                )
                if fail:
                    self.counters["failed_reads"] += 1
                delay = self.delay
            if delay:
                time.sleep(delay)
            if fail:
                raise mfusepy.FuseOSError(fail)
            return os.pread(self.fd, size, offset)

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            if path == "/" + CONTROL:
                self._command(data.decode(errors="replace").split())
                return len(data)
            with self.mutex:
                self.counters["writes"] += 1
                gone = self.gone
            if gone:
                raise mfusepy.FuseOSError(gone)
            if offset + len(data) > self.size:
                raise mfusepy.FuseOSError(errno.ENOSPC)
            return os.pwrite(self.fd, data, offset)

        def fsync(self, path: str, datasync: int, fh: int) -> int:
            if self._image(path) and self.gone:
                raise mfusepy.FuseOSError(self.gone)
            return 0

        def flush(self, path: str, fh: int) -> int:
            return 0

        def release(self, path: str, fh: int) -> int:
            return 0

        def statfs(self, path: str) -> dict[str, int]:
            return {
                "f_bsize": 4096,
                "f_frsize": 4096,
                "f_blocks": self.size // 4096,
                "f_namemax": 255,
            }

        def _command(self, words: list[str]) -> None:
            with self.mutex:
                if words[:1] == ["bad"] and len(words) == 3:
                    self.bad.append((int(words[1]), int(words[2])))
                elif words == ["clear"]:
                    self.bad.clear()
                elif words[:1] == ["slow"] and len(words) == 2:
                    self.delay = float(words[1])
                elif words[:1] in (["die"], ["disappear"]):
                    self.gone = getattr(errno, words[1]) if len(words) > 1 else errno.EIO
                    self.sizeless = words[0] == "disappear"
                elif words == ["reappear"]:
                    self.gone = 0
                    self.sizeless = False
                else:
                    raise mfusepy.FuseOSError(errno.EINVAL)

    # direct_io: no FUSE page cache, so every read reaches read() above; attr_timeout=0: the
    # kernel asks for the size afresh each time (a disappeared image reports 0 at once).
    mfusepy.FUSE(
        FaultFS(), mountpoint, foreground=True, direct_io=True, attr_timeout=0, fsname="faultfs"
    )


# -- the client side, used by tests ------------------------------------------------------------


class FaultyFile:
    """A served image: ``path`` is the file to attach a loop device to."""

    def __init__(self, mountpoint: Path, name: str, proc: subprocess.Popen[bytes]) -> None:
        self.mountpoint = mountpoint
        self.path = mountpoint / name
        self.proc = proc

    def command(self, text: str) -> None:
        fd = os.open(self.mountpoint / CONTROL, os.O_WRONLY)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)

    def add_bad(self, offset: int, length: int) -> None:
        self.command(f"bad {offset} {length}")

    def clear(self) -> None:
        self.command("clear")

    def die(self, err: str = "EIO") -> None:
        """Every read and write fails from now on; the size stays."""
        self.command(f"die {err}")

    def disappear(self, err: str = "EIO") -> None:
        """Every read and write fails and the file's size is 0 from now on."""
        self.command(f"disappear {err}")

    def reappear(self) -> None:
        self.command("reappear")

    def slow(self, seconds: float) -> None:
        """Every read of the image takes at least ``seconds`` from now on (0: full speed), so
        a test can act while a command is surely still reading."""
        self.command(f"slow {seconds}")

    def stats(self) -> dict[str, object]:
        with open(self.mountpoint / CONTROL, "rb", buffering=0) as f:
            result: dict[str, object] = json.loads(f.read(65536))
            return result


def _mounted(mountpoint: Path) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == str(mountpoint) for line in f)


def _unmount(mountpoint: Path, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(50):
        if not _mounted(mountpoint):
            break
        if subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True).returncode:
            time.sleep(0.1)
    else:
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def serve(
    backing: Path,
    mountpoint: Path,
    bad: tuple[tuple[int, int], ...] = (),
    name: str = "disk.img",
) -> Iterator[FaultyFile]:
    """Serve ``backing`` as ``mountpoint/name`` until the block ends, then unmount.

    Whatever is attached over the served file (loop devices) must be detached before the block
    ends, or the unmount falls back to a lazy one.
    """
    mountpoint.mkdir(parents=True, exist_ok=True)
    config = Config(str(backing), name, bad)
    log = open(mountpoint.parent / f"{mountpoint.name}.faultfs.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.faultfs", config.to_json(), str(mountpoint)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        for _ in range(200):
            if _mounted(mountpoint) and (mountpoint / name).exists():
                break
            if proc.poll() is not None:
                raise RuntimeError(
                    f"faultfs exited with {proc.returncode}: "
                    + Path(log.name).read_text(errors="replace")
                )
            time.sleep(0.05)
        else:
            raise RuntimeError("faultfs did not mount within 10 s")
        yield FaultyFile(mountpoint, name, proc)
    finally:
        _unmount(mountpoint, proc)
        log.close()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m tests.faultfs CONFIG_JSON MOUNTPOINT", file=sys.stderr)
        return 2
    _serve(Config.from_json(argv[0]), argv[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
