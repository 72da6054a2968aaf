"""`make bench`, rapid delta restore (issue 15): delta restore time / full restore time.

Run as root (``.venv/bin/python bench/delta_restore.py``; `make bench` runs it after
bench/bench.py). On the reference disk of bench/bench.py (cached in
``/var/cache/recovery-bench/``, built there on first use): image A of it; A restored onto a
scratch disk, about 3 % of its used data changed there (new random files and rewritten ones),
image B of that. Then ``ROUNDS`` rounds, each: A restored onto the scratch disk again (it now
holds A; not timed), then timed, one after the other, B restored onto it by delta (the default)
and B restored onto it with ``--full``. All are whole CLI runs, plan (the delta's measuring read
included) and file system checks included. The ratio is the median delta time over the median
full time: one pair alone moved between 0.20x and 0.28x within half an hour on this machine,
mostly with the full restore (2.6-3.9 s), so the rounds alternate and each run is printed.
Prints the ratio against the target of PRODUCT.md (≤ 0.25) and writes it into the
``"delta_restore"`` section of ``bench/last-results.json``.

Promises: it writes only to loop devices it attached itself (tests/loopdev.py), the cached
reference disk is attached read-only, and everything attached is detached at the end.
"""

from __future__ import annotations

import os
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench as ref

TARGET = 0.25
CHANGE = 0.03
ROUNDS = 3


def change_used_data(part: str, where: Path, fraction: float) -> int:
    """Write about ``fraction`` of the used bytes of ext4 ``part`` anew: half as new random
    files, half by rewriting existing files of about that size with random bytes."""
    with ref.mounted(part, where) as mnt:
        st = os.statvfs(mnt)
        budget = int((st.f_blocks - st.f_bfree) * st.f_frsize * fraction)
        written = 0
        new = mnt / "delta-bench"
        new.mkdir(exist_ok=True)
        index = 0
        while written < budget // 2:
            n = min(8 << 20, budget // 2 - written)
            (new / f"{index:04}.bin").write_bytes(os.urandom(n))
            written += n
            index += 1
        files = sorted(
            (f for f in mnt.rglob("*.so*") if f.is_file() and not f.is_symlink()),
            key=lambda f: str(f),
        )
        for f in files[:: max(1, len(files) // 200)]:
            if written >= budget:
                break
            size = f.stat().st_size
            if 0 < size <= budget - written:
                f.write_bytes(os.urandom(size))
                written += size
        ref.loopdev.run("sync", "-f", str(mnt))
    return written


def main() -> int:
    with ref.reference_and_scratch(
        __doc__.splitlines()[0], "delta restore", "recovery-delta-bench-"
    ) as case:
        repo, logfile, tgt = case.repo, case.logfile, case.tgt
        ref.log("image A of the reference disk")
        ref.run_ours(["backup", case.src, "--to", str(repo), "--name", "a", "--yes"], logfile)
        ref.log("A onto the scratch disk, 3 % of its data changed, image B of it")
        ref.run_ours(["restore", f"{repo}::a", tgt, "--yes", "--full"], logfile)
        root = ref.loopdev.partition_paths(tgt)[1]
        changed = change_used_data(root, case.tmp / "mnt", CHANGE)
        ref.run_ours(["backup", tgt, "--to", str(repo), "--name", "b", "--yes"], logfile)
        rounds: list[tuple[ref.Timed, ref.Timed]] = []
        for n in range(1, ROUNDS + 1):
            ref.log(
                f"round {n} of {ROUNDS}: A onto the scratch disk again (it holds the earlier state)"
            )
            ref.run_ours(["restore", f"{repo}::a", tgt, "--yes"], logfile)
            ref.log(f"round {n}: timed: B onto it by delta, then B with --full")
            delta = ref.run_ours(["restore", f"{repo}::b", tgt, "--yes"], logfile)
            full = ref.run_ours(["restore", f"{repo}::b", tgt, "--yes", "--full"], logfile)
            rounds.append((delta, full))
    # The median run of each kind (ROUNDS is odd), and the ratio of their times.
    delta = sorted((d for d, _ in rounds), key=lambda t: t.seconds)[len(rounds) // 2]
    full = sorted((f for _, f in rounds), key=lambda t: t.seconds)[len(rounds) // 2]
    ratio = delta.seconds / full.seconds
    cpu_ratio = statistics.median(d.cpu_seconds for d, _ in rounds) / statistics.median(
        f.cpu_seconds for _, f in rounds
    )
    section: dict[str, Any] = {
        "measured": datetime.now(UTC).isoformat(timespec="seconds"),
        "changed_bytes": changed,
        "delta": {
            "seconds": delta.seconds,
            "cpu_seconds": delta.cpu_seconds,
            "written_bytes": delta.result.get("written_bytes"),
            "matched_bytes": delta.result.get("matched_bytes"),
        },
        "max_rss": max(delta.max_rss, full.max_rss),
        "full": {
            "seconds": full.seconds,
            "cpu_seconds": full.cpu_seconds,
            "written_bytes": full.result.get("written_bytes"),
        },
        "ratio": ratio,
        "cpu_ratio": cpu_ratio,
        "rounds": [
            {"delta_seconds": d.seconds, "full_seconds": f.seconds, "ratio": d.seconds / f.seconds}
            for d, f in rounds
        ],
    }
    print()
    print(f"changed between A and B: {ref.human(changed)}")
    print(
        f"delta restore of B onto A: {delta.seconds:.1f} s ({delta.cpu_seconds:.1f} s CPU), "
        f"{ref.human(section['delta']['written_bytes'] or 0)} written, "
        f"{ref.human(section['delta']['matched_bytes'] or 0)} already matched"
    )
    print(
        f"full restore of B:         {full.seconds:.1f} s ({full.cpu_seconds:.1f} s CPU), "
        f"{ref.human(section['full']['written_bytes'] or 0)} written"
    )
    for n, (d, f) in enumerate(rounds, 1):
        print(
            f"  round {n}: delta {d.seconds:.2f} s, full {f.seconds:.2f} s: "
            f"{d.seconds / f.seconds:.2f}x"
        )
    print("  the median runs:")
    for label, timed in (("delta", delta), ("full", full)):
        steps = ", ".join(f"{t:.1f} s {name}" for t, name in timed.events)
        print(f"  {label} steps (seconds since start): {steps}")
    verdict = "ok" if ratio <= TARGET else "MISSED"
    print(
        f"delta restore time / full restore time (medians of {ROUNDS} rounds): {ratio:.2f}x "
        f"(target <= {TARGET}x: {verdict}); CPU {cpu_ratio:.2f}x"
    )
    ref.save_section("delta_restore", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
