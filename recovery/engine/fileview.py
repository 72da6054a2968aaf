"""A file image as a read-only FUSE tree: ``DIR/files/`` holds what was saved, with its
owners, modes, times, symlinks, hard links and extended attributes (docs/FORMAT.md, "File
images").

Served by the process :mod:`recovery.engine.opened` forks for ``recovery open`` when the image
is a file image (:func:`open_view` picks the view). The tree is read and checked once when
opened (about 150 bytes of memory per entry); file contents are read through their pieces, each
chunk verified against its hash as it is loaded and kept in a
:class:`~recovery.core.view.CellCache`. A damaged or missing chunk fails the read with EIO and
logs one line naming the chunk.
"""

from __future__ import annotations

import errno
import stat
import time
from bisect import bisect_right
from collections.abc import Callable
from datetime import datetime
from typing import Any

from recovery.core.view import CellCache
from recovery.engine.view import ImageView, Partition, _fuse, _log
from recovery.errors import IntegrityError, RecoveryError
from recovery.repository import filetree
from recovery.repository.filetree import Entry
from recovery.repository.store import Repository, check_name

FILES = "files"


class FileImageView:
    """The tree of a file image, by path, with its contents readable piece by piece."""

    def __init__(
        self,
        repo_path: str,
        image: str,
        body: dict[str, Any] | None = None,
        repo: Repository | None = None,
    ) -> None:
        self.repo = repo if repo is not None else Repository.open(repo_path)
        self.image = check_name(image)
        self.body = body if body is not None else self.repo.read_manifest(image)
        where = self.repo.manifest_where(image)
        self.entries: dict[bytes, Entry] = {}
        self.children: dict[bytes, list[bytes]] = {b"": []}
        self.nlink: dict[bytes, int] = {}
        for e in filetree.read_tree(self.repo, self.body, where):
            self.entries[e.path] = e
            self.children.setdefault(filetree.parent_of(e.path), []).append(
                e.path.rpartition(b"/")[2]
            )
            if e.type == filetree.FOLDER:
                self.children.setdefault(e.path, [])
            if e.type == filetree.HARDLINK:
                self.nlink[e.target] = self.nlink.get(e.target, 1) + 1
        self.cache = CellCache()
        self.partitions: list[Partition] = []
        self.files: dict[str, tuple[int, Callable[[int, int], bytes]]] = {}
        created = str(self.body.get("created", ""))
        try:
            self.mtime_ns = int(datetime.fromisoformat(created).timestamp() * 1e9)
        except ValueError:
            self.mtime_ns = time.time_ns()
        self._offsets: dict[bytes, list[int]] = {}

    def close(self) -> None:
        pass

    def resolve(self, path: bytes) -> Entry | None:
        e = self.entries.get(path)
        if e is not None and e.type == filetree.HARDLINK:
            return self.entries.get(e.target)
        return e

    def read(self, e: Entry, offset: int, size: int) -> bytes:
        starts = self._offsets.get(e.path)
        if starts is None:
            starts, at = [], 0
            for p in e.pieces:
                starts.append(at)
                at += p.length
            self._offsets[e.path] = starts
        out = bytearray()
        end = min(e.size, offset + size)
        i = max(0, bisect_right(starts, offset) - 1)
        while offset < end and i < len(e.pieces):
            p = e.pieces[i]
            within = offset - starts[i]
            n = min(p.length - within, end - offset)
            data = self.chunk(p.digest)
            if p.offset + p.length > len(data):
                raise IntegrityError(f"chunk {p.digest.hex()} is shorter than its piece")
            out += data[p.offset + within : p.offset + within + n]
            offset += n
            i += 1
        return bytes(out)

    def chunk(self, digest: bytes) -> bytes:
        where = f"{self.repo.manifest_where(self.image)}: content"
        return self.cache.get(digest, lambda: self.repo.get_chunk(digest, where))


def open_view(repo_path: str, image: str) -> ImageView | FileImageView:
    """The view for ``image``: its files for a file image, its disk and partitions otherwise."""
    repo = Repository.open(repo_path)
    body = repo.read_manifest(check_name(image))
    if filetree.is_file_image(body):
        return FileImageView(repo_path, image, body, repo)
    return ImageView(repo_path, image)


def serve_files(view: FileImageView, mountpoint: str, on_ready: Callable[[], None]) -> None:
    """Serve ``view`` at ``mountpoint`` (its tree under ``files/``) until it is unmounted."""
    import threading

    fuse = _fuse()
    top = "/" + FILES

    def entry_of(path: str) -> Entry | None:
        rel = path[len(top) + 1 :].encode("utf-8", "surrogateescape")
        return view.resolve(rel)

    class Files(fuse.Operations):  # type: ignore[misc,name-defined]
        use_ns = True

        def init(self, path: str) -> None:
            threading.Thread(target=on_ready, name="view-ready", daemon=True).start()

        def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
            if path in ("/", top):
                return {
                    "st_mode": stat.S_IFDIR | 0o555,
                    "st_nlink": 2,
                    "st_uid": 0,
                    "st_gid": 0,
                    "st_atime": view.mtime_ns,
                    "st_mtime": view.mtime_ns,
                    "st_ctime": view.mtime_ns,
                }
            if not path.startswith(top + "/"):
                raise fuse.FuseOSError(errno.ENOENT)
            e = entry_of(path)
            if e is None:
                raise fuse.FuseOSError(errno.ENOENT)
            mode = e.mode
            size = e.size if e.type == filetree.REGULAR else len(e.target)
            return {
                "st_mode": mode,
                "st_nlink": view.nlink.get(e.path, 1) if e.type == filetree.REGULAR else 1,
                "st_uid": e.uid,
                "st_gid": e.gid,
                "st_size": size,
                "st_blocks": (size + 511) // 512,
                "st_atime": e.atime_ns,
                "st_mtime": e.mtime_ns,
                "st_ctime": e.ctime_ns,
                "st_rdev": e.rdev,
            }

        def readdir(self, path: str, fh: int) -> list[str]:
            if path == "/":
                return [".", "..", FILES]
            if path == top:
                names = view.children.get(b"", [])
            else:
                e = entry_of(path)
                if e is None or e.type != filetree.FOLDER:
                    raise fuse.FuseOSError(errno.ENOTDIR)
                names = view.children.get(e.path, [])
            return [".", "..", *(n.decode("utf-8", "surrogateescape") for n in names)]

        def readlink(self, path: str) -> str:
            e = entry_of(path)
            if e is None or e.type != filetree.SYMLINK:
                raise fuse.FuseOSError(errno.EINVAL)
            return e.target.decode("utf-8", "surrogateescape")

        def open(self, path: str, flags: int) -> int:
            import os

            e = entry_of(path) if path.startswith(top + "/") else None
            if e is None or e.type != filetree.REGULAR:
                raise fuse.FuseOSError(errno.ENOENT)
            if flags & (os.O_WRONLY | os.O_RDWR):
                raise fuse.FuseOSError(errno.EROFS)
            return 0

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            e = entry_of(path)
            if e is None or e.type != filetree.REGULAR:
                raise fuse.FuseOSError(errno.ENOENT)
            try:
                return view.read(e, offset, size)
            except (RecoveryError, OSError) as err:
                text = err.message if isinstance(err, RecoveryError) else str(err)
                _log(f"EIO: {path} bytes {offset}-{offset + size - 1}: {text}")
                raise fuse.FuseOSError(errno.EIO) from None

        def listxattr(self, path: str) -> list[str]:
            e = entry_of(path) if path.startswith(top + "/") else None
            if e is None:
                return []
            return [n.decode("utf-8", "surrogateescape") for n, _ in e.xattrs]

        def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
            e = entry_of(path) if path.startswith(top + "/") else None
            want = name.encode("utf-8", "surrogateescape")
            for n, v in e.xattrs if e is not None else []:
                if n == want:
                    return v
            raise fuse.FuseOSError(errno.ENODATA)

        def statfs(self, path: str) -> dict[str, int]:
            return {"f_bsize": 4096, "f_frsize": 4096, "f_namemax": 255}

    fuse.FUSE(
        Files(),
        mountpoint,
        foreground=True,
        ro=True,
        allow_other=True,
        default_permissions=True,
        kernel_cache=True,
        fsname=f"recovery:{view.image}",
        subtype="recovery",
    )
