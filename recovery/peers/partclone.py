"""partclone's image format, versions 0001 and 0002 (docs/CLONEZILLA.md, "partclone images").

Called by the Clonezilla restore, verify and import paths. :func:`read_header` parses and checks
the image description; :class:`PartcloneReader` then streams the used blocks as
``(byte offset, bytes)`` runs in increasing order, checking every checksum the image carries
before the bytes it covers are handed out. Every field is validated against the format's
limits before it sizes anything, so a damaged or hostile image gives
:class:`~recovery.errors.PeerImageError`, never another exception or an allocation larger than
the bitmap the format allows (at most :data:`MAX_BLOCKS` bits).
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from recovery.errors import PeerImageError

MAGIC = b"partclone-image"
BIT_MAGIC = b"BiTmAgIc"
ENDIAN_MAGIC = 0xC0DE

HEAD_V2 = struct.Struct("<16s14s4sH")
FS_INFO_V2 = struct.Struct("<16sQQQQI")
OPTIONS_V2 = struct.Struct("<IHHHHIBB")
DESC_V2_SIZE = HEAD_V2.size + FS_INFO_V2.size + OPTIONS_V2.size + 4  # 110, the CRC32 last

HEAD_V1 = struct.Struct("<15s15s4s2s")
FS_INFO_V1 = struct.Struct("<iQQQ")
OPTIONS_V1_SIZE = 4096
DESC_V1_SIZE = HEAD_V1.size + FS_INFO_V1.size + OPTIONS_V1_SIZE  # 4160

CSM_NONE, CSM_CRC32, CSM_XXH64, CSM_XXH128, CSM_CRC32_0001 = 0x00, 0x20, 0x30, 0x31, 0xFF
CHECKSUM_SIZES = {CSM_NONE: 0, CSM_CRC32: 4, CSM_XXH64: 8, CSM_XXH128: 16, CSM_CRC32_0001: 4}
CHECKSUM_NAMES = {
    CSM_NONE: "none",
    CSM_CRC32: "crc32",
    CSM_XXH64: "xxh64",
    CSM_XXH128: "xxh128",
    CSM_CRC32_0001: "crc32-0001",
}
BM_NONE, BM_BIT, BM_BYTE = 0x00, 0x01, 0x08

MAX_BLOCK_SIZE = 64 << 20
"""partclone's own limit (MAX_BLOCK_SIZE in partclone.h)."""
MAX_BLOCKS = 1 << 31
"""Our limit: the bitmap is held in memory, one bit per block, so at most 256 MiB."""
MAX_DEVICE = 1 << 60
RUN_LIMIT = 4 << 20
"""Largest run handed out at once, in bytes (a bound on memory, not a format rule)."""
MAX_PENDING = 64 << 20
"""Bytes held back waiting for their checksum. partclone sets blocks_per_checksum to its
buffer (Clonezilla's: 10 MiB); a group larger than this is handed out before its checksum
is read, and a mismatch is raised right after it."""


class FsInfo(NamedTuple):
    fs: bytes
    device_size: int
    total_blocks: int
    used_blocks: int
    used_bitmap: int
    block_size: int


class Options(NamedTuple):
    feature_size: int
    image_version: int
    cpu_bits: int
    checksum_mode: int
    checksum_size: int
    blocks_per_checksum: int
    reseed_checksum: int
    bitmap_mode: int


@dataclass(frozen=True)
class Header:
    version: int
    """1 or 2."""
    partclone_version: str
    fs: str
    device_size: int
    total_blocks: int
    used_blocks: int
    block_size: int
    checksum_mode: int
    checksum_size: int
    blocks_per_checksum: int
    reseed: bool
    bitmap_mode: int
    size: int
    """Bytes of the description in the stream."""

    @property
    def checksum_name(self) -> str:
        return CHECKSUM_NAMES[self.checksum_mode]

    @property
    def used_bytes(self) -> int:
        return self.used_blocks * self.block_size


class Source(Protocol):
    name: str

    def read_exact(self, n: int, what: str) -> bytes: ...


def _text(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode("ascii", "replace")


def crc32_partclone(seed: int, data: bytes | bytearray | memoryview) -> int:
    """partclone's CRC32: the reflected 0xEDB88320 table with no final inversion, so it is
    zlib's CRC with the inversions undone on both sides."""
    return zlib.crc32(data, seed ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


def parse_header(head: bytes, name: str) -> Header:
    """Check and decode the first :data:`DESC_V2_SIZE` bytes (v2) or :data:`DESC_V1_SIZE` (v1).

    ``head`` may be longer than the description; the caller reads ``size`` bytes in all.
    """
    if len(head) < DESC_V2_SIZE:
        raise PeerImageError(f"{name}: too short to be a partclone image")
    if head[: len(MAGIC)] != MAGIC:
        raise PeerImageError(f"{name}: not a partclone image (no partclone-image magic)")
    version = head[30:34]
    if version == b"0002":
        return _parse_v2(head, name)
    if version == b"0001":
        return _parse_v1(head, name)
    raise PeerImageError(
        f"{name}: partclone image version {version!r} is not one recovery reads (0001, 0002)"
    )


def _parse_v2(head: bytes, name: str) -> Header:
    h_magic, ptc_version, _version, endian = HEAD_V2.unpack_from(head, 0)
    fsi = FsInfo(*FS_INFO_V2.unpack_from(head, HEAD_V2.size))
    opt = Options(*OPTIONS_V2.unpack_from(head, HEAD_V2.size + FS_INFO_V2.size))
    (crc,) = struct.unpack_from("<I", head, DESC_V2_SIZE - 4)
    got = crc32_partclone(0xFFFFFFFF, head[: DESC_V2_SIZE - 4])
    if got != crc:
        raise PeerImageError(
            f"{name}: the partclone header is damaged (CRC32 expected {crc:08x}, got {got:08x})"
        )
    if h_magic[15] != 0:
        raise PeerImageError(f"{name}: the partclone header is damaged (magic not terminated)")
    if endian != ENDIAN_MAGIC:
        raise PeerImageError(f"{name}: a big-endian partclone image; recovery reads little-endian")
    if opt.feature_size != OPTIONS_V2.size or opt.image_version != 2:
        raise PeerImageError(
            f"{name}: partclone options of size {opt.feature_size}, version {opt.image_version} "
            "are not the 0002 layout"
        )
    if opt.cpu_bits not in (32, 64):
        raise PeerImageError(f"{name}: impossible cpu_bits {opt.cpu_bits}")
    if opt.bitmap_mode not in (BM_NONE, BM_BIT, BM_BYTE):
        raise PeerImageError(f"{name}: unknown bitmap mode {opt.bitmap_mode:#x}")
    if opt.checksum_mode not in (CSM_NONE, CSM_CRC32, CSM_XXH64, CSM_XXH128):
        raise PeerImageError(f"{name}: unknown checksum mode {opt.checksum_mode:#x}")
    if CHECKSUM_SIZES[opt.checksum_mode] != opt.checksum_size:
        raise PeerImageError(
            f"{name}: checksum size {opt.checksum_size} does not fit checksum mode "
            f"{CHECKSUM_NAMES[opt.checksum_mode]}"
        )
    if opt.checksum_mode != CSM_NONE and opt.blocks_per_checksum == 0:
        raise PeerImageError(f"{name}: checksums enabled with 0 blocks per checksum")
    if opt.reseed_checksum not in (0, 1):
        raise PeerImageError(f"{name}: reseed flag {opt.reseed_checksum} is not 0 or 1")
    h = Header(
        version=2,
        partclone_version=_text(ptc_version),
        fs=_text(fsi.fs),
        device_size=fsi.device_size,
        total_blocks=fsi.total_blocks,
        used_blocks=fsi.used_bitmap,
        block_size=fsi.block_size,
        checksum_mode=opt.checksum_mode,
        checksum_size=opt.checksum_size,
        blocks_per_checksum=opt.blocks_per_checksum if opt.checksum_mode != CSM_NONE else 0,
        reseed=opt.reseed_checksum == 1,
        bitmap_mode=opt.bitmap_mode,
        size=DESC_V2_SIZE,
    )
    _check_geometry(h, name)
    return h


def _parse_v1(head: bytes, name: str) -> Header:
    if len(head) < HEAD_V1.size + FS_INFO_V1.size:
        raise PeerImageError(f"{name}: too short to be a partclone 0001 image")
    _magic, fs, _version, _pad = HEAD_V1.unpack_from(head, 0)
    block_size, device_size, total, used = FS_INFO_V1.unpack_from(head, HEAD_V1.size)
    if block_size <= 0:
        raise PeerImageError(f"{name}: block size {block_size} is impossible")
    h = Header(
        version=1,
        partclone_version="0.1",
        fs=_text(fs),
        device_size=device_size,
        total_blocks=total,
        used_blocks=used,
        block_size=block_size,
        checksum_mode=CSM_CRC32_0001,
        checksum_size=4,
        blocks_per_checksum=1,
        reseed=False,
        bitmap_mode=BM_BYTE,
        size=DESC_V1_SIZE,
    )
    _check_geometry(h, name)
    return h


def _check_geometry(h: Header, name: str) -> None:
    if not 0 < h.block_size <= MAX_BLOCK_SIZE:
        raise PeerImageError(f"{name}: block size {h.block_size} is impossible")
    if h.total_blocks > MAX_BLOCKS:
        raise PeerImageError(
            f"{name}: {h.total_blocks} blocks is more than recovery reads ({MAX_BLOCKS}): "
            "restore this image with Clonezilla"
        )
    if h.device_size > MAX_DEVICE or h.total_blocks * h.block_size > h.device_size:
        raise PeerImageError(
            f"{name}: {h.total_blocks} blocks of {h.block_size} bytes do not fit the "
            f"device size {h.device_size}"
        )
    if h.used_blocks > h.total_blocks:
        raise PeerImageError(
            f"{name}: {h.used_blocks} used blocks of {h.total_blocks} is impossible"
        )
    if h.bitmap_mode == BM_NONE and h.used_blocks != h.total_blocks:
        raise PeerImageError(f"{name}: no bitmap, yet not every block is used")


def read_header(src: Source) -> Header:
    head = src.read_exact(DESC_V2_SIZE, "the partclone header")
    if head[30:34] == b"0001":
        head += src.read_exact(DESC_V1_SIZE - DESC_V2_SIZE, "the partclone 0001 header")
    return parse_header(head, src.name)


def read_bitmap(src: Source, h: Header) -> bytes:
    """The used-block bitmap as bits (block i is bit i % 8 of byte i // 8), checked."""
    nbytes = (h.total_blocks + 7) // 8
    if h.bitmap_mode == BM_NONE:
        bits = bytearray(b"\xff" * nbytes)
    elif h.bitmap_mode == BM_BIT:
        # Read in pieces: a header that claims many blocks costs nothing until the bytes exist.
        parts = []
        left = nbytes
        while left:
            piece = src.read_exact(min(left, 1 << 24), "the bitmap")
            parts.append(piece)
            left -= len(piece)
        bits = bytearray(b"".join(parts))
        (crc,) = struct.unpack("<I", src.read_exact(4, "the bitmap checksum"))
        got = crc32_partclone(0xFFFFFFFF, bits)
        if got != crc:
            raise PeerImageError(
                f"{src.name}: the bitmap is damaged (CRC32 expected {crc:08x}, got {got:08x})"
            )
    else:  # BM_BYTE: one byte per block, 0 or 1, then BIT_MAGIC (0001) or a CRC32 (0002)
        bits = bytearray(nbytes)
        done = 0
        crc = 0xFFFFFFFF
        while done < h.total_blocks:
            piece = src.read_exact(min(h.total_blocks - done, 1 << 20), "the bitmap")
            if piece.translate(None, b"\x00\x01"):
                raise PeerImageError(f"{src.name}: the byte bitmap holds values other than 0 and 1")
            for i in _ones(piece):
                b = done + i
                bits[b >> 3] |= 1 << (b & 7)
            done += len(piece)
        if h.version == 1:
            if src.read_exact(len(BIT_MAGIC), "the bitmap magic") != BIT_MAGIC:
                raise PeerImageError(f"{src.name}: the bitmap is damaged (no BiTmAgIc after it)")
        else:
            src.read_exact(4, "the bitmap checksum")
            del crc  # partclone 0002 writes the CRC of the bit form here; BM_BYTE is never written
    if h.total_blocks % 8 and bits:
        bits[-1] &= (1 << (h.total_blocks % 8)) - 1
    return bytes(bits)


def _ones(piece: bytes) -> Iterator[int]:
    start = 0
    while True:
        i = piece.find(1, start)
        if i < 0:
            return
        yield i
        start = i + 1


_NONZERO = re.compile(rb"[^\x00]")
_NOT_FULL = re.compile(rb"[^\xff]")


def used_runs(bits: bytes, total_blocks: int) -> Iterator[tuple[int, int]]:
    """``(first block, count)`` of each run of used blocks, in order (bits past
    ``total_blocks`` must be clear, as :func:`read_bitmap` leaves them)."""
    n = len(bits)
    start: int | None = None
    i = 0
    while i < n:
        b = bits[i]
        if b == 0xFF:
            if start is None:
                start = i * 8
            m = _NOT_FULL.search(bits, i)
            i = m.start() if m else n
            continue
        if b == 0:
            if start is not None:
                yield start, i * 8 - start
                start = None
            m = _NONZERO.search(bits, i)
            i = m.start() if m else n
            continue
        for k in range(8):
            if (b >> k) & 1:
                if start is None:
                    start = i * 8 + k
            elif start is not None:
                yield start, i * 8 + k - start
                start = None
        i += 1
    if start is not None:
        yield start, min(n * 8, total_blocks) - start


class _Checksum:
    """The running checksum of a partclone data stream, as partclone writes it."""

    def __init__(self, h: Header) -> None:
        self.mode = h.checksum_mode
        self.size = h.checksum_size
        self._reset()

    def _reset(self) -> None:
        self.crc = 0xFFFFFFFF
        self.xxh: Any = None
        if self.mode in (CSM_XXH64, CSM_XXH128):
            try:
                import xxhash
            except ImportError as e:
                raise PeerImageError(
                    "this partclone image uses XXH checksums and the xxhash module is missing"
                ) from e
            self.xxh = xxhash.xxh64(seed=0) if self.mode == CSM_XXH64 else xxhash.xxh3_128()

    def update_blocks(self, data: bytes, block_size: int) -> None:
        """Feed consecutive blocks; the streaming checksums take them in one call."""
        if self.mode == CSM_CRC32_0001:
            for k in range(0, len(data), block_size):
                self.update(memoryview(data)[k : k + block_size])
        else:
            self.update(data)

    def update(self, block: bytes | memoryview) -> None:
        if self.mode == CSM_CRC32:
            self.crc = crc32_partclone(self.crc, block)
        elif self.mode == CSM_CRC32_0001:
            # partclone 0001 fed the first byte of the block over and over (a missing "++").
            self.crc = crc32_partclone(self.crc, bytes(block[:1]) * len(block))
        elif self.xxh is not None:
            self.xxh.update(block)

    def value(self) -> bytes:
        if self.mode in (CSM_CRC32, CSM_CRC32_0001):
            return struct.pack("<I", self.crc)
        if self.mode == CSM_XXH64:
            return struct.pack("<Q", self.xxh.intdigest())
        if self.mode == CSM_XXH128:
            v = self.xxh.intdigest()
            return struct.pack("<QQ", v & ((1 << 64) - 1), v >> 64)
        return b""

    def after_check(self, reseed: bool) -> None:
        if reseed:
            self._reset()


class PartcloneReader:
    """The used blocks of a partclone image, streamed and checked.

    ``runs()`` yields ``(byte offset in the file system, bytes)`` in increasing offset order;
    each run is handed out only after the checksum covering it was checked (so a restore never
    writes a block whose checksum failed), except in groups larger than :data:`MAX_PENDING`.
    """

    def __init__(self, src: Source, verify: bool = True) -> None:
        self.src = src
        self.verify = verify
        self.header = read_header(src)
        self.bitmap = read_bitmap(src, self.header)

    @property
    def used_blocks(self) -> int:
        return int.from_bytes(self.bitmap, "little").bit_count()

    def runs(self) -> Iterator[tuple[int, bytes]]:
        h = self.header
        bs = h.block_size
        per = h.blocks_per_checksum
        cs = _Checksum(h) if per else None
        max_blocks = max(1, RUN_LIMIT // bs)
        extents = used_runs(self.bitmap, h.total_blocks)
        current: tuple[int, int] | None = None
        in_group = seen = 0
        pending: list[tuple[int, bytes]] = []
        """Runs read but not yet covered by a checked checksum."""
        pending_bytes = 0
        while True:
            # One read: the next used blocks up to the checksum boundary (or RUN_LIMIT),
            # across as many runs as that takes (a fragmented bitmap has many short runs).
            want = min(max_blocks, per - in_group) if per else max_blocks
            batch: list[tuple[int, int]] = []
            n = 0
            while n < want:
                if current is None:
                    current = next(extents, None)
                    if current is None:
                        break
                first, count = current
                take = min(count, want - n)
                batch.append((first, take))
                n += take
                current = (first + take, count - take) if count > take else None
            if not n:
                break
            data = self.src.read_exact(n * bs, f"block {batch[0][0]}")
            seen += n
            if cs is not None:
                cs.update_blocks(data, bs)
                in_group += n
            pos = 0
            for first, take in batch:
                pending.append((first * bs, data[pos : pos + take * bs]))
                pos += take * bs
            pending_bytes += len(data)
            last = batch[-1][0] + batch[-1][1]
            if per and in_group == per:
                self._check(cs, last)
                in_group = 0
            elif per and pending_bytes < MAX_PENDING:
                continue
            # Checked (or no checksum, or a group larger than MAX_PENDING): hand them out.
            yield from pending
            pending = []
            pending_bytes = 0
        if per and in_group:
            self._check(cs, seen)
        # The bitmap, not the header's count, says how many blocks follow: partclone's restore
        # does the same ("fixed used blocks count"), and both are CRC-checked.
        yield from pending

    def _check(self, cs: _Checksum | None, block: int) -> None:
        assert cs is not None
        stored = self.src.read_exact(cs.size, "a checksum")
        got = cs.value()
        if self.verify and stored != got:
            hint = (
                " (or a 0001 image from a 64-bit partclone 0.1, whose 8-byte checksums "
                "recovery does not read)"
                if self.header.version == 1
                else ""
            )
            raise PeerImageError(
                f"{self.src.name}: data damaged before block {block} "
                f"({self.header.checksum_name} expected {stored.hex()}, got {got.hex()}){hint}"
            )
        cs.after_check(self.header.reseed)
