"""`make bench-files` (also part of `make bench`), issue 13's figures: file backup of a ~1 GB
tree of real files against restic and borg, side by side, in one run.

Run as root from the repository (``.venv/bin/python bench/file_backup.py``). The tree (libraries
from /usr/lib/x86_64-linux-gnu, many small files from Python's library and /usr/share, cut off
at about 1 GB) is built once and cached in /var/cache/recovery-bench/files-tree. Each tool backs
it up into its own new repository under a temporary directory, three times: first, again with
nothing changed, and after 2 % of the files changed (each one rewritten with a few KiB changed
in its middle, or appended to). Compression is comparable: ours zstd level 3, borg
``zstd,3``, restic ``--compression auto`` (its zstd default; restic always encrypts, and so
pays AES besides). Between runs the page cache is dropped, so every tool reads the tree cold.

Prints wall time and repository growth per run, and the ratios against the targets (first
backup ≤ 0.7x restic's time and ≤ 1.0x its size; second ≤ 0.1x the first's time and ≤ 1 % new
bytes) and our peak memory; writes its section of bench/last-results.json. Leaves nothing behind
but the cached tree.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import bench as ref  # noqa: E402

CACHE = Path("/var/cache/recovery-bench/files-tree")
TARGET_BYTES = 1000 << 20
SOURCES = [
    "/usr/lib/python3.11",
    "/usr/share/perl",
    "/usr/share/doc",
    "/usr/share/i18n",
    "/usr/lib/x86_64-linux-gnu",
]
PASSWORD = "bench-only"


def tree_bytes(root: Path) -> tuple[int, int]:
    files = total = 0
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            if os.path.isfile(p) and not os.path.islink(p):
                files += 1
                total += os.path.getsize(p)
    return files, total


def build_tree() -> Path:
    done = CACHE / ".complete"
    if done.exists():
        return CACHE / "tree"
    shutil.rmtree(CACHE, ignore_errors=True)
    tree = CACHE / "tree"
    tree.mkdir(parents=True)
    total = 0
    for src in SOURCES:
        for dirpath, dirnames, names in os.walk(src):
            dirnames.sort()
            rel = os.path.relpath(dirpath, "/")
            os.makedirs(tree / rel, exist_ok=True)
            for n in sorted(names):
                s = os.path.join(dirpath, n)
                if os.path.islink(s) or not os.path.isfile(s):
                    continue
                try:
                    shutil.copy2(s, tree / rel / n)
                except OSError:
                    continue
                total += os.path.getsize(s)
                if total >= TARGET_BYTES:
                    break
            if total >= TARGET_BYTES:
                break
        if total >= TARGET_BYTES:
            break
    done.write_text("")
    return tree


def drop_caches() -> None:
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def du(path: Path) -> int:
    return sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(path) for n in names)


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, int]:
    """Wall and CPU seconds of ``cmd`` and its peak memory in bytes, read cold (the page cache
    dropped first). CPU seconds sway less than wall time when other work shares the machine."""
    drop_caches()
    with tempfile.TemporaryFile() as out:
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(p.pid, 0)
        took = time.monotonic() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode not in (0, 1):  # borg exits 1 on warnings
            out.seek(0)
            text = out.read().decode(errors="replace")
            raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}):\n{text}")
    return took, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024


def change_two_percent(tree: Path, seed: int = 13) -> int:
    files = sorted(p for p in tree.rglob("*") if p.is_file() and not p.is_symlink())
    rng = random.Random(seed)
    chosen = rng.sample(files, max(1, len(files) * 2 // 100))
    for p in chosen:
        size = p.stat().st_size
        with open(p, "r+b") as f:
            if size > 64 << 10:
                f.seek(size // 2)
                f.write(rng.randbytes(4096))
            else:
                f.seek(0, 2)
                f.write(rng.randbytes(512))
    return len(chosen)


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("run as root (drop_caches): sudo make bench-files")
    ref.ensure_bytecode()
    for tool in ("restic", "borg"):
        if shutil.which(tool) is None:
            package = "borgbackup" if tool == "borg" else tool
            raise SystemExit(f"{tool} is missing: apt-get install {package}")
    cached = build_tree()
    with tempfile.TemporaryDirectory(prefix="recovery-bench-files-", dir="/var/tmp") as t:
        work = Path(t)
        tree = work / "tree"
        shutil.copytree(cached, tree, symlinks=True)
        files, total = tree_bytes(tree)
        print(f"tree: {files} files, {total / 2**20:.0f} MiB ({tree})", flush=True)
        env = dict(
            os.environ,
            RESTIC_PASSWORD=PASSWORD,
            BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
            BORG_BASE_DIR=str(work / "borg-home"),
            XDG_CACHE_HOME=str(work / "cache"),
        )
        ours, restic, borg = work / "ours", work / "restic", work / "borg"
        subprocess.run(
            ["restic", "init", "--repo", str(restic)], env=env, check=True, capture_output=True
        )
        subprocess.run(
            ["borg", "init", "-e", "none", str(borg)], env=env, check=True, capture_output=True
        )
        runs: dict[str, dict[str, dict[str, float]]] = {"ours": {}, "restic": {}, "borg": {}}

        def one(label: str) -> None:
            for name, repo, cmd in (
                (
                    "ours",
                    ours,
                    [
                        sys.executable,
                        "-m",
                        "recovery",
                        "backup",
                        "--files",
                        str(tree),
                        "--to",
                        str(ours),
                        "--name",
                        label,
                        "--level",
                        "3",
                    ],
                ),
                (
                    "restic",
                    restic,
                    ["restic", "--repo", str(restic), "backup", "--compression", "auto", str(tree)],
                ),
                (
                    "borg",
                    borg,
                    ["borg", "create", "--compression", "zstd,3", f"{borg}::{label}", str(tree)],
                ),
            ):
                before = du(repo) if repo.exists() else 0
                took, cpu, rss = timed(cmd, env)
                grown = du(repo) - before
                runs[name][label] = {
                    "seconds": round(took, 2),
                    "cpu_seconds": round(cpu, 2),
                    "new_bytes": grown,
                    "max_rss": rss,
                }
                print(
                    f"  {label:<8} {name:<7} {took:7.1f} s  CPU {cpu:6.1f} s  "
                    f"+{grown / 2**20:8.1f} MiB",
                    flush=True,
                )

        print("first backup (page cache dropped before each):")
        one("first")
        print("second backup, nothing changed:")
        one("second")
        changed = change_two_percent(tree)
        print(f"third backup, after {changed} files (2 %) changed:")
        one("third")

    o, r, b = runs["ours"], runs["restic"], runs["borg"]
    ratios = {
        "first_time_vs_restic": o["first"]["seconds"] / r["first"]["seconds"],
        "first_size_vs_restic": o["first"]["new_bytes"] / r["first"]["new_bytes"],
        "first_cpu_vs_restic": o["first"]["cpu_seconds"] / r["first"]["cpu_seconds"],
        "first_time_vs_borg": o["first"]["seconds"] / b["first"]["seconds"],
        "first_size_vs_borg": o["first"]["new_bytes"] / b["first"]["new_bytes"],
        "second_time_vs_first": o["second"]["seconds"] / o["first"]["seconds"],
        "second_cpu_vs_first": o["second"]["cpu_seconds"] / o["first"]["cpu_seconds"],
        "second_new_bytes_share": o["second"]["new_bytes"] / o["first"]["new_bytes"],
        "third_new_bytes_share": o["third"]["new_bytes"] / o["first"]["new_bytes"],
        "third_time_vs_restic": o["third"]["seconds"] / r["third"]["seconds"],
    }
    targets = {
        "first_time_vs_restic": 0.7,
        "first_size_vs_restic": 1.0,
        "second_time_vs_first": 0.1,
        "second_new_bytes_share": 0.01,
    }
    print("\nours / reference            ratio   target")
    for k, v in ratios.items():
        t = targets.get(k)
        mark = "" if t is None else ("  ok" if v <= t else "  MISSED")
        print(f"  {k:<28} {v:6.3f}   {'' if t is None else f'<= {t}'}{mark}")
    peak = max(run["max_rss"] for run in o.values())
    print(f"  peak memory of our file backup: {peak / 2**20:.0f} MiB")
    ref.save_section(
        "file_backup",
        {
            "tree": {"files": files, "bytes": total},
            "runs": runs,
            "ratios": ratios,
            "targets": targets,
            "max_rss": peak,
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )


if __name__ == "__main__":
    main()
