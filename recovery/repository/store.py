"""The repository on disk: chunk files, manifests, the writers' lock (docs/FORMAT.md).

Called by the engine (backup, restore, verify, remove) and by :mod:`recovery.repository.image`.
Promises: chunks are written to ``tmp/`` and renamed into place, so a chunk file either is
complete or does not exist; a manifest appears only after :meth:`Repository.flush`; every read of
a chunk is checked against its hash; OSError and zstd errors are translated into our errors.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import json
import os
import re
import socket
import struct
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import blake3
import zstandard

from recovery.errors import (
    ImageNotFound,
    IntegrityError,
    NotARepository,
    RepositoryError,
    RepositoryLocked,
    UnsupportedVersion,
    UsageError,
)

REPO_MAGIC = "recovery-repository"
REPO_HEADER = "recovery-repo"
"""The file that makes a directory a repository (docs/FORMAT.md, `recovery-repo`)."""
REPO_VERSION = 1
HASH_SIZE = 32
MAX_CELL = 64 << 20
MAX_MANIFEST = 16 << 20

CHUNK_HEADER = struct.Struct("<4sBBHII")
CHUNK_MAGIC = b"RCK1"
COMPRESSION_NONE = 0
COMPRESSION_ZSTD = 1


class ChunkHeader(NamedTuple):
    magic: bytes
    version: int
    compression: int
    reserved: int
    raw_length: int
    stored_length: int


MANIFEST_HEADER = struct.Struct("<4sHHI")
MANIFEST_MAGIC = b"RIMG"
MANIFEST_VERSION = 1

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")

_thread_local = threading.local()


def hash_bytes(data: bytes | bytearray | memoryview) -> bytes:
    """BLAKE3-256 of ``data``; blake3 releases the GIL, so worker threads hash in parallel."""
    return blake3.blake3(data).digest()


def _decompressor() -> zstandard.ZstdDecompressor:
    d: zstandard.ZstdDecompressor | None = getattr(_thread_local, "dctx", None)
    if d is None:
        d = zstandard.ZstdDecompressor()
        _thread_local.dctx = d
    return d


def _compressor(level: int) -> zstandard.ZstdCompressor:
    key = f"cctx{level}"
    c: zstandard.ZstdCompressor | None = getattr(_thread_local, key, None)
    if c is None:
        c = zstandard.ZstdCompressor(level=level, write_content_size=True)
        setattr(_thread_local, key, c)
    return c


def encode_chunk(raw: bytes | bytearray | memoryview, level: int) -> bytes:
    """The bytes of a chunk file for ``raw``: header + zstd frame (or raw if that is smaller)."""
    compressed = _compressor(level).compress(raw)
    if len(compressed) < len(raw):
        return (
            CHUNK_HEADER.pack(CHUNK_MAGIC, 1, COMPRESSION_ZSTD, 0, len(raw), len(compressed))
            + compressed
        )
    return CHUNK_HEADER.pack(CHUNK_MAGIC, 1, COMPRESSION_NONE, 0, len(raw), len(raw)) + bytes(raw)


def decode_chunk(blob: bytes, expected: bytes, where: str) -> bytes:
    """The raw bytes of a chunk file's content, checked against ``expected`` (its hash)."""
    if len(blob) < CHUNK_HEADER.size:
        raise IntegrityError(f"{where}: chunk {expected.hex()} is truncated ({len(blob)} bytes)")
    h = ChunkHeader(*CHUNK_HEADER.unpack_from(blob))
    if h.magic != CHUNK_MAGIC or h.version != 1 or h.reserved != 0:
        raise IntegrityError(f"{where}: chunk {expected.hex()} has a damaged header")
    if h.compression not in (COMPRESSION_NONE, COMPRESSION_ZSTD):
        raise IntegrityError(f"{where}: chunk {expected.hex()} names unknown compression")
    if not 0 < h.raw_length <= MAX_CELL:
        raise IntegrityError(f"{where}: chunk {expected.hex()} has an impossible length")
    if h.stored_length != len(blob) - CHUNK_HEADER.size:
        raise IntegrityError(
            f"{where}: chunk {expected.hex()} is truncated or padded: expected "
            f"{h.stored_length} payload bytes, got {len(blob) - CHUNK_HEADER.size}"
        )
    payload = memoryview(blob)[CHUNK_HEADER.size :]
    if h.compression == COMPRESSION_ZSTD:
        try:
            raw = _decompressor().decompress(payload, max_output_size=h.raw_length)
        except zstandard.ZstdError as e:
            raise IntegrityError(f"{where}: chunk {expected.hex()} does not decompress: {e}") from e
    else:
        raw = bytes(payload)
    if len(raw) != h.raw_length:
        raise IntegrityError(
            f"{where}: chunk {expected.hex()} decompressed to {len(raw)} bytes, "
            f"expected {h.raw_length}"
        )
    got = hash_bytes(raw)
    if got != expected:
        raise IntegrityError(
            f"{where}: chunk {expected.hex()} is damaged: its content hashes to {got.hex()}"
        )
    return raw


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise UsageError(
            f"'{name}' is not a usable image name: use letters, digits, '.', '_' and '-' "
            "(at most 100, starting with a letter or digit)"
        )
    return name


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _syncfs(fd: int) -> None:
    """Flush every dirty page of the file system holding ``fd`` (one call, not one per file)."""
    libc_name = ctypes.util.find_library("c") or "libc.so.6"
    libc = ctypes.CDLL(libc_name, use_errno=True)
    if libc.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@dataclass(frozen=True)
class RepositoryInfo:
    path: str
    id: str
    created: str
    version: int


class Repository:
    """An opened backup location. Thread-safe for concurrent ``put_chunk``/``get_chunk``."""

    def __init__(self, path: Path, info: RepositoryInfo) -> None:
        self.path = path
        self.info = info
        self._lock_fd: int | None = None
        self._made_dirs: set[str] = set()

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str], create: bool = False) -> Repository:
        p = Path(path)
        header = p / REPO_HEADER
        try:
            if not header.exists():
                if not create:
                    if p.is_dir():
                        raise NotARepository(
                            f"{p} is not a backup location (no recovery-repo file in it)"
                        )
                    raise NotARepository(f"{p} does not exist: give the folder of a backup")
                return cls._initialise(p)
            try:
                data = json.loads(header.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
                raise NotARepository(f"{header} is damaged ({e}): not a backup location") from e
            if not isinstance(data, dict) or data.get("format") != REPO_MAGIC:
                raise NotARepository(f"{p} is not a backup location ({header} is not ours)")
            version = data.get("version")
            if not isinstance(version, int) or version < 1:
                raise NotARepository(f"{header} has no valid version")
            if version > REPO_VERSION:
                raise UnsupportedVersion(
                    f"{p} was written by a newer recovery (format version {version}, this one "
                    f"reads {REPO_VERSION}): use a newer recovery"
                )
            info = RepositoryInfo(
                str(p), str(data.get("id", "")), str(data.get("created", "")), version
            )
            return cls(p, info)
        except OSError as e:
            raise RepositoryError(f"cannot open backup location {p}: {e.strerror}") from e

    @classmethod
    def _initialise(cls, p: Path) -> Repository:
        if p.exists():
            if not p.is_dir():
                raise NotARepository(f"{p} is a file, not a folder: give a folder for backups")
            if any(p.iterdir()):
                raise NotARepository(
                    f"{p} is not empty and not a backup location: give an empty or new folder"
                )
        p.mkdir(parents=True, exist_ok=True)
        for sub in ("chunks", "images", "tmp"):
            (p / sub).mkdir(exist_ok=True)
        info = RepositoryInfo(str(p), str(uuid.uuid4()), utc_now(), REPO_VERSION)
        body = json.dumps(
            {"format": REPO_MAGIC, "version": REPO_VERSION, "id": info.id, "created": info.created},
            indent=1,
        ).encode()
        repo = cls(p, info)
        repo._write_atomic(p / REPO_HEADER, body)
        return repo

    # -- locking -------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, operation: str) -> Iterator[None]:
        """Hold the writers' lock; refuse at once if another process holds it."""
        path = self.path / "lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise self._write_error(e) from e
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise RepositoryError(f"cannot lock {path}: {e.strerror}") from e
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
                raise RepositoryLocked(
                    f"another recovery is writing to {self.path} ({holder or 'unknown'}): "
                    "wait for it to finish"
                ) from None
            note = json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "operation": operation,
                    "since": utc_now(),
                }
            )
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, note.encode(), 0)
                self._clear_tmp()
            except OSError as e:
                raise self._write_error(e) from e
            self._lock_fd = fd
            yield
        finally:
            self._lock_fd = None
            os.close(fd)

    def _clear_tmp(self) -> None:
        tmp = self.path / "tmp"
        tmp.mkdir(exist_ok=True)
        for f in tmp.iterdir():
            if f.name.endswith(".removing"):
                continue  # finished by remove's sweep
            with contextlib.suppress(OSError):
                f.unlink()

    # -- chunks --------------------------------------------------------------------------

    def chunk_path(self, digest: bytes) -> Path:
        h = digest.hex()
        return self.path / "chunks" / h[:2] / h

    def has_chunk(self, digest: bytes) -> bool:
        return self.chunk_path(digest).exists()

    def put_chunk(self, digest: bytes, raw: bytes | bytearray | memoryview, level: int) -> int:
        """Store ``raw`` under ``digest`` unless present; the bytes written (0 if present)."""
        final = self.chunk_path(digest)
        if final.exists():
            return 0
        blob = encode_chunk(raw, level)
        sub = final.parent
        tmp = self.path / "tmp" / f"{final.name}.{threading.get_ident()}"
        try:
            if sub.name not in self._made_dirs:
                sub.mkdir(exist_ok=True)
                self._made_dirs.add(sub.name)
            with open(tmp, "wb") as f:
                f.write(blob)
            os.rename(tmp, final)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise self._write_error(e) from e
        return len(blob)

    def read_chunk_file(self, digest: bytes, where: str = "") -> bytes:
        path = self.chunk_path(digest)
        try:
            with open(path, "rb") as f:
                return f.read(MAX_CELL + CHUNK_HEADER.size + 1)
        except FileNotFoundError:
            prefix = f"{where}: " if where else ""
            raise IntegrityError(f"{prefix}chunk {digest.hex()} is missing ({path})") from None
        except OSError as e:
            raise RepositoryError(f"cannot read {path}: {e.strerror}") from e

    def get_chunk(self, digest: bytes, where: str = "") -> bytes:
        return decode_chunk(self.read_chunk_file(digest, where), digest, where or str(self.path))

    def check_chunk_header(self, digest: bytes, where: str) -> None:
        """Cheap pre-flight check: the file exists and its header fits its size."""
        path = self.chunk_path(digest)
        try:
            with open(path, "rb") as f:
                head = f.read(CHUNK_HEADER.size)
                size = os.fstat(f.fileno()).st_size
        except FileNotFoundError:
            raise IntegrityError(f"{where}: chunk {digest.hex()} is missing") from None
        except OSError as e:
            raise RepositoryError(f"cannot read {path}: {e.strerror}") from e
        if len(head) < CHUNK_HEADER.size:
            raise IntegrityError(f"{where}: chunk {digest.hex()} is truncated")
        h = ChunkHeader(*CHUNK_HEADER.unpack(head))
        if h.magic != CHUNK_MAGIC or h.version != 1 or h.stored_length != size - CHUNK_HEADER.size:
            raise IntegrityError(f"{where}: chunk {digest.hex()} is damaged or truncated")

    def iter_chunks(self) -> Iterator[tuple[bytes, Path]]:
        chunks = self.path / "chunks"
        for sub in sorted(chunks.iterdir()) if chunks.exists() else []:
            if not sub.is_dir():
                continue
            for f in sub.iterdir():
                try:
                    digest = bytes.fromhex(f.name)
                except ValueError:
                    continue
                if len(digest) == HASH_SIZE:
                    yield digest, f

    def flush(self) -> None:
        """Make every chunk written so far durable (before a manifest may name them)."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            _syncfs(fd)
        except OSError as e:
            raise self._write_error(e) from e
        finally:
            os.close(fd)

    # -- manifests -----------------------------------------------------------------------

    def manifest_path(self, name: str) -> Path:
        return self.path / "images" / f"{name}.image"

    def image_names(self) -> list[str]:
        images = self.path / "images"
        if not images.exists():
            return []
        return sorted(
            f.name[: -len(".image")] for f in images.iterdir() if f.name.endswith(".image")
        )

    def write_manifest(self, name: str, body: dict[str, Any]) -> None:
        check_name(name)
        data = json.dumps(body, separators=(",", ":")).encode()
        if len(data) > MAX_MANIFEST:
            raise RepositoryError(f"image {name}: manifest too large ({len(data)} bytes)")
        head = MANIFEST_HEADER.pack(MANIFEST_MAGIC, MANIFEST_VERSION, 0, len(data))
        blob = head + data
        blob += hash_bytes(blob)
        self._write_atomic(self.manifest_path(name), blob)

    def read_manifest(self, name: str) -> dict[str, Any]:
        path = self.manifest_path(name)
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            names = self.image_names()
            hint = f" (images here: {', '.join(names)})" if names else " (it holds no images)"
            raise ImageNotFound(f"no image '{name}' in {self.path}{hint}") from None
        except OSError as e:
            raise RepositoryError(f"cannot read {path}: {e.strerror}") from e
        return parse_manifest(blob, str(path))

    def mark_verified(self, name: str) -> str:
        when = utc_now()
        self._write_atomic(
            self.path / "images" / f"{name}.verified", json.dumps({"verified": when}).encode()
        )
        return when

    def verified_at(self, name: str) -> str | None:
        try:
            data = json.loads((self.path / "images" / f"{name}.verified").read_text())
            v = data.get("verified") if isinstance(data, dict) else None
            return v if isinstance(v, str) else None
        except (OSError, ValueError, RecursionError):
            return None

    # -- files ---------------------------------------------------------------------------

    def _write_atomic(self, final: Path, data: bytes) -> None:
        tmpdir = self.path / "tmp"
        tmpdir.mkdir(exist_ok=True)
        tmp = tmpdir / f"{final.name}.{os.getpid()}.new"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, final)
            dfd = os.open(final.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise self._write_error(e) from e

    def _write_error(self, e: OSError) -> RepositoryError:
        if e.errno == errno.ENOSPC:
            return RepositoryError(
                f"the backup location {self.path} is full: free space there or choose another "
                "location (what was saved so far is kept; a rerun continues)"
            )
        if e.errno in (errno.EIO, errno.ENODEV, errno.ENXIO, errno.ESTALE):
            return RepositoryError(
                f"the backup location {self.path} stopped answering ({e.strerror}): was the disk "
                "removed? Reconnect it and run again"
            )
        return RepositoryError(f"cannot write to {self.path}: {e.strerror}")


def parse_manifest(blob: bytes, where: str) -> dict[str, Any]:
    """Check and decode a manifest file (FORMAT.md, "Manifests")."""
    if len(blob) < MANIFEST_HEADER.size + HASH_SIZE:
        raise IntegrityError(f"{where}: manifest is truncated")
    magic, version, _reserved, length = MANIFEST_HEADER.unpack_from(blob)
    if magic != MANIFEST_MAGIC:
        raise IntegrityError(f"{where}: not an image manifest (bad magic)")
    if version > MANIFEST_VERSION:
        raise UnsupportedVersion(
            f"{where}: image written by a newer recovery (manifest version {version}, this one "
            f"reads {MANIFEST_VERSION}): use a newer recovery"
        )
    if version != MANIFEST_VERSION:
        raise IntegrityError(f"{where}: manifest version {version} is invalid")
    end = MANIFEST_HEADER.size + length
    if length > MAX_MANIFEST or end + HASH_SIZE != len(blob):
        raise IntegrityError(f"{where}: manifest is truncated or has trailing bytes")
    expected = blob[end:]
    got = hash_bytes(blob[:end])
    if got != expected:
        raise IntegrityError(
            f"{where}: manifest is damaged (hash expected {expected.hex()}, got {got.hex()})"
        )
    try:
        body = json.loads(blob[MANIFEST_HEADER.size : end].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise IntegrityError(f"{where}: manifest body is not valid JSON: {e}") from e
    if not isinstance(body, dict):
        raise IntegrityError(f"{where}: manifest body is not an object")
    return body
