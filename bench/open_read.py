"""`make bench`, issue 12's figure: reading a 200 MB file through `recovery open` against
`zstd -d` of the same bytes (PRODUCT.md, "Performance targets": at most 1.5x).

Run as root from the repository (``.venv/bin/python bench/open_read.py``). It builds the test
disk of tests/storage/test_open.py on a loop device under a temporary directory (FAT32 EFI,
ext4 root holding ``home/alice/big.bin``, NTFS data), backs it up with our CLI, compresses the
same file with ``zstd -3`` to a file, then, ROUNDS times in turn: opens the image afresh (so no
page cache and no cell cache hold the file), times ``cat big.bin > /dev/null`` through the view,
and times ``zstd -d -c`` of the compressed file. The figure is the best time of each side over
the rounds, divided (other work on a shared machine only ever adds time, so the best of several
runs is the closest to the cost itself); it also prints the median of the per-round ratios and
the CPU-seconds ratio (the view's server process and cat against zstd; the loop device's kernel
threads are not counted). Writes only to the
loop device it attached and to files under its temporary directory; detaches and removes them
in ``finally``.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import bench as ref  # noqa: E402
from tests import loopdev  # noqa: E402
from tests.storage.disks import mounted  # noqa: E402
from tests.storage.open_disk import make_open_disk  # noqa: E402

ROUNDS = 5
TARGET = 1.5
"""PRODUCT.md and issue 12: reading through open costs at most 1.5x zstd -d of the same bytes."""
RECOVERY = [sys.executable, "-m", "recovery"]


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process and its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss(pid: int) -> int:
    """The largest resident set of a running process so far, in bytes (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd: list[str], out: int = subprocess.DEVNULL) -> tuple[float, float]:
    cpu0, t0 = children_cpu(), time.monotonic()
    subprocess.run(cmd, stdout=out, check=True)
    return time.monotonic() - t0, children_cpu() - cpu0


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("run as root (loop devices, mounts): sudo make bench")
    loopdev.ensure_udev()
    ref.ensure_bytecode()
    with tempfile.TemporaryDirectory(prefix="recovery-bench-open-") as t:
        tmp = Path(t)
        stack = []

        def loop(size: int) -> str:
            cm = loopdev.loop_disk(tmp, size, f"disk{len(stack)}.img")
            stack.append(cm)
            return cm.__enter__()

        try:
            dev, parts = make_open_disk(loop)
            repo = tmp / "repo"
            subprocess.run(
                [*RECOVERY, "backup", dev, "--to", str(repo), "--name", "b"],
                check=True,
                cwd=ROOT,
                capture_output=True,
            )
            with mounted(parts[1], readonly=True) as m:
                big = m / "home" / "alice" / "big.bin"
                size = big.stat().st_size
                subprocess.run(
                    ["zstd", "-q", "-3", "-f", str(big), "-o", str(tmp / "big.zst")], check=True
                )
            view = tmp / "view"
            view.mkdir()
            ours_walls, ref_walls, cpus = [], [], []
            peak = 0
            for _ in range(ROUNDS):
                r = subprocess.run(
                    [*RECOVERY, "open", f"{repo}::b", str(view), "--json"],
                    check=True,
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                )
                pid = json.loads(r.stdout)["pid"]
                try:
                    server0 = cpu_of(pid)
                    ours_wall, ours_cpu = timed(["cat", str(view / "p2/home/alice/big.bin")])
                    ours_cpu += cpu_of(pid) - server0
                    peak = max(peak, peak_rss(pid))
                finally:
                    subprocess.run(
                        [*RECOVERY, "close", str(view)], check=True, cwd=ROOT, capture_output=True
                    )
                ref_wall, ref_cpu = timed(["zstd", "-d", "-c", str(tmp / "big.zst")])
                ours_walls.append(ours_wall)
                ref_walls.append(ref_wall)
                cpus.append(ours_cpu / ref_cpu)
                print(
                    f"  open: {ours_wall:.2f} s ({ours_cpu:.2f} cpu s)   zstd -d: "
                    f"{ref_wall:.2f} s ({ref_cpu:.2f} cpu s)",
                    flush=True,
                )
            ratio = min(ours_walls) / min(ref_walls)
            medians = statistics.median(o / r for o, r in zip(ours_walls, ref_walls, strict=True))
            verdict = "met" if ratio <= TARGET else "NOT met"
            mb = size / 1e6
            print(
                f"open_read: a {mb:.0f} MB file read through open in {min(ours_walls):.2f} s,"
                f" zstd -d of the same bytes in {min(ref_walls):.2f} s (best of {ROUNDS} each)\n"
                f"open_read: ratio {ratio:.2f}x (target <= {TARGET}x: {verdict}); median of the"
                f" rounds' ratios {medians:.2f}x; cpu {statistics.median(cpus):.2f}x;"
                f" peak memory of the view {peak / 2**20:.0f} MiB"
            )
            ref.save_section(
                "open_read",
                {
                    "when": datetime.now(UTC).isoformat(timespec="seconds"),
                    "bytes": size,
                    "ours_seconds": ours_walls,
                    "zstd_seconds": ref_walls,
                    "ratio": ratio,
                    "median_ratio": medians,
                    "cpu_ratio": statistics.median(cpus),
                    "max_rss": peak,
                },
            )
        finally:
            for cm in reversed(stack):
                cm.__exit__(None, None, None)


if __name__ == "__main__":
    main()
