"""Stream maps: one 40-byte record per cell, stored as chunks (docs/FORMAT.md, "Maps").

:class:`MapWriter` is fed records in cell order by a backup and stores full map chunks as it
goes, so memory stays bounded. :class:`StreamReader` gives random access to any byte range of a
stream of a stored image: the restore, verify and browse paths all read through it.
"""

from __future__ import annotations

import struct
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from recovery.core.view import CellCache
from recovery.errors import IntegrityError
from recovery.repository.store import Repository

RECORD = struct.Struct("<B3xI32s")
RECORDS_PER_MAP_CHUNK = 26214
CACHED_CELLS = 8
"""Decompressed cells a :class:`StreamReader` keeps (the most recently read)."""
UNUSED, ZERO, DATA = 0, 1, 2
NO_HASH = bytes(32)


class Record(NamedTuple):
    kind: int
    length: int
    digest: bytes


class MapWriter:
    def __init__(self, repo: Repository, level: int) -> None:
        self.repo = repo
        self.level = level
        self._buf = bytearray()
        self._count = 0
        self.hashes: list[str] = []
        self.new_bytes = 0

    def add(self, kind: int, length: int, digest: bytes = NO_HASH) -> None:
        self._buf += RECORD.pack(kind, length, digest)
        self._count += 1
        if self._count == RECORDS_PER_MAP_CHUNK:
            self._store()

    def _store(self) -> None:
        if not self._count:
            return
        digest = self.repo.hash(self._buf)
        self.new_bytes += self.repo.put_chunk(digest, self._buf, self.level)
        self.hashes.append(digest.hex())
        self._buf = bytearray()
        self._count = 0

    def finish(self) -> list[str]:
        self._store()
        return self.hashes


@dataclass(frozen=True)
class StreamInfo:
    id: str
    size: int
    cells: int
    map: tuple[bytes, ...]
    method: str
    raw: dict[str, Any]

    @classmethod
    def from_manifest(cls, s: dict[str, Any], cell_size: int, where: str) -> StreamInfo:
        try:
            size = int(s["size"])
            cells = int(s["cells"])
            hashes = tuple(bytes.fromhex(h) for h in s["map"])
            sid = str(s["id"])
            method = str(s["method"])
        except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as e:
            raise IntegrityError(f"{where}: a stream description is damaged ({e})") from e
        if size < 0 or cells != -(-size // cell_size):
            raise IntegrityError(f"{where}: stream {sid} has inconsistent size and cell count")
        if len(hashes) != -(-cells // RECORDS_PER_MAP_CHUNK) or any(len(h) != 32 for h in hashes):
            raise IntegrityError(f"{where}: stream {sid} map list does not fit its cell count")
        return cls(sid, size, cells, hashes, method, s)


class StreamReader:
    """Random access to one stream of a stored image; reads are verified chunk by chunk."""

    def __init__(self, repo: Repository, stream: StreamInfo, cell_size: int, image: str) -> None:
        self.repo = repo
        self.stream = stream
        self.cell_size = cell_size
        self.image = image
        self.size = stream.size
        self._maps: OrderedDict[int, bytes] = OrderedDict()
        self._cells = CellCache(CACHED_CELLS * cell_size)
        self._lock = threading.Lock()

    def where(self, cell: int | None = None) -> str:
        w = f"image {self.image}, {self.stream.id}"
        if cell is not None:
            start = cell * self.cell_size
            w += f" bytes {start}-{min(start + self.cell_size, self.size) - 1}"
        return w

    def map_chunk(self, index: int) -> bytes:
        with self._lock:
            m = self._maps.get(index)
            if m is not None:
                self._maps.move_to_end(index)
                return m
        raw = self.repo.get_chunk(self.stream.map[index], f"{self.where()} map")
        expected = (
            min(RECORDS_PER_MAP_CHUNK, self.stream.cells - index * RECORDS_PER_MAP_CHUNK)
            * RECORD.size
        )
        if len(raw) != expected:
            raise IntegrityError(f"{self.where()}: map chunk {index} has the wrong length")
        with self._lock:
            self._maps[index] = raw
            while len(self._maps) > 4:
                self._maps.popitem(last=False)
        return raw

    def record(self, cell: int) -> Record:
        if not 0 <= cell < self.stream.cells:
            raise IndexError(cell)
        m = self.map_chunk(cell // RECORDS_PER_MAP_CHUNK)
        kind, length, digest = RECORD.unpack_from(m, (cell % RECORDS_PER_MAP_CHUNK) * RECORD.size)
        expected_len = min(self.cell_size, self.size - cell * self.cell_size)
        if kind not in (UNUSED, ZERO, DATA) or length != expected_len:
            raise IntegrityError(f"{self.where(cell)}: map record is damaged")
        return Record(kind, length, digest)

    def records(self) -> Iterator[tuple[int, Record]]:
        for cell in range(self.stream.cells):
            yield cell, self.record(cell)

    def cell_data(self, cell: int) -> bytes:
        """The bytes of one cell (zeros for UNUSED and ZERO cells), verified.

        Threads asking for the same cell at once (neighbouring reads, as the ext4 delta's
        inode tables two to a cell) wait for the one fetching it instead of each decompressing
        and hashing it again (:class:`~recovery.core.view.CellCache`)."""
        rec = self.record(cell)
        if rec.kind != DATA:
            return bytes(rec.length)

        def fetch() -> bytes:
            data = self.repo.get_chunk(rec.digest, self.where(cell))
            if len(data) != rec.length:
                raise IntegrityError(f"{self.where(cell)}: chunk length differs from the map")
            return data

        return self._cells.get(cell, fetch)

    def pread(self, offset: int, length: int) -> bytes:
        """Bytes ``[offset, offset+length)`` of the stream (short at its end)."""
        length = max(0, min(length, self.size - offset))
        out = bytearray()
        while len(out) < length:
            pos = offset + len(out)
            cell, within = divmod(pos, self.cell_size)
            data = self.cell_data(cell)
            out += data[within : within + length - len(out)]
        return bytes(out)
