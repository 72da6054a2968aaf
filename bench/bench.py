"""`make bench`: our engine against Clonezilla's partclone pipeline, side by side, in one run.

Run as root by `make bench` (``.venv/bin/python bench/bench.py``). It builds the reference disk
of PRODUCT.md ("Performance targets") once and keeps it in a cache outside the repository
(``/var/cache/recovery-bench/``, keyed by RECIPE_VERSION), then, for each run, attaches it
read-only on a fresh loop device, warms the page cache with the blocks both sides read, and
times the partclone pipelines and our CLI on the same machine, one after the other. It prints
a table of absolute figures and ratios against the targets, and writes them to
``bench/last-results.json``.

Promises: it writes only to loop devices it attached itself (through tests/loopdev.py, whose
helpers refuse any other device) and to files under one temporary directory it removes; the
cached image is attached read-only; everything attached is detached in ``finally`` blocks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tests import loopdev  # noqa: E402  (needs the repository root on sys.path)

# Bump when the recipe below changes: the cached image is rebuilt under the new name.
RECIPE_VERSION = 2
RECIPE = (
    "6 GiB sparse disk, GPT; p1 EFI FAT32 100 MiB (a few binaries in EFI/BOOT); p2 ext4 over "
    "the rest: 1.5 GB of /dev/urandom files written and synced, 3.3 GB of real files (shared "
    "libraries, Python installations) copied with tar in sorted path order, then the random "
    "files deleted"
)
DISK_SIZE = 6 << 30
EFI_SIZE = 100 << 20
RANDOM_BYTES = 1_500_000_000
RANDOM_FILE = 100_000_000
REAL_BYTES = 3_300_000_000
# Walked in this order, each in sorted order, until REAL_BYTES: shared libraries and Python
# installations first; the rest only fills up on machines that lack some of them.
REAL_ROOTS = (
    "/usr/lib/x86_64-linux-gnu",
    "/root/.pyenv/versions",
    "/usr/local/lib",
    "/usr/lib",
    "/usr/share",
)
SFDISK_SCRIPT = (
    "label: gpt\n"
    f"size={EFI_SIZE // 512}, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=EFI\n"
    "type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n"
)
DEFAULT_CACHE = Path(os.environ.get("RECOVERY_BENCH_CACHE", "/var/cache/recovery-bench"))
RESULTS = REPO_ROOT / "bench" / "last-results.json"
MiB = 1 << 20

# PRODUCT.md, "Performance targets": (key, what, limit, unit of the ratio).
TARGETS = (
    ("backup_time", "backup time vs partclone -c | zstd -T0 -3", 0.5),
    ("backup_size", "backup size vs partclone -c | zstd -T0 -3", 1.0),
    ("restore_time", "restore time vs zstd -d | partclone -r", 0.5),
    ("second_time", "2nd image time vs full partclone backup", 0.15),
    ("second_bytes", "2nd image new bytes vs repository size", 0.01),
    ("clone_time", "clone time vs partclone -b", 1.0),
    ("backup_rss", "peak memory of our backup (MiB, absolute)", 400.0),
    ("restore_rss", "peak memory of our restore (MiB, absolute)", 400.0),
)


# -- small tools ---------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def tree_bytes(path: Path) -> tuple[int, int]:
    """(apparent bytes, allocated bytes) of every file under ``path``."""
    apparent = allocated = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            st = os.lstat(os.path.join(dirpath, f))
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return apparent, allocated


def require_our_partition(part: str) -> None:
    """``part`` is a partition node of a loop device this process attached."""
    if not stat.S_ISBLK(os.stat(part).st_mode):
        raise AssertionError(f"{part} is not a block device")
    disk = "/dev/" + Path(f"/sys/class/block/{Path(part).name}/..").resolve().name
    loopdev._check_ours(disk)


def attach_read_only(image: Path) -> str:
    """Attach ``image`` read-only (the cache stays pristine) with partition nodes via partx."""
    dev = loopdev.run("losetup", "--find", "--show", "--read-only", str(image)).stdout.strip()
    loopdev._ATTACHED.add(dev)  # registered so loopdev's checks and detach accept it
    loopdev.sync_partitions(dev)
    loopdev.settle(dev)
    return dev


@contextlib.contextmanager
def attached(image: Path, read_only: bool = False) -> Iterator[str]:
    dev = attach_read_only(image) if read_only else loopdev.attach(image)
    try:
        yield dev
    finally:
        loopdev.detach(dev)


@contextlib.contextmanager
def scratch_disk(tmp: Path, name: str) -> Iterator[str]:
    """A blank sparse disk of DISK_SIZE bytes, detached and deleted afterwards (frees cache)."""
    image = tmp / name
    with open(image, "wb") as f:
        f.truncate(DISK_SIZE)
    try:
        with attached(image) as dev:
            yield dev
    finally:
        image.unlink(missing_ok=True)


@contextlib.contextmanager
def mounted(part: str, where: Path) -> Iterator[Path]:
    require_our_partition(part)
    where.mkdir(parents=True, exist_ok=True)
    # nodiscard: freed blocks must keep the deleted random data.
    loopdev.run("mount", "-t", "ext4", "-o", "nodiscard", part, str(where))
    try:
        yield where
    finally:
        loopdev.run("umount", str(where))


# -- the reference disk --------------------------------------------------------------------


def choose_real_files(budget: int) -> tuple[list[str], int]:
    """Paths (files and symlinks) from REAL_ROOTS in sorted order, up to ``budget`` bytes."""
    chosen: list[str] = []
    seen: set[str] = set()
    total = 0
    for root in REAL_ROOTS:
        if not os.path.isdir(root):
            continue
        for dirpath, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(dirpath, name)
                if path in seen:
                    continue
                seen.add(path)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if stat.S_ISLNK(st.st_mode):
                    chosen.append(path)
                elif stat.S_ISREG(st.st_mode) and os.access(path, os.R_OK):
                    chosen.append(path)
                    total += st.st_size
                    if total >= budget:
                        return chosen, total
    return chosen, total


def build_reference_disk(cache: Path) -> Path:
    final = cache / f"reference-disk-v{RECIPE_VERSION}.img"
    meta_path = final.with_suffix(".json")
    if final.exists() and meta_path.exists():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    for old in cache.glob("reference-disk-v*"):
        if old.name not in (final.name, meta_path.name):
            log(f"removing an image of an older recipe: {old}")
            old.unlink()
    partial = cache / (final.name + ".partial")
    partial.unlink(missing_ok=True)
    log(f"building the reference disk in {partial} (once; cached afterwards)")
    started = time.monotonic()
    with open(partial, "wb") as f:
        f.truncate(DISK_SIZE)
    with tempfile.TemporaryDirectory(prefix="recovery-bench-build-") as tmpname:
        tmp = Path(tmpname)
        with attached(partial) as dev:
            efi, root = loopdev.partition(dev, SFDISK_SCRIPT)
            loopdev.mkfs(efi, "vfat", "-F", "32", "-n", "EFI")
            loopdev.mkfs(root, "ext4", "-L", "root")
            _fill_efi(efi)
            with mounted(root, tmp / "mnt") as mnt:
                # Random files first, deleted only after the real files are in: deleted
                # earlier, ext4 would hand their blocks to the real files (tried in recipe 1:
                # 0.6 of the 1.5 GB got overwritten).
                junk = _write_random(mnt)
                nfiles, nbytes = _copy_real_files(mnt, tmp)
                shutil.rmtree(junk)
                loopdev.run("sync", "-f", str(mnt))
            r = loopdev.run("e2fsck", "-fn", root, check=False)
            if r.returncode != 0:
                raise RuntimeError(f"the new reference ext4 is not clean: {r.stdout[-500:]}")
            df = loopdev.run("dumpe2fs", "-h", root).stdout
    meta = {
        "recipe_version": RECIPE_VERSION,
        "recipe": RECIPE,
        "built": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_seconds": round(time.monotonic() - started, 1),
        "real_files": nfiles,
        "real_bytes": nbytes,
        "ext4_summary": {
            k.strip(): v.strip()
            for k, _, v in (line.partition(":") for line in df.splitlines())
            if k.strip() in ("Block count", "Free blocks", "Block size")
        },
    }
    partial.rename(final)
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    log(f"reference disk ready in {meta['build_seconds']} s: {final}")
    return final


def _fill_efi(efi: str) -> None:
    """A few real binaries on the FAT32 partition, written with mtools (no vfat in this kernel)."""
    require_our_partition(efi)
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    subprocess.run(
        ["mmd", "-i", efi, "::/EFI", "::/EFI/BOOT"], check=True, env=env, capture_output=True
    )
    sources = [os.path.realpath(sys.executable), "/usr/lib/x86_64-linux-gnu/libc.so.6"]
    for i, src in enumerate(s for s in sources if os.path.isfile(s)):
        subprocess.run(
            ["mcopy", "-i", efi, src, f"::/EFI/BOOT/FILE{i}.BIN"],
            check=True,
            env=env,
            capture_output=True,
        )


def _write_random(mnt: Path) -> Path:
    """RANDOM_BYTES of random data, to be deleted: free blocks that a raw imager would copy."""
    log(f"writing {RANDOM_BYTES / 1e9:.1f} GB of random data (deleted after the real files)")
    junk = mnt / "junk"
    junk.mkdir()
    for i in range(-(-RANDOM_BYTES // RANDOM_FILE)):
        with open(junk / f"random{i:03d}", "wb") as out:
            subprocess.run(["head", "-c", str(RANDOM_FILE), "/dev/urandom"], stdout=out, check=True)
    loopdev.run("sync", "-f", str(mnt))
    return junk


def _copy_real_files(mnt: Path, tmp: Path) -> tuple[int, int]:
    paths, total = choose_real_files(REAL_BYTES)
    log(f"copying {len(paths)} real files ({total / 1e9:.2f} GB) onto the ext4 partition")
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
    if reader.wait() not in (0, 1):  # 1: a file changed while it was read; harmless here
        raise RuntimeError("tar could not read the chosen files")
    loopdev.run("sync", "-f", str(mnt))
    return len(paths), total


# -- timing --------------------------------------------------------------------------------


@dataclass
class Timed:
    seconds: float
    cpu_seconds: float
    """User + system time of every process of the command and of their children."""
    max_rss: int = 0
    """Bytes: the largest resident set of any process of our command (GNU time's %M)."""
    events: list[tuple[float, str]] = field(default_factory=list)
    """(seconds since start, step name) of our CLI's --json step events."""
    result: dict[str, Any] = field(default_factory=dict)


def _wait(p: subprocess.Popen[Any]) -> tuple[int, float]:
    """Reap ``p``: its exit code and CPU seconds (ru_maxrss is useless here: a forked child
    starts with the parent's resident set, so it reports at least this Python's)."""
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, usage.ru_utime + usage.ru_stime


def run_pipeline(cmds: list[list[str]], logfile: Path, stdout: Path | None = None) -> Timed:
    """Time ``cmds[0] | cmds[1] | ...``; the data flows between them, never through Python."""
    procs: list[subprocess.Popen[bytes]] = []
    with open(logfile, "ab") as err:
        out = open(stdout, "wb") if stdout else subprocess.DEVNULL  # noqa: SIM115
        started = time.monotonic()
        try:
            prev = None
            for i, cmd in enumerate(cmds):
                last = i == len(cmds) - 1
                p = subprocess.Popen(
                    cmd,
                    stdin=prev,
                    stdout=out if last else subprocess.PIPE,
                    stderr=err,
                )
                if prev is not None:
                    prev.close()
                prev = p.stdout
                procs.append(p)
            results = [_wait(p) for p in procs]
            seconds = time.monotonic() - started
        finally:
            for p in procs:
                if p.returncode is None:
                    p.kill()
                    _wait(p)
            if stdout:
                out.close()  # type: ignore[union-attr]
    for cmd, (code, _) in zip(cmds, results, strict=True):
        if code != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({code}); see {logfile}")
    return Timed(seconds, sum(cpu for _, cpu in results))


def recovery_command() -> list[str]:
    script = Path(sys.executable).with_name("recovery")
    return [str(script)] if script.exists() else [sys.executable, "-m", "recovery"]


def run_ours(args: list[str], logfile: Path) -> Timed:
    """Time our CLI with ``--json``, noting when each step event arrives."""
    rss_file = logfile.with_name("maxrss")
    # GNU time is small, so what it reports (%M, KiB) is our process tree's largest member.
    cmd = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *recovery_command(), *args, "--json"]
    with open(logfile, "ab") as err:
        err.write(f"$ {' '.join(cmd)}\n".encode())
        err.flush()
        started = time.monotonic()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        assert p.stdout is not None
        events: list[tuple[float, str]] = []
        rest: list[str] = []
        for line in p.stdout:
            now = time.monotonic() - started
            if line.startswith('{"event": "step"'):
                events.append((now, json.loads(line)["step"]))
            elif not line.startswith('{"event": "progress"'):
                rest.append(line)
        code, cpu = _wait(p)
        seconds = time.monotonic() - started
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}); see {logfile}")
    result: dict[str, Any] = {}
    text = "".join(rest)
    start = text.rfind('{\n "event": "result"')
    if start >= 0:
        with contextlib.suppress(json.JSONDecodeError):
            result = json.loads(text[start:])
    events.append((seconds, "(exit)"))
    rss = int(rss_file.read_text().split()[-1]) * 1024
    return Timed(seconds, cpu, rss, events, result)


def clone_available() -> bool:
    r = subprocess.run([*recovery_command(), "clone", "--help"], capture_output=True, check=False)
    return r.returncode == 0


# -- warming the cache ---------------------------------------------------------------------


def warm(disk: str, part: str) -> float:
    """Read once what each side will read: the used blocks, through the disk and the partition.

    The disk and its partition have separate page caches; reading the used extents (as our
    engine finds them) through both warms exactly what partclone and our backup read, without
    filling memory with the never-written parts of the sparse image.
    """
    started = time.monotonic()
    try:
        from recovery.engine.sources import plan_sources, stream_extents

        plan = plan_sources([disk])
        jobs: list[tuple[str, int, list[tuple[int, int]]]] = []
        dfd = os.open(disk, os.O_RDONLY)
        try:
            for sp in plan.streams:
                ext = list(stream_extents(sp, dfd))
                jobs.append((disk, sp.start, ext))
                if sp.number == 2:
                    jobs.append((part, 0, ext))
        finally:
            os.close(dfd)
    except Exception as e:  # the engine's reader is a shortcut; reading everything also works
        log(f"warming by reading everything ({type(e).__name__}: {e})")
        jobs = [(disk, 0, [(0, DISK_SIZE)]), (part, 0, [(0, DISK_SIZE - 2 * MiB - EFI_SIZE)])]
    buf = bytearray(8 * MiB)
    view = memoryview(buf)
    for dev, base, extents in jobs:
        fd = os.open(dev, os.O_RDONLY)
        try:
            for start, length in extents:
                pos, end = base + start, base + start + length
                while pos < end:
                    n = os.preadv(fd, [view[: min(len(buf), end - pos)]], pos)
                    if n <= 0:
                        break
                    pos += n
        finally:
            os.close(fd)
    return time.monotonic() - started


# -- one run -------------------------------------------------------------------------------


def one_run(image: Path, tmp: Path, index: int, with_clone: bool) -> dict[str, Any]:
    logfile = tmp / "commands.log"
    pc_log = tmp / "partclone.log"
    r: dict[str, Any] = {"run": index, "loadavg_before": os.getloadavg()}
    with attached(image, read_only=True) as src:
        parts = loopdev.partition_paths(src)
        if len(parts) != 2:
            raise RuntimeError(f"{src}: expected 2 partitions, found {parts}")
        src_root = parts[1]
        log(f"run {index}: source {src} (root {src_root}), warming the cache")
        r["warm_seconds"] = round(warm(src, src_root), 2)
        table_dump = loopdev.run("sfdisk", "-d", src).stdout

        # Reference backup: what Clonezilla runs.
        ref_img = tmp / "root.pcl.zst"
        log("partclone.ext4 -c | zstd -T0 -3")
        t = run_pipeline(
            [
                ["partclone.ext4", "-c", "-s", src_root, "-o", "-", "-L", str(pc_log)],
                ["zstd", "-T0", "-3", "-q", "-o", str(ref_img)],
            ],
            logfile,
        )
        r["ref_backup"] = {
            "seconds": t.seconds,
            "cpu_seconds": t.cpu_seconds,
            "bytes": ref_img.stat().st_size,
            "ext4_only_seconds": t.seconds,
            "ext4_only_bytes": ref_img.stat().st_size,
        }
        # Clonezilla's savedisk images the EFI partition too (partclone.vfat): our whole-disk
        # image holds it, so the reference does as well.
        esp_img = tmp / "esp.pcl.zst"
        log("partclone.vfat -c | zstd -T0 -3 (EFI partition)")
        t = run_pipeline(
            [
                ["partclone.vfat", "-c", "-s", parts[0], "-o", "-", "-L", str(pc_log)],
                ["zstd", "-T0", "-3", "-q", "-o", str(esp_img)],
            ],
            logfile,
        )
        r["ref_backup"]["seconds"] += t.seconds
        r["ref_backup"]["cpu_seconds"] += t.cpu_seconds
        r["ref_backup"]["bytes"] += esp_img.stat().st_size
        fs = time.monotonic()
        loopdev.run("sync", str(ref_img), str(esp_img))
        r["ref_backup"]["fsync_seconds"] = time.monotonic() - fs

        # Ours: full image, then a second one of the unchanged disk.
        repo = tmp / "repo"
        log("recovery backup (whole disk) --name a")
        t = run_ours(["backup", src, "--to", str(repo), "--name", "a", "--yes"], logfile)
        size_a, alloc_a = tree_bytes(repo)
        r["ours_backup"] = {
            "seconds": t.seconds,
            "cpu_seconds": t.cpu_seconds,
            "engine_seconds": t.result.get("seconds"),
            "repo_bytes": size_a,
            "repo_allocated": alloc_a,
            "chunk_bytes": tree_bytes(repo / "chunks")[0],
            "max_rss": t.max_rss,
            "steps": t.events,
        }
        log("recovery backup (unchanged disk) --name b")
        t = run_ours(["backup", src, "--to", str(repo), "--name", "b", "--yes"], logfile)
        size_b, _ = tree_bytes(repo)
        r["ours_second"] = {
            "seconds": t.seconds,
            "cpu_seconds": t.cpu_seconds,
            "engine_seconds": t.result.get("seconds"),
            "new_bytes_reported": t.result.get("new_bytes"),
            "new_bytes": size_b - size_a,
            "max_rss": t.max_rss,
            "steps": t.events,
        }

        # Reference restore onto a disk with the same table, one partition.
        with scratch_disk(tmp, "ref-target.img") as tgt:
            tparts = loopdev.partition(tgt, table_dump)
            require_our_partition(tparts[1])
            log("zstd -d | partclone.ext4 -r")
            t = run_pipeline(
                [
                    ["zstd", "-d", "-c", "-q", str(ref_img)],
                    ["partclone.ext4", "-r", "-s", "-", "-o", tparts[1], "-L", str(pc_log)],
                ],
                logfile,
            )
            r["ref_restore"] = {"seconds": t.seconds, "cpu_seconds": t.cpu_seconds}
            t = run_pipeline(
                [
                    ["zstd", "-d", "-c", "-q", str(esp_img)],
                    ["partclone.vfat", "-r", "-s", "-", "-o", tparts[0], "-L", str(pc_log)],
                ],
                logfile,
            )
            r["ref_restore"]["seconds"] += t.seconds
            r["ref_restore"]["cpu_seconds"] += t.cpu_seconds
        # Ours: the whole disk (table, both partitions, fsck of each) onto a blank disk.
        with scratch_disk(tmp, "our-target.img") as tgt:
            log("recovery restore (whole disk)")
            t = run_ours(["restore", f"{repo}::a", tgt, "--yes"], logfile)
            r["ours_restore"] = {
                "seconds": t.seconds,
                "cpu_seconds": t.cpu_seconds,
                "engine_seconds": t.result.get("seconds"),
                "written_bytes": t.result.get("written_bytes"),
                "checks": t.result.get("checks"),
                "max_rss": t.max_rss,
                "steps": t.events,
            }

        # Clones: partclone device to device, ours disk to disk.
        with scratch_disk(tmp, "ref-clone.img") as tgt:
            tparts = loopdev.partition(tgt, table_dump)
            require_our_partition(tparts[1])
            log("partclone.ext4 -b")
            t = run_pipeline(
                [["partclone.ext4", "-b", "-s", src_root, "-o", tparts[1], "-L", str(pc_log)]],
                logfile,
            )
            r["ref_clone"] = {"seconds": t.seconds, "cpu_seconds": t.cpu_seconds}
            t = run_pipeline(
                [["partclone.vfat", "-b", "-s", parts[0], "-o", tparts[0], "-L", str(pc_log)]],
                logfile,
            )
            r["ref_clone"]["seconds"] += t.seconds
            r["ref_clone"]["cpu_seconds"] += t.cpu_seconds
        if with_clone:
            with scratch_disk(tmp, "our-clone.img") as tgt:
                log("recovery clone")
                t = run_ours(["clone", src, tgt, "--yes"], logfile)
                r["ours_clone"] = {
                    "seconds": t.seconds,
                    "cpu_seconds": t.cpu_seconds,
                    "max_rss": t.max_rss,
                    "steps": t.events,
                }
    r["loadavg_after"] = os.getloadavg()
    r["ratios"] = ratios(r)
    return r


def ratios(r: dict[str, Any]) -> dict[str, float | None]:
    ref_b = r["ref_backup"]
    out: dict[str, float | None] = {
        "backup_time": r["ours_backup"]["seconds"] / ref_b["seconds"],
        "backup_size": r["ours_backup"]["repo_bytes"] / ref_b["bytes"],
        "restore_time": r["ours_restore"]["seconds"] / r["ref_restore"]["seconds"],
        "second_time": r["ours_second"]["seconds"] / ref_b["seconds"],
        "second_bytes": r["ours_second"]["new_bytes"] / r["ours_backup"]["repo_bytes"],
        "clone_time": (
            r["ours_clone"]["seconds"] / r["ref_clone"]["seconds"] if "ours_clone" in r else None
        ),
        "backup_rss": r["ours_backup"]["max_rss"] / MiB,
        "restore_rss": r["ours_restore"]["max_rss"] / MiB,
    }
    return out


# -- report --------------------------------------------------------------------------------


def _t(d: dict[str, Any]) -> str:
    return f"{d['seconds']:.1f} s (cpu {d['cpu_seconds']:.1f} s)"


def print_run(r: dict[str, Any]) -> None:
    rb, ob, os2 = r["ref_backup"], r["ours_backup"], r["ours_second"]
    rr, orr, rc = r["ref_restore"], r["ours_restore"], r["ref_clone"]
    la = ", ".join(f"{x:.2f}" for x in r["loadavg_before"])
    print(f"\nRun {r['run']} (load average before: {la}; cache warmed in {r['warm_seconds']} s)")
    oc = r.get("ours_clone")
    rows = [
        ("", "partclone (reference)", "recovery (ours)"),
        ("backup", f"{_t(rb)}, {human(rb['bytes'])}", f"{_t(ob)}, {human(ob['repo_bytes'])}"),
        (
            "  fsync of the output",
            f"{rb['fsync_seconds']:.1f} s (not in the time above)",
            "included (syncfs)",
        ),
        ("second image, unchanged", "-", f"{_t(os2)}, {human(os2['new_bytes'])} new"),
        ("restore", f"{_t(rr)}, ext4 partition", f"{_t(orr)}, whole disk + fsck"),
        ("clone", f"{_t(rc)}, ext4 partition", _t(oc) if oc else "clone: not available yet"),
        ("peak memory", "-", f"backup {human(ob['max_rss'])}, restore {human(orr['max_rss'])}"),
    ]
    w0 = max(len(a) for a, _, _ in rows)
    w1 = max(len(b) for _, b, _ in rows)
    for a, b, c in rows:
        print(f"  {a:<{w0}}  {b:<{w1}}  {c}")
    print(f"\n  {'ratio (ours / reference)':<46} {'value':>8}  {'target':<10} {'':4}  cpu ratio")
    cpu = cpu_ratios(r)
    for key, what, limit in TARGETS:
        v = r["ratios"][key]
        if key.endswith("rss"):
            shown, lim = f"{v:.0f} MiB", f"{limit:.0f} MiB"
        elif key == "second_bytes":
            shown, lim = f"{v:.3%}", f"{limit:.0%}"
        else:
            shown = "n/a" if v is None else f"{v:.2f}x"
            lim = f"{limit}x"
        mark = "-" if v is None else ("PASS" if v <= limit else "MISS")
        extra = f"{cpu[key]:.2f}x" if cpu.get(key) is not None else ""
        print(f"  {what:<46} {shown:>8}  <= {lim:<7} {mark:4}  {extra}")
    busy = max(r["loadavg_before"][0], r["loadavg_after"][0])
    if busy > 0.75 * (os.cpu_count() or 1):
        note = (
            f"note: the machine was busy (load {busy:.1f} on {os.cpu_count()} cores): wall "
            "times are stretched unevenly (the kernel shares CPU per thread, and the sides run "
            "different numbers of threads); the cpu ratios are steadier"
        )
        print(textwrap.fill(note, width=96, initial_indent="  ", subsequent_indent="    "))


def cpu_ratios(r: dict[str, Any]) -> dict[str, float | None]:
    """The same time ratios in CPU seconds: less swayed by other work on the machine."""
    ref_b = r["ref_backup"]["cpu_seconds"]
    oc = r.get("ours_clone")
    return {
        "backup_time": r["ours_backup"]["cpu_seconds"] / ref_b,
        "restore_time": r["ours_restore"]["cpu_seconds"] / r["ref_restore"]["cpu_seconds"],
        "second_time": r["ours_second"]["cpu_seconds"] / ref_b,
        "clone_time": oc["cpu_seconds"] / r["ref_clone"]["cpu_seconds"] if oc else None,
    }


def print_steps(r: dict[str, Any]) -> None:
    """Where our time went, from the arrival times of the CLI's step events."""
    print("\n  our phases (from the --json step events):")
    for key in ("ours_backup", "ours_second", "ours_restore", "ours_clone"):
        if key not in r:
            continue
        parts = []
        prev_t, prev_name = 0.0, "start, plan"
        for t, name in r[key]["steps"]:
            parts.append(f"{prev_name} {t - prev_t:.1f} s")
            prev_t, prev_name = t, name
        text = textwrap.fill(
            "; ".join(parts), width=96, initial_indent=f"    {key[5:]}: ", subsequent_indent=" " * 6
        )
        print(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2, help="side-by-side runs (default 2)")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the disk image lives")
    ap.add_argument("--tmp", type=Path, default=Path("/var/tmp"), help="where scratch files go")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the cached reference disk")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("make bench needs root (loop devices, mounts)", file=sys.stderr)
        return 2
    for tool in (
        "partclone.ext4",
        "partclone.vfat",
        "zstd",
        "sfdisk",
        "partx",
        "losetup",
        "mkfs.vfat",
        "mcopy",
    ):
        if not loopdev.have(tool):
            print(f"{tool} is missing: run 'make deps'", file=sys.stderr)
            return 2
    loopdev.ensure_udev()
    if args.rebuild:
        for f in args.cache.glob(f"reference-disk-v{RECIPE_VERSION}.*"):
            f.unlink()
    image = build_reference_disk(args.cache)
    meta = json.loads(image.with_suffix(".json").read_text())
    with_clone = clone_available()
    runs = []
    with tempfile.TemporaryDirectory(prefix="recovery-bench-", dir=args.tmp) as tmpname:
        for i in range(1, args.runs + 1):
            run_dir = Path(tmpname) / f"run{i}"
            run_dir.mkdir()
            try:
                runs.append(one_run(image, run_dir, i, with_clone))
            finally:
                shutil.rmtree(run_dir, ignore_errors=True)
    print(
        f"\nReference disk: {image} ({meta['recipe']}; {meta['real_files']} real files, "
        f"{meta['real_bytes'] / 1e9:.2f} GB)"
    )
    print("Both sides handle the EFI (FAT32) and ext4 partitions, as Clonezilla's savedisk does")
    print(
        "(partclone.vfat + partclone.ext4); ours also saves the table and gaps and fscks each "
        "restored file system."
    )
    for r in runs:
        print_run(r)
        print_steps(r)
    if not with_clone:
        print("\nclone: not available yet")
    RESULTS.write_text(
        json.dumps(
            {
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "host": {"cpus": os.cpu_count(), "kernel": platform.release()},
                "disk": meta,
                "targets": {k: limit for k, _, limit in TARGETS},
                "runs": runs,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"\nResults written to {RESULTS.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
