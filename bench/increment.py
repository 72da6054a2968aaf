"""`make bench`, the increment case (issue 18, item 6): what the next image of a disk adds
after ~60 MB of scattered changes, at today's 4 MiB cell grain, and what a finer grain would add.

Run as root (``.venv/bin/python bench/increment.py``; `make bench` runs it). On the reference
disk of bench/bench.py (cached in ``/var/cache/recovery-bench/``): image A of it; A restored
onto a scratch disk; there, as in the issue, 30 MB of random data written as new files, a
copy of ~25 MB of /usr/share/doc, and one folder of the real files deleted; image B of the
scratch disk into the same location. It prints B's added bytes over A's stored size (the
issue's target: at most 5 %).

Then it estimates what a finer grain of deduplication would have added, without any format
change: for every cell of B whose chunk is new, the cell is compared with the same cell of A
in blocks of 64, 16 and 4 KiB; the blocks that differ are compressed as one piece (zstd -3, as
the engine does) and counted, plus one 32-byte hash per block of the cell for its map. That is
the design "a delta against the same cell of the previous image"; the figures say whether it
would reach the target before anything of the format is written (docs/FORMAT.md first).

Promises as bench.py: only loop devices attached here are written, the cached reference disk
is attached read-only, everything attached is detached and the scratch files removed.
"""

from __future__ import annotations

import os
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import zstandard

import bench as ref

TARGET = 0.05
RANDOM_BYTES = 30 << 20
DOC_BYTES = 25 << 20
GRAINS = (64 << 10, 16 << 10, 4 << 10)
HASH_BYTES = 32


def change(part: str, where: Path) -> dict[str, int]:
    """The issue's ~60 MB of changes on ext4 ``part``: new random files, a copy of part of
    /usr/share/doc, one folder of the existing files deleted. Bytes of each, and ``"floor"``:
    all the new files' bytes compressed as one stream at zstd -3, about the least any
    deduplication at that level can store for them."""
    done = {"random": 0, "copied": 0, "deleted": 0}
    stream = zstandard.ZstdCompressor(level=3).compressobj()
    floor = 0
    with ref.mounted(part, where) as mnt:
        new = mnt / "increment-bench"
        new.mkdir(exist_ok=True)
        for i in range(3):
            data = os.urandom(RANDOM_BYTES // 3)
            (new / f"random-{i}.bin").write_bytes(data)
            done["random"] += len(data)
            floor += len(stream.compress(data))
        docs = new / "doc"
        for f in sorted(Path("/usr/share/doc").rglob("*")):
            if done["copied"] >= DOC_BYTES:
                break
            if f.is_file() and not f.is_symlink():
                target = docs / f.relative_to("/usr/share/doc")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, target)
                data = f.read_bytes()
                done["copied"] += len(data)
                floor += len(stream.compress(data))
        # The first folder (in path order) holding 3-10 MB of files directly.
        for d in sorted(p for p in mnt.rglob("*") if p.is_dir() and not p.is_symlink()):
            if d == new or new in d.parents:
                continue
            size = sum(f.stat().st_size for f in d.iterdir() if f.is_file() and not f.is_symlink())
            if 3 << 20 <= size <= 10 << 20:
                shutil.rmtree(d)
                done["deleted"] = size
                break
        os.sync()
    done["floor"] = floor + len(stream.flush())
    return done


def finer_grain(repo_path: Path, a: str, b: str) -> dict[str, Any]:
    """What B would add at each of :data:`GRAINS` with a delta against A's same cell."""
    from recovery.repository.images import cell_size_of, streams_of
    from recovery.repository.maps import DATA, StreamReader
    from recovery.repository.store import Repository, chunk_name

    repo = Repository.open(str(repo_path))
    bodies = {name: repo.read_manifest(name) for name in (a, b)}
    cell_size = cell_size_of(bodies[a], a)
    streams = {
        name: {s.id: s for s in streams_of(body, repo.manifest_where(name))}
        for name, body in bodies.items()
    }
    readers_a = {sid: StreamReader(repo, s, cell_size, a) for sid, s in streams[a].items()}
    known: set[bytes] = set()
    for r in readers_a.values():
        known.update(rec.digest for _, rec in r.records() if rec.kind == DATA)
    cctx = zstandard.ZstdCompressor(level=3)
    added_4m = 0
    new_cells = 0
    estimate = dict.fromkeys(GRAINS, 0)
    seen: set[bytes] = set()
    for sid, s in streams[b].items():
        rb = StreamReader(repo, s, cell_size, b)
        ra = readers_a.get(sid)
        for cell, rec in rb.records():
            if rec.kind != DATA or rec.digest in known or rec.digest in seen:
                continue
            seen.add(rec.digest)
            new_cells += 1
            added_4m += os.path.getsize(repo_path / chunk_name(rec.digest))
            new = rb.cell_data(cell)
            old = b""
            if ra is not None and cell < ra.stream.cells and ra.record(cell).kind == DATA:
                old = ra.cell_data(cell)
            for grain in GRAINS:
                pieces = [
                    new[o : o + grain]
                    for o in range(0, len(new), grain)
                    if new[o : o + grain] != old[o : o + grain]
                ]
                stored = len(cctx.compress(b"".join(pieces))) if pieces else 0
                estimate[grain] += stored + HASH_BYTES * -(-len(new) // grain)
    return {"new_cells": new_cells, "added_4m": added_4m, "estimate": estimate}


def main() -> int:
    with ref.reference_and_scratch(
        __doc__.splitlines()[0], "increment", "recovery-increment-bench-"
    ) as case:
        repo, logfile, tgt = case.repo, case.logfile, case.tgt
        ref.log("image A of the reference disk")
        first = ref.run_ours(
            ["backup", case.src, "--to", str(repo), "--name", "a", "--yes"], logfile
        )
        ref.log("A onto a scratch disk, ~60 MB of changes there")
        ref.run_ours(["restore", f"{repo}::a", tgt, "--yes", "--full"], logfile)
        changed = change(ref.loopdev.partition_paths(tgt)[1], case.tmp / "mnt")
        ref.log(f"changes: {changed}; image B of the scratch disk")
        second = ref.run_ours(["backup", tgt, "--to", str(repo), "--name", "b", "--yes"], logfile)
        ref.log("comparing B's new cells with A's at finer grains")
        finer = finer_grain(repo, "a", "b")
    a_bytes = int(first.result.get("new_bytes") or 0)
    b_bytes = int(second.result.get("new_bytes") or 0)
    share = b_bytes / a_bytes if a_bytes else float("nan")
    print()
    print(
        f"changes: {ref.human(changed['random'])} random, {ref.human(changed['copied'])} copied "
        f"from /usr/share/doc, {ref.human(changed['deleted'])} deleted"
    )
    print(f"image A stored: {ref.human(a_bytes)}")
    floor = changed["floor"]
    print(
        f"the new files' bytes as one zstd -3 stream: {ref.human(floor)} = {floor / a_bytes:.1%} "
        "of A (about the least any deduplication stores)"
    )
    verdict = "ok" if share <= TARGET else "MISSED"
    print(
        f"image B added:  {ref.human(b_bytes)} = {share:.1%} of A "
        f"(4 MiB cells; target <= {TARGET:.0%}: {verdict}); {finer['new_cells']} new cells, "
        f"{b_bytes / floor:.2f}x the new files' own compressed size"
    )
    grains: dict[str, float] = {}
    for grain, stored in finer["estimate"].items():
        grains[f"{grain >> 10}k"] = stored / a_bytes if a_bytes else float("nan")
        print(
            f"  estimate with a delta against A's same cell in {grain >> 10} KiB blocks: "
            f"{ref.human(stored)} = {stored / a_bytes:.1%} of A"
        )
    section: dict[str, Any] = {
        "measured": datetime.now(UTC).isoformat(timespec="seconds"),
        "changed": changed,
        "a_stored_bytes": a_bytes,
        "b_added_bytes": b_bytes,
        "share": share,
        "over_floor": b_bytes / changed["floor"],
        "new_cells": finer["new_cells"],
        "finer_grain_share": grains,
    }
    ref.save_section("increment", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
