"""blockio.DirectWriter.write_changed (a delta restore's cells): only the pieces that differ
from what the device holds are written, and the device then holds exactly the new bytes."""

from __future__ import annotations

import os

from recovery.devices import blockio
from tests.storage.disks import MiB

BLOCK = 64 << 10


def device_bytes(dev: str, offset: int, n: int) -> bytes:
    reader = blockio.DirectReader(dev)
    try:
        return reader.read(offset, n).tobytes()
    finally:
        reader.close()


def test_write_changed_writes_only_the_differing_blocks(loop) -> None:  # type: ignore[no-untyped-def]
    dev = loop(16 * MiB)
    old = os.urandom(4 * MiB)
    fd = blockio.open_exclusive_write(dev)
    try:
        writer = blockio.DirectWriter(dev, fd)
        try:
            writer.write(old, 4 * MiB)
            new = bytearray(old)
            new[10] ^= 1  # block 0
            new[5 * BLOCK : 7 * BLOCK] = os.urandom(2 * BLOCK)  # blocks 5 and 6: one run
            new[-1] ^= 0xFF  # the last block
            assert writer.write_changed(bytes(new), 4 * MiB, BLOCK) == 4 * BLOCK
            assert writer.write_changed(bytes(new), 4 * MiB, BLOCK) == 0  # nothing left
            # An unaligned piece cannot be compared with O_DIRECT: written whole.
            assert writer.write_changed(b"x" * 1000, 9 * MiB + 3, BLOCK) == 1000
        finally:
            writer.close()
        os.fsync(fd)
    finally:
        os.close(fd)
    assert device_bytes(dev, 4 * MiB, 4 * MiB) == bytes(new)
    assert device_bytes(dev, 9 * MiB, 4096)[3:1003] == b"x" * 1000
