"""A partclone image writer for tests, made from docs/CLONEZILLA.md (not from the reader), so
round trips check the reader against the document."""

from __future__ import annotations

import struct
import zlib

import xxhash


def crc(data: bytes, seed: int = 0xFFFFFFFF) -> int:
    """partclone's CRC32 (no final inversion), from the document's formula."""
    return zlib.crc32(data, seed ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


def write_image(
    blocks: list[bytes | None],
    block_size: int,
    mode: int = 0x20,
    per: int = 3,
    reseed: int = 1,
    version: int = 2,
) -> bytes:
    """A partclone image of ``blocks`` (None: an unused block)."""
    total = len(blocks)
    used = sum(b is not None for b in blocks)
    if version == 1:
        head = b"partclone-image" + b"EXTFS".ljust(15, b"\0") + b"0001" + b"\0\0"
        head += struct.pack("<iQQQ", block_size, total * block_size, total, used) + bytes(4096)
        out = bytearray(head + bytes(1 if b is not None else 0 for b in blocks) + b"BiTmAgIc")
        c = 0xFFFFFFFF
        for b in blocks:
            if b is not None:
                c = crc(bytes(b[:1]) * len(b), c)
                out += b + struct.pack("<I", c)
        return bytes(out)
    size = {0: 0, 0x20: 4, 0x30: 8, 0x31: 16}[mode]
    per = per if mode else 0
    desc = struct.pack("<16s14s4sH", b"partclone-image\0", b"0.3.23", b"0002", 0xC0DE)
    desc += struct.pack("<16sQQQQI", b"EXTFS", total * block_size, total, used, used, block_size)
    desc += struct.pack("<IHHHHIBB", 18, 2, 64, mode, size, per, reseed, 1)
    desc += struct.pack("<I", crc(desc))
    bits = bytearray((total + 7) // 8)
    for i, b in enumerate(blocks):
        if b is not None:
            bits[i // 8] |= 1 << (i % 8)
    out = bytearray(desc + bits + struct.pack("<I", crc(bytes(bits))))

    def new_state():  # type: ignore[no-untyped-def]
        return [0xFFFFFFFF, xxhash.xxh64(seed=0), xxhash.xxh3_128()]

    state = new_state()
    in_group = 0

    def value() -> bytes:
        if mode == 0x20:
            return struct.pack("<I", state[0])
        if mode == 0x30:
            return struct.pack("<Q", state[1].intdigest())
        v = state[2].intdigest()
        return struct.pack("<QQ", v & (2**64 - 1), v >> 64)

    for b in blocks:
        if b is None:
            continue
        out += b
        if mode:
            state[0] = crc(b, state[0])
            state[1].update(b)
            state[2].update(b)
            in_group += 1
            if in_group == per:
                out += value()
                in_group = 0
                if reseed:
                    state = new_state()
    if mode and in_group:
        out += value()
    return bytes(out)
