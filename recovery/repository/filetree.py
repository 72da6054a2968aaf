"""File images as the format sees them: tree entries, tree chunks, and what a file image refers
to (docs/FORMAT.md, "File images").

Called by the engine's file backup (:class:`TreeWriter`), extract, open, verify and the
repository's garbage collection (:func:`referenced_chunks`). Every entry read back is checked
field by field (:func:`parse_entries`): a damaged tree is reported as damaged, never half-used.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from recovery.errors import IntegrityError
from recovery.repository.store import Repository

FILE_MANIFEST_VERSION = 2
KIND_FILES = "files"

REGULAR, FOLDER, SYMLINK, HARDLINK, FIFO, CHARDEV, BLOCKDEV, SOCKET = range(1, 9)
TYPE_NAMES = {
    REGULAR: "file",
    FOLDER: "folder",
    SYMLINK: "symlink",
    HARDLINK: "hardlink",
    FIFO: "fifo",
    CHARDEV: "chardev",
    BLOCKDEV: "blockdev",
    SOCKET: "socket",
}

ENTRY = struct.Struct("<IBBHIIIIQqqqqQQII8x")
"""The fixed part of an entry (FORMAT.md, "Tree"): 96 bytes."""
_LENGTH = struct.Struct("<I")
_ENTRY_IN = struct.Struct("<IBBHIIIIQqqqqQQIIQ")
"""ENTRY with its last 8 reserved bytes as a number, for decoding (they must be zero)."""
_ATIME = struct.Struct("<q")
_ATIME_AT = 40
"""Where the access time lies in an entry's fixed part."""
PIECE = struct.Struct("<32sII")
XATTR_HEAD = struct.Struct("<HI")
MAX_PATH = 4096
MAX_ENTRY = 64 << 20
TREE_MIN_CUT = 256 << 10
TREE_MAX_CHUNK = 4 << 20


class Piece(tuple[bytes, int, int]):
    """``(hash, offset, length)``: bytes [offset, offset + length) of the chunk ``hash``."""

    __slots__ = ()

    def __new__(cls, digest: bytes, offset: int, length: int) -> Piece:
        return tuple.__new__(cls, (digest, offset, length))

    @property
    def digest(self) -> bytes:
        return self[0]

    @property
    def offset(self) -> int:
        return self[1]

    @property
    def length(self) -> int:
        return self[2]


@dataclass
class Entry:
    """One saved name with its metadata (FORMAT.md, "Tree"). ``path`` is bytes, relative."""

    path: bytes
    type: int
    mode: int = 0
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime_ns: int = 0
    atime_ns: int = 0
    ctime_ns: int = 0
    btime_ns: int = 0
    inode: int = 0
    rdev: int = 0
    target: bytes = b""
    xattrs: list[tuple[bytes, bytes]] = field(default_factory=list)
    pieces: list[Piece] = field(default_factory=list)
    raw: bytes = field(default=b"", compare=False, repr=False)
    """The entry's record as read (``parse_entries(keep_raw=True)``), which :meth:`encode`
    would give again (the encoding is canonical), as long as no field is changed; empty for a
    new entry. A file backup writes an unchanged file's old record as it is
    (:meth:`TreeWriter.add`), which spares it decoding into fields and encoding again."""

    def set_atime(self, atime_ns: int) -> None:
        """A new access time, in :attr:`raw` too: reading a file moves it, and nothing else."""
        self.atime_ns = atime_ns
        if self.raw:
            raw = bytearray(self.raw)
            _ATIME.pack_into(raw, _ATIME_AT, atime_ns)
            self.raw = bytes(raw)

    def encode(self) -> bytes:
        xattrs = b"".join(XATTR_HEAD.pack(len(n), len(v)) + n + v for n, v in self.xattrs)
        pieces = b"".join(PIECE.pack(*p) for p in self.pieces)
        length = ENTRY.size + len(self.path) + len(self.target) + len(xattrs) + len(pieces)
        head = ENTRY.pack(
            length,
            self.type,
            0,
            len(self.path),
            self.mode,
            self.uid,
            self.gid,
            len(self.pieces),
            self.size,
            self.mtime_ns,
            self.atime_ns,
            self.ctime_ns,
            self.btime_ns,
            self.inode,
            self.rdev,
            len(self.target),
            len(xattrs),
        )
        return head + self.path + self.target + xattrs + pieces


def check_path(path: bytes) -> bool:
    if not 0 < len(path) <= MAX_PATH or b"\0" in path:
        return False
    # No empty, "." or ".." part: with a "/" added at both ends, no part is empty unless "//"
    # appears, and "." or ".." is a part exactly when "/./" or "/../" does.
    framed = b"/" + path + b"/"
    return b"//" not in framed and b"/./" not in framed and b"/../" not in framed


def parent_of(path: bytes) -> bytes:
    return path.rpartition(b"/")[0]


_piece = tuple.__new__
"""A :class:`Piece` from a tuple without the Python-level ``__new__`` (decoding a tree makes
one per piece)."""


def _decode_one(buf: bytes, at: int, where: str) -> Entry:
    (
        length,
        kind,
        reserved,
        plen,
        mode,
        uid,
        gid,
        npieces,
        size,
        mtime,
        atime,
        ctime,
        btime,
        inode,
        rdev,
        tlen,
        xlen,
        reserved8,
    ) = _ENTRY_IN.unpack_from(buf, at)
    if kind not in TYPE_NAMES or reserved != 0 or reserved8 != 0:
        raise IntegrityError(f"{where}: a tree entry has an invalid type or reserved field")
    if length != ENTRY.size + plen + tlen + xlen + PIECE.size * npieces:
        raise IntegrityError(f"{where}: a tree entry's length does not match its fields")
    p = at + ENTRY.size
    path = bytes(buf[p : p + plen])
    if not check_path(path):
        raise IntegrityError(f"{where}: a tree entry has an invalid path {path!r}")
    p += plen
    if tlen:
        if kind in (REGULAR, FOLDER):
            raise IntegrityError(f"{where}: {path!r}: only links have a target")
        target = bytes(buf[p : p + tlen])
        p += tlen
    elif kind in (SYMLINK, HARDLINK):
        raise IntegrityError(f"{where}: {path!r}: a link without a target")
    else:
        target = b""
    xattrs: list[tuple[bytes, bytes]] = []
    if xlen:
        end = p + xlen
        while p < end:
            if p + XATTR_HEAD.size > end:
                raise IntegrityError(f"{where}: {path!r}: its extended attributes are damaged")
            nlen, vlen = XATTR_HEAD.unpack_from(buf, p)
            p += XATTR_HEAD.size
            if p + nlen + vlen > end or nlen == 0:
                raise IntegrityError(f"{where}: {path!r}: its extended attributes are damaged")
            xattrs.append((bytes(buf[p : p + nlen]), bytes(buf[p + nlen : p + nlen + vlen])))
            p += nlen + vlen
    if npieces:
        if kind != REGULAR:
            raise IntegrityError(f"{where}: {path!r}: only regular files have content")
        if npieces == 1:  # most files: one piece, unpacked without a list of them
            one = PIECE.unpack_from(buf, p)
            pieces = [_piece(Piece, one)]
            whole = one[2] == size and size != 0
        else:
            pieces = [
                _piece(Piece, t) for t in PIECE.iter_unpack(buf[p : p + PIECE.size * npieces])
            ]
            lengths = [pc[2] for pc in pieces]
            whole = sum(lengths) == size and 0 not in lengths
        if not whole:
            raise IntegrityError(f"{where}: {path!r}: its pieces do not add up to its size")
    elif kind == REGULAR and size:
        raise IntegrityError(f"{where}: {path!r}: its pieces do not add up to its size")
    else:
        pieces = []
    return Entry(
        path,
        kind,
        mode,
        uid,
        gid,
        size,
        mtime,
        atime,
        ctime,
        btime,
        inode,
        rdev,
        target,
        xattrs,
        pieces,
    )


def parse_entries(chunks: Iterable[bytes], where: str, keep_raw: bool = False) -> Iterator[Entry]:
    """The entries of a tree given as its chunks' raw bytes in order, each checked (types,
    lengths, paths, parents before children, hard links to earlier files); ``keep_raw``: each
    keeps its record's bytes (:attr:`Entry.raw`)."""
    buf = b""
    kinds: dict[bytes, int] = {}  # every path so far, and its type
    head = ENTRY.size
    for chunk in chunks:
        buf = buf + chunk if buf else chunk
        at = 0
        end = len(buf)
        while end - at >= head:
            (length,) = _LENGTH.unpack_from(buf, at)
            if not head < length <= MAX_ENTRY:
                raise IntegrityError(f"{where}: a tree entry has an impossible length {length}")
            if end - at < length:
                break
            e = _decode_one(buf, at, where)
            if keep_raw:
                e.raw = bytes(buf[at : at + length])
            at += length
            path = e.path
            parent = path.rpartition(b"/")[0]
            if parent and kinds.get(parent) != FOLDER:
                raise IntegrityError(f"{where}: {path!r} comes before its folder")
            if path in kinds:
                raise IntegrityError(f"{where}: {path!r} is listed twice")
            if e.type == HARDLINK and kinds.get(e.target) != REGULAR:
                raise IntegrityError(f"{where}: {path!r} links to a file not saved before it")
            kinds[path] = e.type
            yield e
        buf = buf[at:]
    if buf:
        raise IntegrityError(f"{where}: the tree ends inside an entry")


class TreeWriter:
    """Stores entries as tree chunks, cut where FORMAT.md says, as they come (memory bounded)."""

    def __init__(self, repo: Repository, level: int) -> None:
        self.repo = repo
        self.level = level
        self._buf = bytearray()
        self.hashes: list[str] = []
        self.new_bytes = 0
        self.count = 0

    def add(self, entry: Entry) -> None:
        self._buf += entry.raw or entry.encode()
        self.count += 1
        if len(self._buf) >= TREE_MAX_CHUNK or (
            len(self._buf) >= TREE_MIN_CUT and self.repo.hash(entry.path)[0] == 0
        ):
            self._store()

    def _store(self) -> None:
        if not self._buf:
            return
        digest = self.repo.hash(self._buf)
        self.new_bytes += self.repo.put_chunk(digest, self._buf, self.level)
        self.hashes.append(digest.hex())
        self._buf = bytearray()

    def finish(self) -> list[str]:
        self._store()
        return self.hashes


def is_file_image(body: dict[str, Any]) -> bool:
    return body.get("kind") == KIND_FILES


def tree_hashes(body: dict[str, Any], where: str) -> list[bytes]:
    tree = body.get("tree")
    try:
        if not isinstance(tree, list):
            raise TypeError("not a list")
        hashes = [bytes.fromhex(h) for h in tree]
    except (TypeError, ValueError) as e:
        raise IntegrityError(f"{where}: the file image's tree list is damaged ({e})") from e
    if any(len(h) != 32 for h in hashes):
        raise IntegrityError(f"{where}: the file image's tree list is damaged")
    return hashes


def read_tree(
    repo: Repository, body: dict[str, Any], where: str, keep_raw: bool = False
) -> Iterator[Entry]:
    """Every entry of a file image, read chunk by chunk and checked."""
    hashes = tree_hashes(body, where)
    return parse_entries((repo.get_chunk(h, f"{where}: tree") for h in hashes), where, keep_raw)


def referenced_chunks(repo: Repository, body: dict[str, Any], where: str) -> Iterator[bytes]:
    """Every chunk a file image refers to: its tree chunks and every piece's chunk."""
    yield from tree_hashes(body, where)
    for e in read_tree(repo, body, where):
        for p in e.pieces:
            yield p.digest
