"""Issue 15, part 1: what a restore or clone onto a smaller disk costs against one of the same
size (docs/SHRINK.md). Not part of `make bench`: run as root from the repository
(``.venv/bin/python bench/shrink.py``), about three minutes.

It builds a 2 GiB GPT disk on a loop device under a temporary directory (FAT32 EFI, ext4 root
filled to the end with 4 MiB files, then every other one deleted: about 1 GiB used, spread over
the whole partition), backs it up with our CLI, then restores it onto a disk of the same size and
onto one 700 MiB smaller (the root shrinks: resize2fs moves what lies beyond the new end), twice
each in turn, and clones it onto each kind once. It prints wall time and the peak resident
memory of the largest process (`/usr/bin/time -f %M`: the engine, its FUSE child or the tool it
runs). Writes only to loop devices it attached and files under its temporary directory.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import loopdev  # noqa: E402
from tests.storage.disks import MiB, run_recovery  # noqa: E402
from tests.storage.test_shrink import fill_whole_partition  # noqa: E402

SIZE = 2048 * MiB
SMALLER = SIZE - 700 * MiB


def timed(*args: str) -> tuple[float, int]:
    """Seconds and peak KiB of ``recovery ARGS --yes``."""
    started = time.monotonic()
    r = subprocess.run(
        ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "recovery", *args, "--yes"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    seconds = time.monotonic() - started
    if r.returncode != 0:
        raise SystemExit(f"recovery {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
    return seconds, int(r.stderr.strip().splitlines()[-1])


def main() -> None:
    loopdev.ensure_udev()
    with tempfile.TemporaryDirectory(prefix="recovery-shrink-bench-") as tmp:
        work = Path(tmp)
        with contextlib.ExitStack() as disks:
            src = disks.enter_context(loopdev.loop_disk(work, SIZE, "source.img"))
            targets = [
                disks.enter_context(loopdev.loop_disk(work, size, f"t{i}.img"))
                for i, size in enumerate([SIZE, SMALLER] * 3)
            ]
            parts = loopdev.partition(src, "label: gpt\nsize=40MiB, type=uefi\ntype=linux\n")
            loopdev.mkfs(parts[0], "vfat", "-F", "32")
            loopdev.mkfs(parts[1], "ext4")
            fill_whole_partition(parts[1])
            loopdev.settle(src)
            repo = work / "repo"
            run_recovery("backup", src, "--to", str(repo), "--name", "b")
            runs = [
                ("restore, same size", ("restore", f"{repo}::b", targets[0])),
                ("restore, 700 MiB smaller", ("restore", f"{repo}::b", targets[1])),
                ("restore, same size", ("restore", f"{repo}::b", targets[2])),
                ("restore, 700 MiB smaller", ("restore", f"{repo}::b", targets[3])),
                ("clone, same size", ("clone", src, targets[4])),
                ("clone, 700 MiB smaller", ("clone", src, targets[5])),
            ]
            for what, args in runs:
                seconds, kib = timed(*args)
                print(f"{what:26} {seconds:6.1f} s  peak {kib // 1024} MiB", flush=True)


if __name__ == "__main__":
    main()
