"""`make bench`, network case (issue 14): backup and restore throughput to SFTP, SMB and S3 on
loopback, against a local folder, in one run.

Run as root by `make bench` (``.venv/bin/python bench/network.py``). It starts the same real
servers the tests use (tests/servers.py: OpenSSH's sshd, Samba's smbd, SeaweedFS's S3 gateway,
each on 127.0.0.1 with its own configuration and data in a temporary folder), then, for each
run, backs up one disk to a fresh location of each kind (a local folder, ``sftp://``,
``smb://``, ``s3+http://``) and restores it onto a blank loop device, timing our CLI. It prints
the throughput of each (the disk's used bytes over the command's wall time, best of the runs:
the machine is shared) and its ratio to the local folder's, and writes them to the
``"network"`` section of ``bench/last-results.json``. The target (issue 14) is a ratio of at
least 0.5 for each backend, for backup and for restore.

The disk: the bench's reference disk when ``--reference`` is given (built by bench.py, 3.3 GB
of real files: long), otherwise a smaller one of the same kind of content cached beside it
(``network-disk-v1.img``: GPT, one ext4 partition holding ~600 MB of real files, libraries and
Python installations).

Same promises as bench.py: the cached disk is attached read-only, scratch files live in one
temporary directory that is removed, only loop devices attached here are written, and the
servers are stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench as harness
from tests import loopdev
from tests.servers import Missing, running_s3, running_smb, running_ssh

RECIPE_VERSION = 1
RECIPE = (
    "1.5 GiB sparse disk, GPT, one ext4 partition holding 600 MB of real files (shared "
    "libraries, Python installations) copied with tar in sorted path order"
)
DISK_SIZE = 1536 << 20
REAL_BYTES = 600_000_000
KINDS = ("local", "sftp", "smb", "s3")
TARGET = 0.5
"""Issue 14: each backend's throughput at least half the local folder's."""


# -- the disk ------------------------------------------------------------------------------


def build_network_disk(cache: Path) -> Path:
    final, meta_path, partial = harness.cache_slot(cache, "network-disk", RECIPE_VERSION, DISK_SIZE)
    if partial is None:
        return final
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="recovery-bench-build-") as tmpname:
        tmp = Path(tmpname)
        with harness.attached(partial) as dev:
            (root,) = loopdev.partition(dev, "label: gpt\ntype=L, name=root\n")
            loopdev.mkfs(root, "ext4", "-L", "root")
            with harness.mounted(root, tmp / "mnt") as mnt:
                paths, total = harness.choose_real_files(REAL_BYTES)
                harness.log(f"copying {len(paths)} real files ({total / 1e9:.2f} GB)")
                listing = tmp / "files.list"
                listing.write_bytes(b"\0".join(p.encode() for p in paths) + b"\0")
                reader = subprocess.Popen(
                    ["tar", "--null", "-T", str(listing), "-cf", "-"],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                )
                assert reader.stdout is not None
                subprocess.run(["tar", "-xf", "-", "-C", str(mnt)], stdin=reader.stdout, check=True)
                reader.stdout.close()
                if reader.wait() not in (0, 1):
                    raise RuntimeError("tar could not read the chosen files")
                loopdev.run("sync", "-f", str(mnt))
    meta = {
        "recipe_version": RECIPE_VERSION,
        "recipe": RECIPE,
        "built": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_seconds": round(time.monotonic() - started, 1),
        "real_files": len(paths),
        "real_bytes": total,
    }
    partial.rename(final)
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    return final


def warm(disk: str) -> int:
    """Read the used extents of every stream of ``disk`` (what a backup reads) into the page
    cache; the bytes read, which is what the throughput figures divide by."""
    from recovery.engine.sources import plan_sources, stream_extents

    plan = plan_sources([disk])
    jobs: list[tuple[str, int, list[tuple[int, int]]]] = []
    fd = os.open(disk, os.O_RDONLY)
    try:
        for sp in plan.streams:
            jobs.append((disk, sp.start, list(stream_extents(sp, fd))))
    finally:
        os.close(fd)
    harness.read_extents(jobs)
    return sum(length for _, _, ext in jobs for _, length in ext)


# -- the locations -------------------------------------------------------------------------


@dataclass
class Place:
    kind: str
    address: str
    env: dict[str, str]
    options: list[str]
    cleanup: Path | None
    """A folder holding the location's files on this machine, removed after each run."""


@contextlib.contextmanager
def servers(kinds: list[str], tmp: Path) -> Iterator[dict[str, Any]]:
    """The running servers each network kind needs (none for ``local``)."""
    starters = {"sftp": running_ssh, "smb": running_smb, "s3": running_s3}
    with contextlib.ExitStack() as stack:
        found: dict[str, Any] = {}
        for kind in kinds:
            if kind in starters:
                harness.log(f"starting the {kind} server")
                found[kind] = stack.enter_context(starters[kind]())
        yield found


def place(kind: str, server: Any, tmp: Path) -> Place:
    folder = f"bench-{uuid.uuid4().hex[:8]}"
    home = {"HOME": str(tmp / "home")}  # known_hosts goes here, not into /root/.ssh
    if kind == "local":
        return Place(kind, str(tmp / folder), {}, [], tmp / folder)
    if kind == "sftp":
        return Place(
            kind,
            server.address(folder),
            {**home, **server.env()},
            ["--identity", str(server.identity), "--accept-new-host-key"],
            server.root / folder,
        )
    if kind == "smb":
        return Place(
            kind, server.address(folder), {**home, **server.env()}, [], server.share / folder
        )
    return Place(kind, server.address("bench", folder), {**home, **server.env()}, [], None)


@contextlib.contextmanager
def environment(extra: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(extra)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def one_run(
    image: Path, tmp: Path, index: int, kinds: list[str], running: dict[str, Any]
) -> dict[str, Any]:
    logfile = tmp / "commands.log"
    (tmp / "home").mkdir(exist_ok=True)
    r: dict[str, Any] = {"run": index, "loadavg_before": os.getloadavg()}
    with harness.attached(image, read_only=True) as src:
        for kind in kinds:
            where = place(kind, running.get(kind), tmp)
            used = warm(src)
            r["used_bytes"] = used
            with environment(where.env):
                harness.log(f"run {index}: backup to {kind}")
                b = harness.run_ours(
                    ["backup", src, "--to", where.address, "--name", "bench", *where.options],
                    logfile,
                )
                # The local folder's backup ends with syncfs; a server's written data would
                # still be going to this machine's disk (on loopback it is the same disk) while
                # the restore runs: put it there first, for every kind alike.
                os.sync()
                with harness.scratch_disk(tmp, f"restore-{kind}.img", image.stat().st_size) as dst:
                    harness.log(f"run {index}: restore from {kind}")
                    t = harness.run_ours(
                        ["restore", f"{where.address}::bench", dst, "--yes", *where.options],
                        logfile,
                    )
            r[kind] = {
                "backup_s": round(b.seconds, 2),
                "backup_cpu_s": round(b.cpu_seconds, 2),
                "restore_s": round(t.seconds, 2),
                "restore_cpu_s": round(t.cpu_seconds, 2),
                "backup_steps": [(round(s, 2), step) for s, step in b.events],
                "restore_steps": [(round(s, 2), step) for s, step in t.events],
            }
            harness.log(f"run {index}: {kind}: {dict(list(r[kind].items())[:4])}")
            if where.cleanup is not None:
                shutil.rmtree(where.cleanup, ignore_errors=True)
    r["loadavg_after"] = os.getloadavg()
    return r


def best(runs: list[dict[str, Any]], kinds: list[str]) -> dict[str, dict[str, float]]:
    """Per kind, the shortest backup and restore of all runs."""
    return {
        k: {
            "backup_s": min(r[k]["backup_s"] for r in runs),
            "restore_s": min(r[k]["restore_s"] for r in runs),
        }
        for k in kinds
    }


def report(runs: list[dict[str, Any]], kinds: list[str], used: int) -> dict[str, Any]:
    fastest = best(runs, kinds)
    local = fastest.get("local")
    print(f"\nNetwork locations on loopback (best of {len(runs)} runs; {used / 1e6:.0f} MB used)")
    print(f"  {'location':<8} {'backup':>16} {'ratio':>6}   {'restore':>16} {'ratio':>6}")
    ratios: dict[str, dict[str, float | None]] = {}
    failed = []
    for k in kinds:
        row, ratios[k] = f"  {k:<8}", {}
        for op in ("backup", "restore"):
            s = fastest[k][f"{op}_s"]
            ratio = local[f"{op}_s"] / s if local and s else None
            ratios[k][op] = round(ratio, 2) if ratio is not None else None
            mark = "" if ratio is None or ratio >= TARGET or k == "local" else " !"
            if mark:
                failed.append(f"{k} {op}")
            text = f"{used / s / 1e6:6.0f} MB/s {s:5.1f}s"
            row += f" {text:>16} {'' if ratio is None else f'{ratio:.2f}':>6}{mark:2}"
        print(row)
    print(
        f"  target: each ratio (vs local) >= {TARGET}"
        + (f"; below: {', '.join(failed)}" if failed else ": met")
    )
    return {"best": fastest, "ratios": ratios, "target": TARGET}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2, help="runs; the best of them counts (default 2)")
    ap.add_argument(
        "--cache", type=Path, default=harness.DEFAULT_CACHE, help="where disk images live"
    )
    ap.add_argument("--tmp", type=Path, default=Path("/var/tmp"), help="where scratch files go")
    ap.add_argument("--reference", action="store_true", help="use bench.py's reference disk (long)")
    ap.add_argument(
        "--kinds", default=",".join(KINDS), help=f"which locations (default {','.join(KINDS)})"
    )
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("make bench needs root (loop devices, servers)", file=sys.stderr)
        return 2
    kinds = [k for k in args.kinds.split(",") if k]
    if any(k not in KINDS for k in kinds):
        print(f"--kinds takes {','.join(KINDS)}", file=sys.stderr)
        return 2
    loopdev.ensure_udev()
    # Our CLI from this tree: harness.recovery_command and recovery_env.
    os.environ["PYTHONPATH"] = str(harness.REPO_ROOT)
    image = (
        harness.build_reference_disk(args.cache)
        if args.reference
        else build_network_disk(args.cache)
    )
    meta = json.loads(image.with_suffix(".json").read_text())
    runs = []
    with tempfile.TemporaryDirectory(prefix="recovery-bench-net-", dir=args.tmp) as tmpname:
        try:
            with servers(kinds, Path(tmpname)) as running:
                for i in range(1, args.runs + 1):
                    run_dir = Path(tmpname) / f"run{i}"
                    run_dir.mkdir()
                    runs.append(one_run(image, run_dir, i, kinds, running))
        except Missing as e:
            print(f"network bench skipped: {e}", file=sys.stderr)
            return 2
    print(f"\nDisk: {image} ({meta['recipe']})")
    section = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "disk": meta,
        "runs": runs,
        **report(runs, kinds, runs[-1]["used_bytes"]),
    }
    harness.save_section("network", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
