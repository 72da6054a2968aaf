"""What encryption costs per cell, phase by phase, on the reference disk (issue 19).

Run by hand as root after `make bench` has built the disk: ``.venv/bin/python
bench/profile_encryption.py [--cells N]``. It takes the first N stored cells of the ext4
partition (256 by default: 1 GiB) and runs, on one thread, what our backup and restore do to
each cell in a plain and in an encrypted location, using the engine's own functions: the chunk
name (BLAKE3, or BLAKE3 keyed with the id key), zstd, sealing (AES-256-GCM); then opening,
decompressing and checking. CPU seconds of this thread are measured per phase, so the figures
hold on a busy machine, where wall times of whole runs do not. It also times the key derivation
(Argon2id), which a command pays once per location it opens.

Promises: the disk is attached read-only; nothing is written anywhere.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from profile_engine import Clock, read_cell

import bench as harness
from recovery.core.cells import cells
from recovery.devices import blockio
from recovery.engine.backup import CELL_SIZE
from recovery.engine.sources import plan_sources, stream_extents
from recovery.repository import sealing
from recovery.repository.store import decode_chunk, encode_chunk, hash_bytes
from tests import loopdev


def sample(disk: str, count: int) -> list[bytearray]:
    """The first ``count`` cells of the ext4 partition that a backup stores (not all zero)."""
    plan = plan_sources([disk])
    (sp,) = [s for s in plan.streams if s.number == 2]
    fd = blockio.open_read(disk)
    out: list[bytearray] = []
    try:
        for cell in cells(stream_extents(sp, fd), CELL_SIZE, sp.size):
            buf = read_cell(fd, sp.start + cell.number * CELL_SIZE, cell)
            if buf.count(0) != len(buf):
                out.append(buf)
            if len(out) == count:
                break
    finally:
        os.close(fd)
    return out


def profile(bufs: list[bytearray]) -> None:
    keys = sealing.Keys(os.urandom(sealing.MASTER_SIZE))
    raw = sum(len(b) for b in bufs)
    plain, enc = Clock(), Clock()
    stored = 0
    scratch = bytearray(max(len(b) for b in bufs) + 64 * 1024)
    # Each cell goes through both paths, backup then restore, and nothing is kept (as in the
    # engine, where every buffer is freed after its chunk is written); which path goes first
    # alternates, so neither always meets the cell cold in the CPU caches.
    for i, buf in enumerate(bufs):
        for side in ("plain", "encrypted") if i % 2 == 0 else ("encrypted", "plain"):
            if side == "plain":
                plain.start()
                digest = hash_bytes(buf)
                plain.lap("backup: name (BLAKE3)")
                blob = encode_chunk(buf, 3)
                plain.lap("backup: zstd -3")
                decode_chunk(blob, digest, "profile")
                plain.lap("restore: zstd -d + BLAKE3 check")
                stored += len(blob)
                del blob
            else:
                enc.start()
                kdigest = keys.hash(buf)
                enc.lap("backup: name (keyed BLAKE3)")
                kblob = encode_chunk(buf, 3)
                enc.lap("backup: zstd -3")
                sealed = keys.seal(kblob, kdigest)
                del kblob
                enc.lap("backup: seal (AES-256-GCM)")
                # Opened into one reused buffer, as the engine does (store._scratch).
                keys.open_into(sealed, kdigest, "profile", scratch)
                enc.lap("restore check pass: open (AES-256-GCM)")
                opened = keys.open_into(sealed, kdigest, "profile", scratch)
                enc.lap("restore: open again (AES-256-GCM)")
                decode_chunk(opened, kdigest, "profile", keys.hash)
                enc.lap("restore: zstd -d + keyed BLAKE3 check")
                del sealed, opened
    plain.report("Plain location", raw)
    enc.report("Encrypted location", raw)
    print(f"\n  {len(bufs)} cells, {raw / 1e9:.2f} GB raw, {stored / 1e9:.3f} GB stored")
    for what, prefix in (("backup", "backup"), ("restore", "restore")):
        p = sum(c for k, c in plain.cpu.items() if k.startswith(prefix))
        e = sum(c for k, c in enc.cpu.items() if k.startswith(prefix))
        print(
            f"  {what}: plain {p:.2f} s cpu, encrypted {e:.2f} s cpu: "
            f"+{e - p:.2f} s ({e / p - 1:+.1%} of the per-cell work; "
            f"{(e - p) / raw * 1e9:.3f} s per GB)"
        )
    # Argon2id runs its lanes on OpenSSL's threads: this process's CPU time, not this thread's.
    started = time.process_time()
    enc_json, _ = sealing.new_encryption("profile")
    sealing.unlock(enc_json, "profile", "profile")  # remembered by new_encryption: no cost
    created = time.process_time() - started
    kdf = sealing.KdfParams.from_json(enc_json["kdf"], "profile")
    started = time.process_time()
    kdf.derive("profile")
    print(
        f"  key derivation (Argon2id, {kdf.memory_kib // 1024} MiB, {kdf.iterations} passes, "
        f"{kdf.lanes} lanes): {time.process_time() - started:.2f} s cpu; a command derives "
        f"once per location (create, then unlock: {created:.2f} s)"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=256, help="cells to profile (4 MiB each)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2
    loopdev.ensure_udev()
    image = harness.build_reference_disk(harness.DEFAULT_CACHE)
    with harness.attached(image, read_only=True) as src:
        harness.log(f"reading {args.cells} cells of {src}")
        bufs = sample(src, args.cells)
    profile(bufs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
