"""Reading a Clonezilla image file: its split parts joined, its compression found by magic.

Called by :mod:`recovery.peers.partclone` and :mod:`recovery.peers.clonezilla`. Promises: the
parts are read in order as one byte stream, the compression is recognised from the first bytes
(never from the file name, which Clonezilla also writes but a person may have renamed), memory
stays bounded (every decompressor streams), and OSError and decompressor errors become
:class:`~recovery.errors.PeerImageError` naming the file.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from recovery.errors import PeerImageError

# Magic numbers at the start of each compressed format (RFC 1952, RFC 8878, xz, bzip2, LZ4 frame).
MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
    (b"\x04\x22\x4d\x18", "lz4"),
    (b"\x89LZO\x00\r\n\x1a\n", "lzo"),
    (b"LZIP", "lzip"),
    (b"LRZI", "lrzip"),
)
READABLE = ("gzip", "zstd", "xz", "bzip2", "lz4", "none")


def detect_compression(head: bytes) -> str:
    """The compression of a stream that starts with ``head``; ``none`` for anything else."""
    for magic, name in MAGICS:
        if head.startswith(magic):
            return name
    # lzma "alone" (Clonezilla's -z4): properties byte 0x5D and a dictionary size, no magic.
    if (
        len(head) >= 13
        and head[0] == 0x5D
        and head[1:5] in (b"\x00\x00\x80\x00", b"\x00\x00\x00\x04")
    ):
        return "lzma"
    return "none"


class JoinedParts(io.RawIOBase):
    """The split parts of one image file (``.aa``, ``.ab``, ...) read as one stream."""

    def __init__(self, parts: Sequence[Path]) -> None:
        super().__init__()
        if not parts:
            raise PeerImageError("an image file has no parts")
        self._parts = list(parts)
        self._index = 0
        self._f: io.BufferedReader | None = None
        self._open_part()

    def _open_part(self) -> None:
        path = self._parts[self._index]
        try:
            self._f = open(path, "rb")  # noqa: SIM115 (closed in close() or on the next part)
        except OSError as e:
            raise PeerImageError(f"cannot read {path}: {e.strerror}") from e

    @property
    def current(self) -> Path:
        return self._parts[self._index]

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        while self._f is not None:
            try:
                n: int = self._f.readinto(b)
            except OSError as e:
                raise PeerImageError(f"cannot read {self.current}: {e.strerror}") from e
            if n:
                return n
            self._f.close()
            self._f = None
            if self._index + 1 < len(self._parts):
                self._index += 1
                self._open_part()
        return 0

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        super().close()


class ImageStream:
    """The decompressed bytes of one (possibly split, possibly compressed) image file.

    ``read_exact`` is the one way to read: a short read is a truncated image and raises.
    """

    def __init__(self, parts: Sequence[Path]) -> None:
        self.name = str(parts[0]) if parts else "?"
        self.raw = JoinedParts(parts)
        buffered = io.BufferedReader(self.raw, 1 << 20)
        self.compression = detect_compression(buffered.peek(16)[:16])
        self._reader: BinaryIO = self._decompressing(buffered)
        self.position = 0
        """Bytes of decompressed data read so far."""

    def _decompressing(self, f: Any) -> Any:
        c = self.compression
        if c == "none":
            return f
        if c == "gzip":
            return gzip.GzipFile(fileobj=f, mode="rb")
        if c == "zstd":
            # pzstd and zstd -T writes several frames: read across them.
            return zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True)
        if c in ("xz", "lzma"):
            return lzma.LZMAFile(f)
        if c == "bzip2":
            return bz2.BZ2File(f)
        if c == "lz4":
            try:
                import lz4.frame
            except ImportError as e:
                raise PeerImageError(
                    f"{self.name} is compressed with lz4 and the lz4 module is missing: "
                    "install python3-lz4"
                ) from e
            return lz4.frame.LZ4FrameFile(f)
        raise PeerImageError(
            f"{self.name} is compressed with {c}, which recovery does not read; "
            f"decompress it with Clonezilla's own tools, or save it with gzip or zstd"
        )

    def read_exact(self, n: int, what: str) -> bytes:
        """Exactly ``n`` bytes, or PeerImageError saying the image ends early."""
        out = self.read_some(n)
        if len(out) != n:
            raise PeerImageError(
                f"{self.name} ends early: {what} needs {n} bytes at byte "
                f"{self.position - len(out)} of its data, only {len(out)} follow "
                "(is a split part missing?)"
            )
        return out

    def read_some(self, n: int) -> bytes:
        """Up to ``n`` bytes; fewer only at the end of the stream."""
        chunks = []
        got = 0
        while got < n:
            try:
                b = self._reader.read(n - got)
            except PeerImageError:
                raise
            except (
                OSError,
                EOFError,
                lzma.LZMAError,
                zlib.error,
                zstandard.ZstdError,
                ValueError,
                RuntimeError,
            ) as e:
                raise PeerImageError(
                    f"{self.name} does not decompress ({self.compression}) at byte "
                    f"{self.position + got} of its data: {e}"
                ) from e
            if not b:
                break
            chunks.append(b)
            got += len(b)
        self.position += got
        return b"".join(chunks)

    def close(self) -> None:
        try:
            self._reader.close()
        finally:
            self.raw.close()

    def __enter__(self) -> ImageStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
