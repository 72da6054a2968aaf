"""`make bench`: our engine against Clonezilla's partclone pipeline, side by side, in one run.

Run as root by `make bench` (``.venv/bin/python bench/bench.py``). It builds the reference disk
of PRODUCT.md ("Performance targets") once and keeps it in a cache outside the repository
(``/var/cache/recovery-bench/``, keyed by RECIPE_VERSION), then, for each run, attaches it
read-only on a fresh loop device, warms the page cache with the blocks both sides read, and
times the partclone pipelines and our CLI on the same machine, one after the other. It prints
a table of absolute figures and ratios against the targets, and writes them to
``bench/last-results.json``.

Then the cost of encryption (issue 19; ``--no-encryption`` skips it, ``--only-encryption`` runs
it alone): our whole-disk backup and restore of the same reference disk into a plain and an
encrypted location, interleaved ``--encryption-reps`` times (3 by default) in alternating order,
with the ratios by best run, by median pair and in CPU seconds; its figures go into the
``"encryption"`` section of the results file. ``bench/profile_encryption.py`` breaks the cost
down per cell.

Then the NTFS case of issue 5 (``--no-ntfs`` skips it, ``--only-ntfs`` runs it alone): a
Windows-style GPT disk (ESP, MSR, C:, recovery partition), cached in the same place under its
own recipe key, whose C: is imaged by ``partclone.ntfs -c | zstd -T0 -3`` and by our CLI (with
and without ``--keep-system-files``) and restored by both; its figures go into the
``"ntfs"`` section of the same results file. A section not run keeps its previous figures.

Promises: it writes only to loop devices it attached itself (through tests/loopdev.py, whose
helpers refuse any other device) and to files under one temporary directory it removes; the
cached images are attached read-only; everything attached is detached in ``finally`` blocks.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import itertools
import json
import os
import platform
import shutil
import stat
import statistics
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
    ("restore_time", "restore time vs zstd -d | partclone -r", 0.3),
    ("second_time", "2nd image time vs full partclone backup", 0.1),
    ("second_bytes", "2nd image new bytes vs repository size", 0.01),
    ("clone_time", "clone time vs partclone -b", 0.5),
    ("backup_rss", "peak memory of our backup (MiB, absolute)", 400.0),
    ("restore_rss", "peak memory of our restore (MiB, absolute)", 400.0),
    ("clone_rss", "peak memory of our clone (MiB, absolute)", 400.0),
)


# -- small tools ---------------------------------------------------------------------------


def save_section(name: str, section: dict[str, Any]) -> None:
    """Write ``section`` as ``name`` into the results file, keeping the other sections (each
    part of `make bench` writes its own; bench/summary.py reads them all)."""
    results: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        results = json.loads(RESULTS.read_text())
    results[name] = section
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nResults written to {RESULTS.relative_to(REPO_ROOT)} ({name})")


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
def scratch_disk(tmp: Path, name: str, size: int = DISK_SIZE) -> Iterator[str]:
    """A blank sparse disk of ``size`` bytes, detached and deleted afterwards (frees cache)."""
    image = tmp / name
    with open(image, "wb") as f:
        f.truncate(size)
    try:
        with attached(image) as dev:
            yield dev
    finally:
        image.unlink(missing_ok=True)


@dataclass(frozen=True)
class ScratchCase:
    """What a case on the reference disk and one scratch disk works with."""

    src: str
    """The reference disk, attached read-only."""
    tgt: str
    """A blank scratch disk of the same size."""
    repo: Path
    """A backup location that does not exist yet."""
    logfile: Path
    tmp: Path


@contextlib.contextmanager
def reference_and_scratch(description: str, what: str, prefix: str) -> Iterator[ScratchCase]:
    """The setup that delta_restore.py and increment.py share: their ``--cache`` and ``--tmp``
    options, root, udevd, the cached reference disk, and a scratch folder under ``--tmp``;
    everything attached is detached and the folder removed afterwards. ``what`` names the
    case in the error when it is not run as root."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--tmp", type=Path, default=Path("/var/tmp"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        print(f"the {what} bench needs root (loop devices, mounts)", file=sys.stderr)
        raise SystemExit(2)
    loopdev.ensure_udev()
    os.chdir(REPO_ROOT)  # run_ours runs this tree's CLI (recovery_command, recovery_env)
    image = build_reference_disk(args.cache)
    args.tmp.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=prefix, dir=args.tmp) as tmpname:
        tmp = Path(tmpname)
        with attached(image, read_only=True) as src, scratch_disk(tmp, "target") as tgt:
            yield ScratchCase(src, tgt, tmp / "repo", tmp / "ours.log", tmp)


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


def choose_real_files(budget: int, roots: tuple[str, ...] = REAL_ROOTS) -> tuple[list[str], int]:
    """Paths (files and symlinks) from ``roots`` in sorted order, up to ``budget`` bytes."""
    chosen: list[str] = []
    seen: set[str] = set()
    total = 0
    for root in roots:
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


def cache_slot(cache: Path, stem: str, version: int, size: int) -> tuple[Path, Path, Path | None]:
    """``(image, metadata, partial)`` for a cached disk of recipe ``stem`` at ``version``.

    ``partial`` is None when the cached image is current; otherwise images of older recipes are
    removed and ``partial`` is a sparse file of ``size`` bytes to build into (renamed to
    ``image`` by the caller once complete, so an interrupted build is never taken as done).
    """
    final = cache / f"{stem}-v{version}.img"
    meta_path = final.with_suffix(".json")
    if final.exists() and meta_path.exists():
        return final, meta_path, None
    cache.mkdir(parents=True, exist_ok=True)
    for old in cache.glob(f"{stem}-v*"):
        if old.name not in (final.name, meta_path.name):
            log(f"removing an image of an older recipe: {old}")
            old.unlink()
    partial = cache / (final.name + ".partial")
    partial.unlink(missing_ok=True)
    log(f"building {final.name} in {partial} (once; cached afterwards)")
    with open(partial, "wb") as f:
        f.truncate(size)
    return final, meta_path, partial


def build_reference_disk(cache: Path) -> Path:
    final, meta_path, partial = cache_slot(cache, "reference-disk", RECIPE_VERSION, DISK_SIZE)
    if partial is None:
        return final
    started = time.monotonic()
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


def _write_random(mnt: Path, nbytes: int = RANDOM_BYTES) -> Path:
    """``nbytes`` of random data, to be deleted: free blocks that a raw imager would copy."""
    log(f"writing {nbytes / 1e9:.1f} GB of random data (deleted after the real files)")
    junk = mnt / "junk"
    junk.mkdir()
    for i in range(-(-nbytes // RANDOM_FILE)):
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
    """Our CLI from this tree (see :func:`recovery_env`), not the venv's ``recovery`` script,
    which runs whichever tree the venv was installed from (another worktree's, say)."""
    return [sys.executable, "-m", "recovery"]


def ensure_bytecode() -> None:
    """Compile our package to bytecode, as the shipped binary has it. Where
    PYTHONDONTWRITEBYTECODE is set (this machine's shells set it), every `python -m recovery`
    would otherwise compile its ~150 modules again: 0.1-0.2 s a command, more after the page
    cache was dropped, which is most of an unchanged second file backup."""
    compileall.compile_dir(REPO_ROOT / "recovery", quiet=1)


def recovery_env() -> dict[str, str]:
    ensure_bytecode()
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{REPO_ROOT}:{path}" if path else str(REPO_ROOT)}


def run_ours(args: list[str], logfile: Path) -> Timed:
    """Time our CLI with ``--json``, noting when each step event arrives."""
    rss_file = logfile.with_name("maxrss")
    # GNU time is small, so what it reports (%M, KiB) is our process tree's largest member.
    cmd = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *recovery_command(), *args, "--json"]
    with open(logfile, "ab") as err:
        err.write(f"$ {' '.join(cmd)}\n".encode())
        err.flush()
        started = time.monotonic()
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=recovery_env())
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
    r = subprocess.run(
        [*recovery_command(), "clone", "--help"],
        capture_output=True,
        check=False,
        env=recovery_env(),
    )
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
    read_extents(jobs)
    return time.monotonic() - started


def read_extents(jobs: list[tuple[str, int, list[tuple[int, int]]]]) -> None:
    """Read each (device, base offset, extents) once, into the page cache."""
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
        "clone_rss": r["ours_clone"]["max_rss"] / MiB if "ours_clone" in r else None,
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
    _print_rows(rows)
    _print_ratios(TARGETS, r["ratios"], cpu_ratios(r))
    _busy_note(r)


def _print_rows(rows: list[tuple[str, str, str]]) -> None:
    w0 = max(len(a) for a, _, _ in rows)
    w1 = max(len(b) for _, b, _ in rows)
    for a, b, c in rows:
        print(f"  {a:<{w0}}  {b:<{w1}}  {c}")


def _print_ratios(
    targets: tuple[tuple[str, str, float], ...],
    values: dict[str, float | None],
    cpu: dict[str, float | None],
) -> None:
    w = max(46, *(len(what) for _, what, _ in targets))
    print(f"\n  {'ratio (ours / reference)':<{w}} {'value':>8}  {'target':<10} {'':4}  cpu ratio")
    for key, what, limit in targets:
        v = values.get(key)
        if v is None:
            shown, lim = "n/a", f"{limit}"
        elif key.endswith("rss"):
            shown, lim = f"{v:.0f} MiB", f"{limit:.0f} MiB"
        elif key == "second_bytes":
            shown, lim = f"{v:.3%}", f"{limit:.0%}"
        else:
            shown = "n/a" if v is None else f"{v:.2f}x"
            lim = f"{limit}x"
        mark = "-" if v is None else ("PASS" if v <= limit else "MISS")
        extra = f"{cpu[key]:.2f}x" if cpu.get(key) is not None else ""
        print(f"  {what:<{w}} {shown:>8}  <= {lim:<7} {mark:4}  {extra}")


def _busy_note(r: dict[str, Any]) -> None:
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
    keys = ("ours_backup", "ours_backup_keep", "ours_second", "ours_restore", "ours_restore_keep")
    for key in (*keys, "ours_clone"):
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


# -- the cost of encryption (issue 19) -----------------------------------------------------
#
# One backup and one restore take 10-30 s here, and on a shared 2-core machine a single pair of
# them moved by ±20 % between runs: more than the cost being measured. So the plain and the
# encrypted side run interleaved, several times, in alternating order, and the ratio is taken
# from the best run of each side (other work only ever adds time), with the median of the
# paired ratios and the CPU ratios beside it.

ENCRYPTION_REPS = 3
ENCRYPTION_TARGETS = (
    ("backup", "encrypted backup time vs unencrypted", 1.1),
    ("restore", "encrypted restore time vs unencrypted", 1.1),
)
BENCH_PASSPHRASE = "bench passphrase"
ENCRYPTION_KINDS = ("plain", "encrypted")


def _timing(t: Timed) -> dict[str, Any]:
    return {
        "seconds": t.seconds,
        "cpu_seconds": t.cpu_seconds,
        "engine_seconds": t.result.get("seconds"),
        "max_rss": t.max_rss,
        "steps": t.events,
    }


def encryption_run(image: Path, tmp: Path, reps: int) -> dict[str, Any]:
    """Our whole-disk backup and restore of the reference disk, into a plain and an encrypted
    location, ``reps`` times; within a repetition both kinds run back to back, the order
    alternating between repetitions, so other work on the machine falls on both alike."""
    logfile = tmp / "commands.log"
    r: dict[str, Any] = {"loadavg_before": os.getloadavg(), "reps": []}
    before = os.environ.get("RECOVERY_PASSPHRASE")
    os.environ["RECOVERY_PASSPHRASE"] = BENCH_PASSPHRASE
    try:
        with attached(image, read_only=True) as src:
            parts = loopdev.partition_paths(src)
            if len(parts) != 2:
                raise RuntimeError(f"{src}: expected 2 partitions, found {parts}")
            log(f"encryption: source {src}, warming the cache")
            r["warm_seconds"] = round(warm(src, parts[1]), 2)
            for i in range(reps):
                kinds = ENCRYPTION_KINDS if i % 2 == 0 else ENCRYPTION_KINDS[::-1]
                one: dict[str, Any] = {"order": list(kinds)}
                repos = {kind: tmp / f"repo-{kind}" for kind in kinds}
                try:
                    for kind in kinds:
                        log(f"encryption {i + 1}/{reps}: recovery backup ({kind} location)")
                        extra = ["--encrypt"] if kind == "encrypted" else []
                        args = ["backup", src, "--to", str(repos[kind]), "--name", "a"]
                        t = run_ours([*args, *extra, "--yes"], logfile)
                        one[f"backup_{kind}"] = _timing(t)
                        one[f"backup_{kind}"]["repo_bytes"] = tree_bytes(repos[kind])[0]
                    for kind in kinds:
                        with scratch_disk(tmp, "target.img") as tgt:
                            log(f"encryption {i + 1}/{reps}: recovery restore ({kind} location)")
                            t = run_ours(["restore", f"{repos[kind]}::a", tgt, "--yes"], logfile)
                            one[f"restore_{kind}"] = _timing(t)
                finally:
                    for repo in repos.values():
                        shutil.rmtree(repo, ignore_errors=True)
                r["reps"].append(one)
    finally:
        if before is None:
            os.environ.pop("RECOVERY_PASSPHRASE", None)
        else:
            os.environ["RECOVERY_PASSPHRASE"] = before
    r["loadavg_after"] = os.getloadavg()
    r["summary"] = encryption_summary(r["reps"])
    return r


def encryption_summary(reps: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per operation: the ratios encrypted / plain, by best run, by median pair, in CPU."""
    out: dict[str, dict[str, Any]] = {}
    for op, _, _ in ENCRYPTION_TARGETS:
        plain = [x[f"{op}_plain"] for x in reps]
        enc = [x[f"{op}_encrypted"] for x in reps]

        out[op] = {
            "plain_seconds": [round(x["seconds"], 2) for x in plain],
            "encrypted_seconds": [round(x["seconds"], 2) for x in enc],
            "plain_cpu_seconds": [round(x["cpu_seconds"], 2) for x in plain],
            "encrypted_cpu_seconds": [round(x["cpu_seconds"], 2) for x in enc],
            "ratio_best": _best_ratio(plain, enc, "seconds"),
            "ratio_median_pair": _median_pair_ratio(plain, enc, "seconds"),
            "cpu_ratio_best": _best_ratio(plain, enc, "cpu_seconds"),
            "cpu_ratio_median_pair": _median_pair_ratio(plain, enc, "cpu_seconds"),
        }
    return out


def _best_ratio(plain: list[dict[str, Any]], enc: list[dict[str, Any]], key: str) -> float:
    return float(min(e[key] for e in enc) / min(p[key] for p in plain))


def _median_pair_ratio(plain: list[dict[str, Any]], enc: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(e[key] / p[key] for p, e in zip(plain, enc, strict=True)))


def print_encryption(r: dict[str, Any]) -> None:
    la = ", ".join(f"{x:.2f}" for x in r["loadavg_before"])
    lb = ", ".join(f"{x:.2f}" for x in r["loadavg_after"])
    print(
        f"\nCost of encryption: our whole-disk backup and restore of the reference disk into a "
        f"plain and an\nencrypted location, {len(r['reps'])} repetitions interleaved (load "
        f"average before: {la}; after: {lb})"
    )
    for op, _, _ in ENCRYPTION_TARGETS:
        sm = r["summary"][op]
        for kind in ENCRYPTION_KINDS:
            walls = ", ".join(f"{x:.1f}" for x in sm[f"{kind}_seconds"])
            cpus = ", ".join(f"{x:.1f}" for x in sm[f"{kind}_cpu_seconds"])
            print(f"  {op:<8} {kind:<10} wall {walls} s; cpu {cpus} s")
    w = max(len(what) for _, what, _ in ENCRYPTION_TARGETS)
    print(
        f"\n  {'ratio (encrypted / plain)':<{w}} {'best':>6} {'median':>7}  {'target':<9} {'':4}"
        "  cpu: best, median"
    )
    for op, what, limit in ENCRYPTION_TARGETS:
        sm = r["summary"][op]
        mark = "PASS" if sm["ratio_best"] <= limit else "MISS"
        print(
            f"  {what:<{w}} {sm['ratio_best']:5.2f}x {sm['ratio_median_pair']:6.2f}x  "
            f"<= {limit}x  {mark:4}  "
            f"{sm['cpu_ratio_best']:.2f}x, {sm['cpu_ratio_median_pair']:.2f}x"
        )
    print(
        textwrap.fill(
            "best: the fastest encrypted run over the fastest plain one (judged against the "
            "target: other work on the machine only adds time); median: the median of the "
            "ratios of the runs paired back to back",
            width=96,
            initial_indent="  ",
            subsequent_indent="    ",
        )
    )
    for i, one in enumerate(r["reps"], 1):
        check = _step_seconds(one["restore_encrypted"]["steps"], "checking the image")
        if check is not None:
            print(f"  repetition {i}: the encrypted restore's check pass took {check:.1f} s")


def _step_seconds(events: list[tuple[float, str]], prefix: str) -> float | None:
    """Seconds from the step event starting with ``prefix`` to the next one."""
    for (t, name), (t_next, _) in itertools.pairwise(events):
        if name.startswith(prefix):
            return t_next - t
    return None


def run_encryption(args: argparse.Namespace) -> dict[str, Any]:
    """The encryption comparison on the reference disk; its own section of the results."""
    image = build_reference_disk(args.cache)
    with tempfile.TemporaryDirectory(prefix="recovery-bench-enc-", dir=args.tmp) as tmpname:
        r = encryption_run(image, Path(tmpname), args.encryption_reps)
    print_encryption(r)
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "targets": {k: limit for k, _, limit in ENCRYPTION_TARGETS},
        **r,
    }


# -- the NTFS case (issue 5) ---------------------------------------------------------------
#
# A Windows disk as Windows Setup lays it out; only C: is imaged, by partclone.ntfs and by us,
# because that is where issue 5's size target lies. Built once, cached next to the ext4 disk.

NTFS_RECIPE_VERSION = 1
NTFS_RECIPE = (
    "3 GiB sparse disk, GPT as Windows Setup lays it out: p1 EFI FAT32 100 MiB, p2 MSR 16 MiB, "
    "p3 NTFS C: 2454 MiB, p4 NTFS recovery (~500 MiB) at the end; on C: through ntfs-3g: "
    "0.6 GB of /dev/urandom files written and synced, 1.2 GB of real files copied with tar in "
    "sorted path order (0.6 GB of shared libraries as Windows/System32, 0.6 GB of Python "
    "installations as Program Files/Python), a 256 MiB pagefile.sys of random data, then the "
    "random files deleted"
)
NTFS_DISK_SIZE = 3 << 30
NTFS_C_SIZE = 2454 * MiB
NTFS_RANDOM_BYTES = 600_000_000
NTFS_PAGEFILE = 256 * MiB
NTFS_WINRE_BYTES = 32 * MiB
# (budget, ((source root, folder on C:), ...)): each group walked like REAL_ROOTS, in order,
# until its budget; the later roots only fill up on machines that lack the first.
NTFS_TREES: tuple[tuple[int, tuple[tuple[str, str], ...]], ...] = (
    (600_000_000, (("/usr/lib/x86_64-linux-gnu", "Windows/System32"),)),
    (
        600_000_000,
        (
            ("/root/.pyenv/versions", "Program Files/Python"),
            ("/usr/lib/python3", "Program Files/Python3"),
            ("/usr/share", "ProgramData"),
        ),
    ),
)
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
MSR_TYPE = "E3C9E316-0B5C-4DB8-817D-F92DF00215AE"
BASIC_DATA_TYPE = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
WINRE_TYPE = "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC"
NTFS_SFDISK_SCRIPT = (
    "label: gpt\n"
    f'size={EFI_SIZE // 512}, type={ESP_TYPE}, name="EFI system partition"\n'
    f'size={16 * MiB // 512}, type={MSR_TYPE}, name="Microsoft reserved partition"\n'
    f'size={NTFS_C_SIZE // 512}, type={BASIC_DATA_TYPE}, name="Basic data partition"\n'
    # What Windows Setup sets on its recovery partition: required, no drive letter.
    f'type={WINRE_TYPE}, attrs="RequiredPartition GUID:63"\n'
)
NTFS_TOOLS = ("partclone.ntfs", "mkfs.ntfs", "ntfs-3g", "ntfsfix", "ntfsinfo")

# Issue 5 and PRODUCT.md's targets, on C: (key, what, limit).
NTFS_TARGETS = (
    ("size_keep", "size vs partclone.ntfs -c | zstd -T0 -3, --keep-system-files", 1.0),
    ("size", "size, default (pagefile.sys left out)", 1.0),
    ("backup_time_keep", "backup time, --keep-system-files", 0.5),
    ("backup_time", "backup time, default", 0.5),
    ("restore_time_keep", "restore time vs zstd -d | partclone.ntfs -r", 0.5),
    ("restore_time", "restore time, default image", 0.5),
    ("backup_rss", "peak memory of our backup (MiB, absolute)", 400.0),
    ("restore_rss", "peak memory of our restore (MiB, absolute)", 400.0),
)


@contextlib.contextmanager
def ntfs_mounted(part: str, where: Path, ntfs_log: Path) -> Iterator[Path]:
    """``part`` mounted read-write through ntfs-3g, unmounted and its daemon reaped afterwards.

    ntfs-3g runs as our child (``no_detach``), so the exit of the very process that wrote the
    volume is waited for: only then is the volume marked clean and the device closed.
    """
    require_our_partition(part)
    where.mkdir(parents=True, exist_ok=True)
    with open(ntfs_log, "ab") as err:
        p = subprocess.Popen(
            ["ntfs-3g", "-o", "no_detach", part, str(where)],
            stdout=err,
            stderr=err,
        )
    try:
        for _ in range(300):
            if os.path.ismount(where):
                break
            if p.poll() is not None:
                raise RuntimeError(f"ntfs-3g {part} exited with {p.returncode}; see {ntfs_log}")
            time.sleep(0.1)
        else:
            raise RuntimeError(f"ntfs-3g did not mount {part} in 30 s; see {ntfs_log}")
        yield where
    finally:
        if os.path.ismount(where):
            loopdev.run("umount", str(where))
        try:
            code = p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise RuntimeError(f"ntfs-3g on {part} did not exit after umount") from None
        if code != 0:
            raise RuntimeError(f"ntfs-3g on {part} exited with {code}; see {ntfs_log}")


def mkntfs(part: str, label: str) -> None:
    start = Path(f"/sys/class/block/{Path(part).name}/start").read_text().strip()
    # -p: the start sector goes into the boot sector as Windows writes it (mkntfs cannot ask a
    # loop partition for its geometry).
    loopdev.mkfs(part, "ntfs", "-L", label, "-p", start, "-H", "255", "-S", "63")


def ntfs_summary(part: str) -> dict[str, str]:
    info = loopdev.run("ntfsinfo", "-m", part).stdout
    keep = ("Cluster Size", "Volume Size in Clusters", "Free Clusters")
    out = {}
    for line in info.splitlines():
        k, _, v = line.partition(":")
        if k.strip() in keep and k.strip() not in out:
            out[k.strip()] = v.strip()
    return out


def build_ntfs_disk(cache: Path) -> Path:
    final, meta_path, partial = cache_slot(cache, "ntfs-disk", NTFS_RECIPE_VERSION, NTFS_DISK_SIZE)
    if partial is None:
        return final
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="recovery-bench-build-") as tmpname:
        tmp = Path(tmpname)
        ntfs_log = tmp / "ntfs-3g.log"
        with attached(partial) as dev:
            esp, _msr, c, winre = loopdev.partition(dev, NTFS_SFDISK_SCRIPT)
            loopdev.mkfs(esp, "vfat", "-F", "32", "-n", "SYSTEM")
            _fill_efi(esp)
            mkntfs(c, "Windows")
            mkntfs(winre, "Recovery")
            with ntfs_mounted(c, tmp / "c", ntfs_log) as mnt:
                # As on ext4: the random files go first and are deleted last, so the real
                # files and pagefile.sys cannot take their clusters.
                junk = _write_random(mnt, NTFS_RANDOM_BYTES)
                nfiles, nbytes = _copy_ntfs_trees(mnt, tmp)
                log(f"writing pagefile.sys ({human(NTFS_PAGEFILE)} of random data)")
                with open(mnt / "pagefile.sys", "wb") as out:
                    subprocess.run(
                        ["head", "-c", str(NTFS_PAGEFILE), "/dev/urandom"], stdout=out, check=True
                    )
                shutil.rmtree(junk)
                loopdev.run("sync", "-f", str(mnt))
            with ntfs_mounted(winre, tmp / "winre", ntfs_log) as mnt:
                re_dir = mnt / "Recovery" / "WindowsRE"
                re_dir.mkdir(parents=True)
                with open(re_dir / "Winre.wim", "wb") as out:
                    subprocess.run(
                        ["head", "-c", str(NTFS_WINRE_BYTES), "/dev/urandom"],
                        stdout=out,
                        check=True,
                    )
                (re_dir / "ReAgent.xml").write_text("<?xml version='1.0'?><WindowsRE/>\r\n")
            for part in (c, winre):
                r = loopdev.run("ntfsfix", "-n", part, check=False)
                if r.returncode != 0:
                    raise RuntimeError(f"the new NTFS {part} is not clean: {r.stdout[-500:]}")
            summary = ntfs_summary(c)
            loopdev.settle(dev)
    meta = {
        "recipe_version": NTFS_RECIPE_VERSION,
        "recipe": NTFS_RECIPE,
        "built": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_seconds": round(time.monotonic() - started, 1),
        "real_files": nfiles,
        "real_bytes": nbytes,
        "pagefile_bytes": NTFS_PAGEFILE,
        "ntfs_summary": summary,
    }
    partial.rename(final)
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    log(f"NTFS reference disk ready in {meta['build_seconds']} s: {final}")
    return final


def _copy_ntfs_trees(mnt: Path, tmp: Path) -> tuple[int, int]:
    """NTFS_TREES onto C:, each source root into its folder, with tar in sorted path order."""
    nfiles = nbytes = 0
    for budget, pairs in NTFS_TREES:
        paths, total = choose_real_files(budget, tuple(src for src, _ in pairs))
        nfiles += len(paths)
        nbytes += total
        for src, folder in pairs:
            # choose_real_files walks the roots in this order and never repeats a path, so the
            # first root a path lies under is the one it came from.
            mine = [p for p in paths if p.startswith(src + "/")]
            paths = [p for p in paths if not p.startswith(src + "/")]
            if not mine:
                continue
            log(f"copying {len(mine)} files from {src} to C:/{folder}")
            listing = tmp / "files.list"
            listing.write_bytes(b"\0".join(os.path.relpath(p, src).encode() for p in mine) + b"\0")
            dest = mnt / folder
            dest.mkdir(parents=True, exist_ok=True)
            reader = subprocess.Popen(
                ["tar", "-C", src, "--null", "-T", str(listing), "-cf", "-"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            assert reader.stdout is not None
            # ntfs-3g keeps no Unix owners or modes (it ignores chown and chmod): don't ask.
            unpack = subprocess.run(
                ["tar", "-xf", "-", "-C", str(dest), "--no-same-owner", "--no-same-permissions"],
                stdin=reader.stdout,
                capture_output=True,
                text=True,
            )
            reader.stdout.close()
            if reader.wait() not in (0, 1):  # 1: a file changed while it was read; harmless
                raise RuntimeError(f"tar could not read the chosen files under {src}")
            if unpack.returncode != 0:
                raise RuntimeError(f"tar could not write to C:/{folder}: {unpack.stderr[-800:]}")
    loopdev.run("sync", "-f", str(mnt))
    return nfiles, nbytes


def warm_ntfs(disk: str, c_part: str, c_number: int) -> float:
    """As :func:`warm`, for C: only: its used clusters, pagefile.sys included (both sides)."""
    started = time.monotonic()
    try:
        from recovery.engine.sources import plan_sources, stream_extents

        plan = plan_sources([c_part], keep_system_files=True)
        jobs: list[tuple[str, int, list[tuple[int, int]]]] = []
        dfd = os.open(disk, os.O_RDONLY)
        try:
            for sp in plan.streams:
                ext = list(stream_extents(sp, dfd))
                jobs.append((disk, sp.start, ext))
                if sp.number == c_number:
                    jobs.append((c_part, 0, ext))
        finally:
            os.close(dfd)
    except Exception as e:  # the engine's reader is a shortcut; reading everything also works
        log(f"warming by reading everything ({type(e).__name__}: {e})")
        jobs = [(disk, 0, [(0, NTFS_DISK_SIZE)]), (c_part, 0, [(0, NTFS_C_SIZE)])]
    read_extents(jobs)
    return time.monotonic() - started


def _ours(t: Timed, **extra: Any) -> dict[str, Any]:
    return {
        "seconds": t.seconds,
        "cpu_seconds": t.cpu_seconds,
        "engine_seconds": t.result.get("seconds"),
        "max_rss": t.max_rss,
        "steps": t.events,
        **extra,
    }


def ntfs_run(image: Path, tmp: Path, index: int) -> dict[str, Any]:
    logfile = tmp / "commands.log"
    pc_log = tmp / "partclone.log"
    r: dict[str, Any] = {"run": index, "loadavg_before": os.getloadavg()}
    with attached(image, read_only=True) as src:
        parts = loopdev.partition_paths(src)
        if len(parts) != 4:
            raise RuntimeError(f"{src}: expected 4 partitions, found {parts}")
        c_part = parts[2]
        require_our_partition(c_part)
        log(f"NTFS run {index}: source {src} (C: {c_part}), warming the cache")
        r["warm_seconds"] = round(warm_ntfs(src, c_part, 3), 2)
        table_dump = loopdev.run("sfdisk", "-d", src).stdout

        ref_img = tmp / "c.pcl.zst"
        log("partclone.ntfs -c | zstd -T0 -3 (C:)")
        t = run_pipeline(
            [
                ["partclone.ntfs", "-c", "-s", c_part, "-o", "-", "-L", str(pc_log)],
                ["zstd", "-T0", "-3", "-q", "-o", str(ref_img)],
            ],
            logfile,
        )
        r["ref_backup"] = {
            "seconds": t.seconds,
            "cpu_seconds": t.cpu_seconds,
            "bytes": ref_img.stat().st_size,
        }
        fs = time.monotonic()
        loopdev.run("sync", str(ref_img))
        r["ref_backup"]["fsync_seconds"] = time.monotonic() - fs

        repos = {}
        for key, extra in (("ours_backup", []), ("ours_backup_keep", ["--keep-system-files"])):
            repo = repos[key] = tmp / key
            log(f"recovery backup C: {' '.join(extra) or '(default)'}")
            t = run_ours(
                ["backup", c_part, "--to", str(repo), "--name", "n", "--yes", *extra], logfile
            )
            r[key] = _ours(
                t,
                chunk_bytes=tree_bytes(repo / "chunks")[0],
                repo_bytes=tree_bytes(repo)[0],
                notes=t.result.get("notes"),
            )

        # Reference restore: C: only, into a disk that already has the source's table.
        with scratch_disk(tmp, "ref-target.img", NTFS_DISK_SIZE) as tgt:
            tparts = loopdev.partition(tgt, table_dump)
            require_our_partition(tparts[2])
            log("zstd -d | partclone.ntfs -r (C:)")
            t = run_pipeline(
                [
                    ["zstd", "-d", "-c", "-q", str(ref_img)],
                    ["partclone.ntfs", "-r", "-s", "-", "-o", tparts[2], "-L", str(pc_log)],
                ],
                logfile,
            )
            r["ref_restore"] = {"seconds": t.seconds, "cpu_seconds": t.cpu_seconds}
        ref_img.unlink()
        # Ours onto a blank disk: the table (from the image), then C:, then its check.
        for key, repo_key in (
            ("ours_restore_keep", "ours_backup_keep"),
            ("ours_restore", "ours_backup"),
        ):
            with scratch_disk(tmp, "our-target.img", NTFS_DISK_SIZE) as tgt:
                log(f"recovery restore ({repo_key[5:]} image)")
                t = run_ours(["restore", f"{repos[repo_key]}::n", tgt, "--yes"], logfile)
                r[key] = _ours(
                    t, written_bytes=t.result.get("written_bytes"), checks=t.result.get("checks")
                )
    r["loadavg_after"] = os.getloadavg()
    r["ratios"] = ntfs_ratios(r)
    r["cpu_ratios"] = ntfs_cpu_ratios(r)
    return r


def ntfs_ratios(r: dict[str, Any]) -> dict[str, float | None]:
    rb, rr = r["ref_backup"], r["ref_restore"]
    return {
        "size_keep": r["ours_backup_keep"]["chunk_bytes"] / rb["bytes"],
        "size": r["ours_backup"]["chunk_bytes"] / rb["bytes"],
        "backup_time_keep": r["ours_backup_keep"]["seconds"] / rb["seconds"],
        "backup_time": r["ours_backup"]["seconds"] / rb["seconds"],
        "restore_time_keep": r["ours_restore_keep"]["seconds"] / rr["seconds"],
        "restore_time": r["ours_restore"]["seconds"] / rr["seconds"],
        "backup_rss": max(r["ours_backup"]["max_rss"], r["ours_backup_keep"]["max_rss"]) / MiB,
        "restore_rss": max(r["ours_restore"]["max_rss"], r["ours_restore_keep"]["max_rss"]) / MiB,
    }


def ntfs_cpu_ratios(r: dict[str, Any]) -> dict[str, float | None]:
    rb, rr = r["ref_backup"]["cpu_seconds"], r["ref_restore"]["cpu_seconds"]
    return {
        "backup_time_keep": r["ours_backup_keep"]["cpu_seconds"] / rb,
        "backup_time": r["ours_backup"]["cpu_seconds"] / rb,
        "restore_time_keep": r["ours_restore_keep"]["cpu_seconds"] / rr,
        "restore_time": r["ours_restore"]["cpu_seconds"] / rr,
    }


def print_ntfs_run(r: dict[str, Any]) -> None:
    rb, rr = r["ref_backup"], r["ref_restore"]
    ob, ok = r["ours_backup"], r["ours_backup_keep"]
    orr, ork = r["ours_restore"], r["ours_restore_keep"]
    la = ", ".join(f"{x:.2f}" for x in r["loadavg_before"])
    lb = ", ".join(f"{x:.2f}" for x in r["loadavg_after"])
    print(
        f"\nNTFS run {r['run']} (load average before: {la}; after: {lb}; "
        f"cache warmed in {r['warm_seconds']} s)"
    )
    rows = [
        ("C: (NTFS)", "partclone.ntfs (reference)", "recovery (ours)"),
        ("backup", f"{_t(rb)}, {human(rb['bytes'])}", f"{_t(ob)}, {human(ob['chunk_bytes'])}"),
        (
            "backup --keep-system-files",
            "(partclone stores pagefile.sys)",
            f"{_t(ok)}, {human(ok['chunk_bytes'])}",
        ),
        (
            "  fsync of the output",
            f"{rb['fsync_seconds']:.1f} s (not in the time above)",
            "included (syncfs)",
        ),
        (
            "restore, kept-files image",
            f"{_t(rr)}, C: into an existing table",
            f"{_t(ork)}, table + C: + check",
        ),
        ("restore, default image", "-", f"{_t(orr)}, table + C: + check"),
    ]
    _print_rows(rows)
    print(
        "  (our sizes: the repository's chunks; its index and manifests add "
        f"{human(ok['repo_bytes'] - ok['chunk_bytes'])})"
    )
    _print_ratios(NTFS_TARGETS, r["ratios"], r["cpu_ratios"])
    _busy_note(r)


def run_ext4(args: argparse.Namespace) -> dict[str, Any]:
    """The ext4 comparison: build or reuse the disk, run, print; the results file's section."""
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
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "disk": meta,
        "targets": {k: limit for k, _, limit in TARGETS},
        "runs": runs,
    }


def run_ntfs(args: argparse.Namespace) -> dict[str, Any]:
    """The NTFS comparison (issue 5), as :func:`run_ext4`; its own section of the results."""
    if args.rebuild:
        for f in args.cache.glob(f"ntfs-disk-v{NTFS_RECIPE_VERSION}.*"):
            f.unlink()
    image = build_ntfs_disk(args.cache)
    meta = json.loads(image.with_suffix(".json").read_text())
    runs = []
    with tempfile.TemporaryDirectory(prefix="recovery-bench-ntfs-", dir=args.tmp) as tmpname:
        for i in range(1, args.runs + 1):
            run_dir = Path(tmpname) / f"run{i}"
            run_dir.mkdir()
            try:
                runs.append(ntfs_run(image, run_dir, i))
            finally:
                shutil.rmtree(run_dir, ignore_errors=True)
    print(
        f"\nNTFS reference disk: {image} ({meta['recipe']}; {meta['real_files']} real files, "
        f"{meta['real_bytes'] / 1e9:.2f} GB)"
    )
    print(
        textwrap.fill(
            "Both sides image C: only. partclone stores pagefile.sys; our default leaves its "
            "contents out (Windows recreates it), so the size target is judged with "
            "--keep-system-files. partclone restores C: into a disk that already holds the "
            "table; ours writes the whole table from the image onto a blank disk (ESP, MSR and "
            "recovery partition created empty), then C:, and checks it with ntfsfix.",
            width=96,
        )
    )
    for r in runs:
        print_ntfs_run(r)
        print_steps(r)
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "disk": meta,
        "targets": {k: limit for k, _, limit in NTFS_TARGETS},
        "runs": runs,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2, help="side-by-side runs (default 2)")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the disk images live")
    ap.add_argument("--tmp", type=Path, default=Path("/var/tmp"), help="where scratch files go")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the cached reference disks")
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--no-ntfs", action="store_true", help="skip the NTFS case")
    which.add_argument("--only-ntfs", action="store_true", help="run only the NTFS case")
    which.add_argument(
        "--only-encryption", action="store_true", help="run only the cost-of-encryption case"
    )
    ap.add_argument("--no-encryption", action="store_true", help="skip the encryption case")
    ap.add_argument(
        "--encryption-reps",
        type=int,
        default=ENCRYPTION_REPS,
        help=f"interleaved repetitions of the encryption case (default {ENCRYPTION_REPS})",
    )
    args = ap.parse_args()
    ext4 = not (args.only_ntfs or args.only_encryption)
    ntfs = not (args.no_ntfs or args.only_encryption)
    encryption = args.only_encryption or not (args.only_ntfs or args.no_encryption)
    if os.geteuid() != 0:
        print("make bench needs root (loop devices, mounts)", file=sys.stderr)
        return 2
    tools = ["zstd", "sfdisk", "partx", "losetup", "mkfs.vfat", "mcopy"]
    if ext4:
        tools += ["partclone.ext4", "partclone.vfat"]
    if ntfs:
        tools += NTFS_TOOLS
    for tool in tools:
        if not loopdev.have(tool):
            print(f"{tool} is missing: run 'make deps'", file=sys.stderr)
            return 2
    loopdev.ensure_udev()
    # A section not measured this time (ext4 with --only-ntfs, NTFS with --no-ntfs) keeps its
    # last figures; each section says when it was measured.
    results: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        results = json.loads(RESULTS.read_text())
    if ext4:
        results.update(run_ext4(args))
    if encryption:
        results["encryption"] = run_encryption(args)
    if ntfs:
        results["ntfs"] = run_ntfs(args)
    results["host"] = {"cpus": os.cpu_count(), "kernel": platform.release()}
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nResults written to {RESULTS.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
