"""Where our backup and restore spend their time, phase by phase, on the reference disk.

Run by hand as root after `make bench` has built the disk: ``.venv/bin/python
bench/profile_engine.py``. It repeats the engine's hot path on one thread, phase by phase (cut
the ext4 stream into cells, read, zero test, BLAKE3, zstd, chunk files, syncfs; then decode,
verify and write back onto a scratch loop device), using the engine's own functions, and
measures the reference tools' CPU time per process. CPU seconds are reported as well as wall
seconds, because the machine is shared and wall times swing with its load. The engine itself
is not changed or monkey-patched.

Same promises as bench.py: the disk is attached read-only, scratch files live in one temporary
directory that is removed, and only loop devices attached here are written.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench as harness
from recovery.core.cells import Cell, cells
from recovery.devices import blockio
from recovery.engine.backup import CELL_SIZE
from recovery.engine.sources import plan_sources, stream_extents
from recovery.repository.store import decode_chunk, encode_chunk, hash_bytes
from tests import loopdev


class Clock:
    """Wall and CPU (this thread) seconds per phase."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self._w = self._c = 0.0

    def start(self) -> None:
        self._w, self._c = time.perf_counter(), time.thread_time()

    def lap(self, phase: str) -> None:
        w, c = time.perf_counter(), time.thread_time()
        self.wall[phase] += w - self._w
        self.cpu[phase] += c - self._c
        self._w, self._c = w, c

    def report(self, title: str, nbytes: int) -> None:
        print(f"\n{title} ({nbytes / 1e9:.2f} GB, one thread)")
        for phase in self.wall:
            w, c = self.wall[phase], self.cpu[phase]
            rate = f"{nbytes / c / 1e6:7.0f} MB/s of cpu" if c > 0.01 else ""
            print(f"  {phase:<34} wall {w:6.2f} s  cpu {c:6.2f} s  {rate}")
        print(
            f"  {'total':<34} wall {sum(self.wall.values()):6.2f} s  "
            f"cpu {sum(self.cpu.values()):6.2f} s"
        )


GROUPS = (2, 4, 8)
"""--sizes: cells compressed together in groups of this many, to see what chunking costs."""


def profile_backup(disk: str, scratch: Path, sizes: bool) -> tuple[list[tuple[bytes, int]], int]:
    """The ext4 stream through the backup's phases; returns what the restore phase needs."""
    plan = plan_sources([disk])
    (sp,) = [s for s in plan.streams if s.number == 2]
    fd = blockio.open_read(disk)
    clock = Clock()
    stored: list[tuple[bytes, int]] = []
    used = raw = comp = 0
    streaming = zstandard.ZstdCompressor(level=3).compressobj()
    streamed = 0
    pending = {k: bytearray() for k in GROUPS}
    grouped = dict.fromkeys(GROUPS, 0)
    cctx = zstandard.ZstdCompressor(level=3)
    chunks = scratch / "chunks"
    chunks.mkdir()
    try:
        clock.start()
        cell_list = list(cells(stream_extents(sp, fd), CELL_SIZE, sp.size))
        clock.lap("ext4 bitmaps -> cells")
        pieces = sum(len(c.pieces) for c in cell_list)
        for cell in cell_list:
            buf = read_cell(fd, sp.start + cell.number * CELL_SIZE, cell)
            clock.lap("read (preadv per used piece)")
            if buf == bytes(cell.size):
                clock.lap("all-zero test")
                continue
            clock.lap("all-zero test")
            digest = hash_bytes(buf)
            clock.lap("blake3")
            blob = encode_chunk(buf, 3)
            clock.lap("zstd -3 per 1 MiB chunk (+header)")
            path = chunks / digest.hex()
            if not path.exists():
                with open(path, "wb") as f:
                    f.write(blob)
            clock.lap("chunk file: stat, create, write")
            if sizes:
                streamed += len(streaming.compress(bytes(buf)))
                for k, group in pending.items():
                    group += buf
                    if len(group) >= k * CELL_SIZE:
                        grouped[k] += len(cctx.compress(group))
                        del group[:]
            clock.lap("(--sizes: other chunk sizes)")
            stored.append((digest, cell.size))
            used += cell.used
            raw += cell.size
            comp += len(blob)
        if sizes:
            streamed += len(streaming.flush())
            for k, group in pending.items():
                grouped[k] += len(cctx.compress(group))
        clock.lap("(--sizes: other chunk sizes)")
        dfd = os.open(chunks, os.O_RDONLY)
        try:
            harness_syncfs(dfd)
        finally:
            os.close(dfd)
        clock.lap("syncfs")
    finally:
        os.close(fd)
    clock.report("Backup phases, ext4 partition", raw)
    print(
        f"  {len(cell_list)} cells with {pieces} used pieces ({pieces / len(cell_list):.1f} "
        f"preadv calls a cell); used bytes {used / 1e9:.2f} GB, bytes in stored cells "
        f"{raw / 1e9:.2f} GB"
    )
    print(f"  compressed as independent 1 MiB chunks: {comp / 1e6:.1f} MB")
    if sizes:
        for k, n in grouped.items():
            print(f"  ... in groups of {k} MiB: {n / 1e6:.1f} MB")
        print(
            f"  ... as one zstd -3 stream: {streamed / 1e6:.1f} MB (1 MiB chunks cost "
            f"{comp / streamed - 1:+.1%})"
        )
    return stored, raw


def read_cell(fd: int, base: int, cell: Cell) -> bytearray:
    """What the engine's reader does on a healthy disk: one preadv per used piece."""
    buf = bytearray(cell.size)
    view = memoryview(buf)
    for off, length in cell.pieces:
        done = 0
        while done < length:
            n = os.preadv(fd, [view[off + done : off + length]], base + off + done)
            if n <= 0:
                raise OSError(f"short read at {base + off + done}")
            done += n
    return buf


def harness_syncfs(fd: int) -> None:
    import ctypes

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.syncfs(fd) != 0:
        raise OSError(ctypes.get_errno(), "syncfs")


def profile_restore(stored: list[tuple[bytes, int]], scratch: Path, target: str) -> None:
    clock = Clock()
    chunks = scratch / "chunks"
    fd = os.open(target, os.O_RDWR | os.O_EXCL)
    total = 0
    try:
        clock.start()
        for i, (digest, _size) in enumerate(stored):
            blob = (chunks / digest.hex()).read_bytes()
            clock.lap("read chunk file")
            data = decode_chunk(blob, digest, "profile")  # decompress + BLAKE3 check
            clock.lap("zstd -d + blake3 check")
            blockio.pwrite_all(fd, data, (1 << 20) + i * CELL_SIZE)
            clock.lap("pwrite to the loop device")
            total += len(data)
        os.fsync(fd)
        clock.lap("fsync of the loop device")
    finally:
        os.close(fd)
    clock.report("Restore phases, the same cells onto a scratch loop device", total)


def profile_reference(part: str, scratch: Path) -> None:
    """CPU per process of partclone -c | zstd -T1 -3 (one zstd thread: cost per byte)."""
    print("\nReference tools, per process")
    log = scratch / "partclone.log"
    procs: list[subprocess.Popen[bytes]] = []
    started = time.monotonic()
    p1 = subprocess.Popen(
        ["partclone.ext4", "-c", "-s", part, "-o", "-", "-L", str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    p2 = subprocess.Popen(
        ["zstd", "-T1", "-3", "-q", "-c"],
        stdin=p1.stdout,
        stdout=subprocess.DEVNULL,
    )
    assert p1.stdout is not None
    p1.stdout.close()
    procs = [p1, p2]
    for name, p in zip(("partclone.ext4 -c", "zstd -T1 -3"), procs, strict=True):
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        print(
            f"  {name:<20} exited after {time.monotonic() - started:6.2f} s wall: "
            f"user {ru.ru_utime:6.2f} s, sys {ru.ru_stime:6.2f} s"
        )


def main() -> int:
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2
    loopdev.ensure_udev()
    image = harness.build_reference_disk(harness.DEFAULT_CACHE)
    with tempfile.TemporaryDirectory(prefix="recovery-profile-", dir="/var/tmp") as t:
        scratch = Path(t)
        with harness.attached(image, read_only=True) as src:
            part = loopdev.partition_paths(src)[1]
            harness.log(f"warming {src}")
            harness.warm(src, part)
            stored, _ = profile_backup(src, scratch, "--sizes" in sys.argv)
            profile_reference(part, scratch)
        with harness.scratch_disk(scratch, "target.img") as tgt:
            profile_restore(stored, scratch, tgt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
