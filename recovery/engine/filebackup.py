"""File backup: chosen folders and files saved as a file image (docs/FORMAT.md, "File images").

Called through :mod:`recovery.engine.api`. ``plan_file_backup`` resolves the sources (a
partition, a partition and a folder in it, or a folder of the running system), mounts each
partition read-only by itself (never replaying a journal, never clearing a hibernation), walks
what will be saved to count it, and unmounts again; ``run_file_backup`` mounts and walks again,
cuts file contents with FastCDC (small files packed together), reuses what the previous file
image of the same source vouches for (same path, size, mtime and inode: the file is not
opened), and writes the manifest last. A file that cannot be read is retried, then skipped and
listed in the result, the log and the image; the rest is saved.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from recovery import __version__
from recovery.core.excludes import Excludes, Includes, user_data_preset
from recovery.devices.blockio import fstype_at
from recovery.engine.plans import (
    FileBackupPlan,
    FileBackupResult,
    FileSource,
    ImageInfo,
    SourceFolders,
)
from recovery.engine.progress import CancelToken, Progress
from recovery.engine.workers import WORKERS
from recovery.errors import DeviceError, FileSystemError, RecoveryError, UsageError
from recovery.filesystems.mounts import MOUNTS
from recovery.repository import filetree
from recovery.repository.filetree import Entry, Piece, TreeWriter
from recovery.repository.kinds import open_backend
from recovery.repository.store import Repository, check_name, utc_now

if TYPE_CHECKING:
    import subprocess

SMALL_FILE = 256 << 10
"""Files below this are packed together (FORMAT.md, "Terms": content chunk)."""
PACK_SIZE = 4 << 20
CDC_MIN, CDC_AVG, CDC_MAX = 256 << 10, 1 << 20, 4 << 20
RETRIES = 2
"""Extra reads of a file that failed, before it is skipped."""
CASE_INSENSITIVE = {"ntfs", "ntfs3", "vfat", "exfat", "fuseblk", "msdos"}
UNSTABLE_INODES = {"vfat", "exfat", "msdos"}
PENDING = bytes(32)
"""Stands for the pack being filled, replaced by its hash when it is stored."""
NTFS_EPOCH_DIFF = 116444736000000000
"""100 ns intervals from 1601-01-01 (NTFS times) to 1970-01-01."""


def default_name() -> str:
    return "files-" + datetime.now(UTC).strftime("%Y-%m-%d-%H%M%S")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    import subprocess  # partitions only: an unchanged backup of folders runs no tool

    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def _blkid(device: str) -> dict[str, str]:
    r = _run("blkid", "-p", "-o", "export", device)
    out: dict[str, str] = {}
    for line in r.stdout.splitlines():
        k, _, v = line.partition("=")
        out[k] = v
    return out


def _mounted_at(device: str) -> str | None:
    r = _run("findmnt", "-n", "-o", "TARGET", "--source", device)
    lines = r.stdout.splitlines()
    return lines[0] if r.returncode == 0 and lines else None


def parse_source(spec: str) -> tuple[str | None, str]:
    """``(device, folder)`` of a SOURCE: ``/dev/X``, ``/dev/X:/folder`` or a folder here."""
    if spec.startswith("/dev/") and not os.path.isdir(spec):
        device, sep, folder = spec.partition(":")
        folder = "/" + folder.strip("/") if sep else "/"
        return device, os.path.normpath(folder)
    return None, os.path.normpath(os.path.abspath(spec))


def _place_names(devices: list[str | None]) -> dict[str | None, str]:
    distinct = list(dict.fromkeys(devices))
    if len(distinct) == 1:
        return {distinct[0]: ""}
    return {d: os.path.basename(d) if d else "host" for d in distinct}


def resolve_sources(specs: list[str]) -> list[FileSource]:
    if not specs:
        raise UsageError("give at least one SOURCE: a partition, partition:/folder or a folder")
    parsed = [parse_source(s) for s in specs]
    places = _place_names([d for d, _ in parsed])
    out = []
    for spec, (device, folder) in zip(specs, parsed, strict=True):
        if device is not None:
            try:
                st = os.stat(device)
            except OSError as e:
                raise DeviceError(
                    f"{device}: {e.strerror}: give a partition such as /dev/sda3"
                ) from None
            if not stat.S_ISBLK(st.st_mode):
                raise DeviceError(f"{device} is not a block device: give a partition")
            info = _blkid(device)
            fstype = info.get("TYPE")
            if not fstype:
                raise FileSystemError(f"{device}: no file system recognised on it")
            if fstype not in MOUNTS:
                raise FileSystemError(
                    f"{device}: {fstype} cannot be mounted read-only by recovery: "
                    "give a partition with ext2/3/4, NTFS, FAT, xfs or btrfs"
                )
            uuid = info.get("UUID")
            out.append(
                FileSource(
                    spec=spec,
                    device=device,
                    fstype=fstype,
                    uuid=uuid,
                    label=info.get("LABEL"),
                    folder=folder,
                    place=places[device],
                    key=f"fs:{uuid or device}",
                    case_insensitive=fstype in CASE_INSENSITIVE,
                    stable_inodes=fstype not in UNSTABLE_INODES,
                    mounted_at=_mounted_at(device),
                )
            )
        else:
            if not os.path.isdir(folder):
                raise UsageError(f"{spec} is not a folder here, nor a partition (/dev/...)")
            fstype = fstype_at(folder)
            out.append(
                FileSource(
                    spec=spec,
                    device=None,
                    fstype=fstype,
                    uuid=None,
                    label=None,
                    folder=folder,
                    place=places[None],
                    key=f"host:{os.uname().nodename}",
                    case_insensitive=(fstype or "") in CASE_INSENSITIVE,
                    stable_inodes=(fstype or "") not in UNSTABLE_INODES,
                    mounted_at="/",
                )
            )
    return out


# -- mounting ----------------------------------------------------------------------------------


@contextlib.contextmanager
def mounted(source: FileSource) -> Iterator[str]:
    """The root of ``source``'s file system on this machine, mounted read-only for the
    duration when it was not mounted already (and unmounted again afterwards)."""
    if source.device is None or source.mounted_at is not None:
        yield source.mounted_at or "/"
        return
    assert source.fstype is not None
    os.makedirs("/run/recovery", exist_ok=True)
    import tempfile  # partitions only

    target = tempfile.mkdtemp(prefix="files-", dir="/run/recovery")
    loop: str | None = None
    failures: list[str] = []
    ok = False
    for how, options in MOUNTS[source.fstype]:
        if how == "kernel":
            # Direct I/O: no read-ahead of the source's own around the file system's reads,
            # which on a failing disk failed files whose own blocks are good (test_file_backup).
            from recovery.devices import loops  # partitions only, not folders

            loop, why = loops.attach_read_only(source.device)
            if loop is None:
                failures.append(why)
                continue
            m = _run("mount", "-t", source.fstype, "-o", options, loop, target)
            if m.returncode == 0:
                ok = True
                break
            _run("losetup", "-d", loop)
            loop = None
            failures.append(m.stderr.strip().splitlines()[-1] if m.stderr.strip() else "failed")
        else:
            m = _run(how, "-o", options, source.device, target)
            if m.returncode == 0:
                ok = True
                break
            text = (m.stderr.strip() or m.stdout.strip()).splitlines()
            failures.append(f"{how}: {text[-1] if text else 'failed'}")
    if not ok:
        os.rmdir(target)
        raise FileSystemError(
            f"{source.device}: cannot mount {source.fstype} read-only: "
            + "; ".join(dict.fromkeys(failures))
        )
    try:
        yield target
    finally:
        if _run("umount", target).returncode != 0:
            _run("umount", "-l", target)
        if loop:
            for _ in range(20):
                if _run("losetup", "-d", loop).returncode == 0:
                    break
                time.sleep(0.1)
        with contextlib.suppress(OSError):
            os.rmdir(target)


# -- the walk ----------------------------------------------------------------------------------


@dataclass
class Found:
    """One name the walk keeps: its path in the image and where to read it here."""

    image_path: bytes
    local: bytes
    st: os.stat_result


@dataclass
class Selection:
    """What one source contributes: its includes and excludes, compiled."""

    source: FileSource
    includes: Includes
    excludes: Excludes
    notes: list[str] = field(default_factory=list)


def _within(path: str, folder: str) -> bool:
    return folder == "/" or path == folder or path.startswith(folder.rstrip("/") + "/")


def walk(
    sel: Selection, root: str, skip: Callable[[str, str], None], keep_out: str | None = None
) -> Iterator[Found]:
    """Depth-first, a folder before what it holds, names in byte order; never leaves the
    source's file system. ``skip(path, reason)`` hears of folders that cannot be listed.

    A loop over a stack of open folders rather than recursion: a generator nested once per
    level makes every name it yields hop through each level, which was most of the walk's
    time on a deep tree."""
    src = sel.source
    root_b = os.fsencode(root.rstrip("/") or "/")
    base = root_b.rstrip(b"/")
    place = src.place.encode()
    # fusefat shows a FAT volume's label as an empty file at the root: it is not a file.
    fat_label = os.fsencode(src.label) if src.fstype == "vfat" and src.label else None
    try:
        root_st = os.lstat(root_b)
    except OSError as e:
        raise FileSystemError(f"{src.spec}: cannot read its root: {e.strerror}") from e

    if place:
        yield Found(place, root_b, root_st)

    state_of, excluded = sel.includes.state, sel.excludes.excluded
    lstat, S_ISDIR = os.lstat, stat.S_ISDIR

    def listing(fs_path: str, local: bytes) -> Iterator[bytes] | None:
        try:
            names = os.listdir(local)  # bytes in, bytes out
        except OSError as e:
            skip(fs_path, f"cannot list the folder: {e.strerror}")
            return None
        names.sort()
        return iter(names)

    # An open folder: its path in the file system as text and as bytes ("" for the root), its
    # names still to go, whether it lies inside a chosen folder, and the file system (st_dev)
    # of the chosen folder above it, which the walk does not leave (a folder on the way to one
    # may be on another file system: /home mounted apart from /). A path in the image is the
    # place, then the path in the file system without its leading "/".
    inside = state_of("/") == "inside"
    names = listing("/", root_b)
    stack = [("", b"", names, inside, root_st.st_dev if inside else None)] if names else []
    fsdecode = os.fsdecode
    while stack:
        prefix, prefix_b, names, inside, dev = stack[-1]
        name = next(names, None)
        if name is None:
            stack.pop()
            continue
        child = prefix + "/" + fsdecode(name)
        child_b = prefix_b + b"/" + name
        child_local = base + child_b
        try:
            st = lstat(child_local)
        except OSError as e:
            skip(child, f"cannot read: {e.strerror}")
            continue
        mode = st.st_mode
        if not prefix and name == fat_label and stat.S_ISREG(mode) and st.st_size == 0:
            continue
        if keep_out is not None and _within(child, keep_out):
            continue
        is_dir = S_ISDIR(mode)
        state = "inside" if inside else state_of(child)
        if state == "outside":
            continue
        if not (state == "towards" and is_dir) and excluded(child, is_dir):
            continue
        if state == "inside" or is_dir:
            yield Found(place + child_b if place else child_b[1:], child_local, st)
        if not is_dir:
            continue
        child_inside = state == "inside"
        child_dev = dev
        if child_inside and child_dev is None:
            child_dev = st.st_dev
        elif child_dev is not None and st.st_dev != child_dev:
            sel.notes.append(f"{child} is another file system: not crossed")
            continue
        sub = listing(child, child_local)
        if sub is not None:
            stack.append((child, child_b, sub, child_inside, child_dev))


def groups(sources: list[FileSource]) -> list[list[FileSource]]:
    """Sources by place: the folders of one file system are walked in one mount."""
    out: dict[str, list[FileSource]] = {}
    for s in sources:
        out.setdefault(s.place, []).append(s)
    return list(out.values())


def choose(
    group: list[FileSource], root_names: set[str], preset: str | None
) -> tuple[list[str], list[str], list[str]]:
    """The folders chosen in one file system (a preset's where a whole file system was given),
    the preset's excludes, and notes."""
    include: list[str] = []
    excludes: list[str] = []
    notes: list[str] = []
    for s in group:
        if s.folder != "/" or not preset:
            include.append(s.folder)
            continue
        if preset != "user-data":
            raise UsageError(f"no preset named '{preset}': the one there is is user-data")
        p = user_data_preset(root_names)
        if p is None:
            raise UsageError(
                f"{s.spec}: the user-data preset needs a Windows or Linux system (Windows with "
                "Users, or Linux with /etc and /home): choose folders instead"
            )
        include += p.include
        excludes += p.exclude
        notes.append(f"{s.spec}: a {p.system} system: preset user-data")
    if "/" in include:
        include = ["/"]
    return list(dict.fromkeys(include)), excludes, notes


def selection(group: list[FileSource], include: list[str], exclude: list[str]) -> Selection:
    ci = group[0].case_insensitive
    return Selection(group[0], Includes(include, ci), Excludes(exclude, ci))


def _repo_inside(repo_local: str | None, source: FileSource, root: str) -> str | None:
    """The backup location's folder as a path inside ``source``'s file system, if it is one."""
    if repo_local is None:
        return None
    try:
        here = os.stat(repo_local).st_dev
        if os.stat(root).st_dev != here:
            return None
    except OSError:
        return None
    rel = os.path.relpath(os.path.realpath(repo_local), os.path.realpath(root))
    return None if rel.startswith("..") else "/" + rel.strip("./")


def _root_names(root: str) -> set[str]:
    try:
        return set(os.listdir(root))
    except OSError:
        return set()


@dataclass
class _Walked:
    """What planning a file backup walked: for each group of sources, what the walk found,
    what it could not read, and its notes; kept for a run that follows straight on."""

    at: float
    groups: list[tuple[list[Found], list[tuple[str, str]], list[str]]]


REUSE_WALK_SECONDS = 10.0
"""A run that starts this soon after its plan uses the plan's walk instead of walking again:
the command line, which runs straight on (on an unchanged tree the second walk was a sixth of
the backup's time). After a longer pause (the TUI's confirmation) the run walks again, so that
it sees what changed in between."""
REUSE_WALK_ENTRIES = 100_000
"""A plan keeps its walk only up to this many names (~40 MB): beyond, the run walks again."""
_walks: dict[tuple[object, ...], _Walked] = {}


def _walk_key(plan: FileBackupPlan) -> tuple[object, ...]:
    return (plan.repo, plan.name, plan.sources, plan.include, plan.exclude)


def _collector(into: list[tuple[str, str]]) -> Callable[[str, str], None]:
    """A walk's ``skip`` that keeps what it hears in ``into``."""
    return lambda path, why: into.append((path, why))


def _stable_root(source: FileSource) -> bool:
    """Whether :func:`mounted` gives ``source`` the same root each time (not a new mount)."""
    return source.device is None or source.mounted_at is not None


def plan_file_backup(
    sources: list[str],
    repo: str,
    name: str | None = None,
    excludes: list[str] | None = None,
    preset: str | None = None,
    level: int = 3,
    encrypt: bool = False,
) -> FileBackupPlan:
    if not 1 <= level <= 19:
        raise UsageError("the compression level goes from 1 (fast) to 19 (small); 3 is usual")
    resolved = resolve_sources(sources)
    backend = open_backend(repo)
    local = backend.local_path()
    r = Repository.open(backend, create=True, encrypt=encrypt)
    name = check_name(name) if name else default_name()
    if r.has_image(name):
        raise UsageError(f"an image named '{name}' already exists in {repo}: choose another name")
    files = total = 0
    skipped: list[str] = []
    notes: list[str] = []
    include_pairs: list[tuple[str, str]] = []
    keep: list[tuple[list[Found], list[tuple[str, str]], list[str]]] | None = []
    all_excludes = list(excludes or [])
    for group in groups(resolved):
        with mounted(group[0]) as root:
            include, preset_excludes, why = choose(group, _root_names(root), preset)
            notes += why
            all_excludes += [e for e in preset_excludes if e not in all_excludes]
            include_pairs += [(group[0].place, i) for i in include]
            sel = selection(group, include, all_excludes)
            keep_out = _repo_inside(local, sel.source, root)
            if keep_out and sel.includes.state(keep_out) == "inside":
                notes.append(f"the backup location ({keep_out}) is left out")
            found: list[Found] = []
            skips: list[tuple[str, str]] = []
            for f in walk(sel, root, _collector(skips), keep_out):
                if stat.S_ISREG(f.st.st_mode):
                    files += 1
                    total += f.st.st_size
                if keep is not None:
                    found.append(f)
                    if len(found) > REUSE_WALK_ENTRIES:
                        keep = None
            skipped += [p for p, _ in skips]
            notes.extend(sel.notes)
            if keep is not None and _stable_root(group[0]):
                keep.append((found, skips, list(sel.notes)))
            else:
                keep = None
    if skipped:
        notes.append(f"{len(skipped)} folder(s) or file(s) could not be read while planning")
    plan = FileBackupPlan(
        tuple(resolved),
        repo,
        name,
        level,
        tuple(include_pairs),
        tuple(all_excludes),
        preset,
        files,
        total,
        tuple(dict.fromkeys(notes)),
    )
    _walks.clear()
    if keep is not None:
        _walks[_walk_key(plan)] = _Walked(time.monotonic(), keep)
    return plan


# -- the run -----------------------------------------------------------------------------------


def previous_trees(repo: Repository, keys: dict[str, str]) -> dict[bytes, Entry]:
    """The files cache (FORMAT.md): regular-file entries of the newest earlier file image per
    place whose source key matches, by image path."""
    newest: dict[str, tuple[str, dict[str, Any]]] = {}
    for name in repo.image_names():
        try:
            body = repo.read_manifest(name)
        except RecoveryError:
            continue
        if not filetree.is_file_image(body):
            continue
        for s in body.get("sources") or []:
            if not isinstance(s, dict):
                continue
            place, key = s.get("place"), s.get("key")
            if isinstance(place, str) and keys.get(place) == key:
                created = str(body.get("created", ""))
                if place not in newest or created > newest[place][0]:
                    newest[place] = (created, {"name": name, "body": body})
    cache: dict[bytes, Entry] = {}
    seen: set[str] = set()
    for _, found in newest.values():
        if found["name"] in seen:
            continue
        seen.add(found["name"])
        where = repo.manifest_where(found["name"])
        entries: dict[bytes, Entry] = {}
        try:
            for e in filetree.read_tree(repo, found["body"], where, keep_raw=True):
                if e.type == filetree.REGULAR:
                    entries[e.path] = e
        except RecoveryError:
            continue  # a damaged earlier image vouches for nothing: read everything
        cache.update(entries)  # only an image read to its end
    return cache


class Saver:
    """Content into chunks: hashing here, compressing and writing on worker threads, a bounded
    number in flight; small files packed (their entries wait for the pack's hash)."""

    def __init__(self, repo: Repository, level: int, tree: TreeWriter) -> None:
        self.repo = repo
        self.level = level
        self.tree = tree
        self.pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="files")
        self.slots = threading.BoundedSemaphore(2 * WORKERS + 4)
        """Chunks compressing or being written at once (each holds at most 4 MiB)."""
        self.futures: list[Future[int]] = []
        self.submitted: set[bytes] = set()
        self.pack = bytearray()
        self.waiting: list[Entry] = []
        self.small: dict[bytes, Piece] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self.written = 0

    def store(self, data: bytes | bytearray) -> bytes:
        """Store a chunk (from any thread); its hash. Blocks while too many are in flight."""
        digest = self.repo.hash(data)
        with self._lock:
            if digest in self.submitted:
                return digest
            self.submitted.add(digest)
        self.slots.acquire()
        try:
            future = self.pool.submit(self._put, digest, data)
        except BaseException:
            self.slots.release()
            raise
        future.add_done_callback(lambda _: self.slots.release())
        with self._lock:
            self.futures = [f for f in self.futures if not f.done() or f.exception()]
            self.futures.append(future)
        return digest

    def _put(self, digest: bytes, data: bytes | bytearray) -> int:
        n = self.repo.put_chunk(digest, data, self.level)
        with self._lock:
            self.written += n
        return n

    def add_entry(self, e: Entry) -> None:
        if self.waiting:
            self.waiting.append(e)
        else:
            self.tree.add(e)

    def add_small(self, e: Entry, data: bytes) -> None:
        """``e`` is a small file whose content is ``data``: into the pack being filled."""
        key = self.repo.hash(data)
        known = self.small.get(key)
        if known is not None:
            e.pieces = [known]
            self.add_entry(e)
            return
        if len(self.pack) + len(data) > PACK_SIZE:
            self.seal()
        e.pieces = [Piece(PENDING, len(self.pack), len(data))]
        self.small[key] = e.pieces[0]
        self.pack += data
        self.waiting.append(e)

    def seal(self) -> None:
        if self.pack:
            digest = self.store(bytes(self.pack))
            self.small = {
                k: Piece(digest, p.offset, p.length) if p.digest == PENDING else p
                for k, p in self.small.items()
            }
            for e in self.waiting:
                e.pieces = [
                    Piece(digest, p.offset, p.length) if p.digest == PENDING else p
                    for p in e.pieces
                ]
        for e in self.waiting:
            self.tree.add(e)
        self.waiting = []
        self.pack = bytearray()

    def large(self, f: Any) -> tuple[list[Piece], int]:
        """Cut an open file into content-defined chunks: its pieces and bytes read."""
        cdc = getattr(self._local, "cdc", None)
        if cdc is None:  # a FastCDC object is not to be shared between threads
            # Imported here: a backup where no large file changed never needs it (its import
            # is a sizeable part of an unchanged second backup's start).
            from pyfastcdc import FastCDC

            cdc = self._local.cdc = FastCDC(CDC_AVG, min_size=CDC_MIN, max_size=CDC_MAX)
        pieces = []
        n = 0
        for c in cdc.cut_stream(f):
            data = bytes(c.data)
            pieces.append(Piece(self.store(data), 0, len(data)))
            n += len(data)
        return pieces, n

    def finish(self) -> int:
        self.seal()
        self.pool.shutdown(wait=True)
        for f in self.futures:
            f.result()  # a chunk that could not be written fails the backup here
        return self.written

    def abort(self) -> None:
        self.pool.shutdown(cancel_futures=True)


def _xattrs(path: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return []
    for n in sorted(names):
        try:
            out.append((n.encode(), os.getxattr(path, n, follow_symlinks=False)))
        except OSError:
            continue
    return out


def _ntfs_btime(path: bytes) -> int:
    try:
        raw = os.getxattr(path, "system.ntfs_crtime", follow_symlinks=False)
    except OSError:
        return 0
    if len(raw) != 8:
        return 0
    return (int.from_bytes(raw, "little") - NTFS_EPOCH_DIFF) * 100


def entry_of(found: Found, fstype: str | None, old: Entry | None = None) -> Entry:
    """The entry for ``found``; ``old`` is the previous image's entry for its path: when its
    ctime is unchanged, so are its extended attributes and creation time (a change of either
    moves the ctime), and they are taken from it instead of being read again."""
    st = found.st
    m = st.st_mode
    kind = (
        filetree.REGULAR
        if stat.S_ISREG(m)
        else filetree.FOLDER
        if stat.S_ISDIR(m)
        else filetree.SYMLINK
        if stat.S_ISLNK(m)
        else filetree.FIFO
        if stat.S_ISFIFO(m)
        else filetree.CHARDEV
        if stat.S_ISCHR(m)
        else filetree.BLOCKDEV
        if stat.S_ISBLK(m)
        else filetree.SOCKET
    )
    e = Entry(
        found.image_path,
        kind,
        mode=m,
        uid=st.st_uid,
        gid=st.st_gid,
        size=st.st_size if kind == filetree.REGULAR else 0,
        mtime_ns=st.st_mtime_ns,
        atime_ns=st.st_atime_ns,
        ctime_ns=st.st_ctime_ns,
        inode=st.st_ino,
        rdev=st.st_rdev if kind in (filetree.CHARDEV, filetree.BLOCKDEV) else 0,
    )
    if old is not None and old.ctime_ns == st.st_ctime_ns and old.inode == st.st_ino:
        e.xattrs, e.btime_ns = old.xattrs, old.btime_ns
        return e
    e.xattrs = _xattrs(found.local)
    if fstype == "ntfs":
        e.btime_ns = _ntfs_btime(found.local)
    return e


def run_file_backup(
    plan: FileBackupPlan, progress: Progress, cancel: CancelToken
) -> FileBackupResult:
    started = time.monotonic()
    repo = Repository.open(plan.repo, create=True)
    local = repo.local_path()
    skipped: list[str] = []
    skipped_json: list[dict[str, str]] = []
    notes = list(plan.notes)
    files = folders = total = read = reused = 0

    def skip(path: str, reason: str) -> None:
        skipped.append(f"{path}: {reason}")
        skipped_json.append({"path": path, "reason": reason})
        progress.log(f"skipped {path}: {reason}")

    walked = _walks.pop(_walk_key(plan), None)
    if walked is not None and time.monotonic() - walked.at > REUSE_WALK_SECONDS:
        walked = None
    with repo.locked(f"backup {plan.name}"):
        if repo.has_image(plan.name):
            raise UsageError(f"an image named '{plan.name}' already exists in {plan.repo}")
        progress.step("reading the previous file image (files cache)", 0)
        cache = previous_trees(repo, {s.place: s.key for s in plan.sources})
        tree = TreeWriter(repo, plan.level)
        saver = Saver(repo, plan.level, tree)
        progress.step(f"backing up {plan.files} file(s)", plan.total_bytes)
        try:
            with contextlib.ExitStack() as stack:
                sels, mounts = [], []
                for group in groups(list(plan.sources)):
                    place = group[0].place
                    include = [p for pl, p in plan.include if pl == place]
                    sels.append(selection(group, include, list(plan.exclude)))
                    mounts.append(stack.enter_context(mounted(group[0])))
                links: dict[tuple[int, int], bytes] = {}
                emitted: set[bytes] = set()
                saved: set[bytes] = set()
                readers = stack.enter_context(
                    ThreadPoolExecutor(READERS, thread_name_prefix="read")
                )
                pending: deque[tuple[Entry, Found | None, Future[Content] | None]] = deque()
                ahead_bytes = 0

                def settle_head() -> None:
                    """The oldest pending entry into the tree, its content read by now."""
                    nonlocal files, total, read, reused
                    nonlocal ahead_bytes
                    e, f, job = pending.popleft()
                    if job is not None and e.size < SMALL_FILE:
                        ahead_bytes -= e.size
                    if e.type == filetree.HARDLINK and e.target not in saved:
                        # The file it shares its content with could not be read: try this
                        # name on its own.
                        assert f is not None
                        e.type, e.target, e.size = filetree.REGULAR, b"", f.st.st_size
                        job = readers.submit(read_content, saver, f.local, e.size)
                    if job is not None:
                        c = job.result()
                        if c.failed is not None:
                            skip(os.fsdecode(e.path), c.failed)
                            return
                        read += c.size
                        e.size = c.size
                        if c.data is not None:
                            if c.data:
                                saver.add_small(e, c.data)
                            else:
                                saver.add_entry(e)
                        else:
                            e.pieces = c.pieces or []
                            saver.add_entry(e)
                    else:
                        saver.add_entry(e)
                        if e.type == filetree.REGULAR:
                            reused += 1
                    if e.type == filetree.REGULAR:
                        saved.add(e.path)
                        files += 1
                        total += e.size
                        progress.advance(e.size)

                walked_groups = walked.groups if walked is not None else None
                if walked_groups is not None and len(walked_groups) != len(sels):
                    walked_groups = None

                def walk_of(i: int, sel: Selection, m: str) -> Iterable[Found]:
                    if walked_groups is None:
                        return walk(sel, m, skip, _repo_inside(local, sel.source, m))
                    found, skips, sel_notes = walked_groups[i]
                    for p, why in skips:
                        skip(p, why)
                    sel.notes.extend(sel_notes)
                    return found

                for i, (sel, m) in enumerate(zip(sels, mounts, strict=True)):
                    for f in walk_of(i, sel, m):
                        cancel.check()
                        if f.image_path in emitted:
                            continue  # two sources of one file system overlap
                        old = cache.get(f.image_path)
                        job: Future[Content] | None = None
                        if old is not None and unchanged(old, f.st):
                            # Its old entry, record and all (each is used once).
                            e = old
                            if e.atime_ns != f.st.st_atime_ns:
                                e.set_atime(f.st.st_atime_ns)
                        else:
                            e = entry_of(f, sel.source.fstype, old)
                            if e.type == filetree.FOLDER:
                                folders += 1
                            elif e.type == filetree.SYMLINK:
                                try:
                                    e.target = os.readlink(f.local)
                                except OSError as err:
                                    skip(
                                        os.fsdecode(e.path), f"cannot read the link: {err.strerror}"
                                    )
                                    continue
                            elif e.type == filetree.REGULAR:
                                ino = (f.st.st_dev, f.st.st_ino)
                                if f.st.st_nlink > 1 and ino in links:
                                    e.type, e.target, e.size = filetree.HARDLINK, links[ino], 0
                                else:
                                    if f.st.st_nlink > 1:
                                        links[ino] = e.path
                                    pieces = cached_pieces(e, old, sel.source.stable_inodes)
                                    if pieces is not None:
                                        e.pieces = pieces
                                    else:
                                        job = readers.submit(read_content, saver, f.local, e.size)
                        emitted.add(e.path)
                        pending.append((e, f, job))
                        if job is not None and e.size < SMALL_FILE:
                            ahead_bytes += e.size
                        while pending and (
                            len(pending) > LOOKAHEAD
                            or ahead_bytes > LOOKAHEAD_BYTES
                            or pending[0][2] is None
                            or pending[0][2].done()
                        ):
                            settle_head()
                    notes.extend(sel.notes)
                while pending:
                    settle_head()
            new_bytes = saver.finish()
        except BaseException:
            saver.abort()
            raise
        hashes = tree.finish()
        new_bytes += tree.new_bytes
        progress.step("flushing the backup location", 0)
        repo.flush()
        body: dict[str, Any] = {
            "name": plan.name,
            "created": utc_now(),
            "tool": f"recovery {__version__}",
            "kind": filetree.KIND_FILES,
            "sources": [s.to_json() for s in plan.sources],
            "include": [list(p) for p in plan.include],
            "exclude": list(plan.exclude),
            "preset": plan.preset,
            "tree": hashes,
            "entries": tree.count,
            "files": files,
            "file_bytes": total,
            "skipped": skipped_json,
        }
        repo.write_manifest(plan.name, body, version=filetree.FILE_MANIFEST_VERSION)
    # Not image_info(): its stored size stats every chunk the image names, which on a cold
    # cache costs more than the rest of an unchanged second backup (`images` shows it).
    info = ImageInfo(
        name=plan.name,
        created=body["created"],
        source_path=", ".join(s.spec for s in plan.sources),
        source_model=None,
        source_serial=None,
        source_size=0,
        table=None,
        partitions=(),
        data_size=total,
        stored_size=0,
        status="complete",
        kind="files",
        files=files,
    )
    return FileBackupResult(
        info,
        files,
        folders,
        total,
        read,
        reused,
        new_bytes,
        time.monotonic() - started,
        tuple(skipped),
        tuple(dict.fromkeys(notes)),
    )


READERS = 8
"""Files read at once: reads of many files overlap their waits on the disk."""
LOOKAHEAD = 2048
"""Entries the walk may run ahead of the tree, so that a large file being read at the head
does not stop the readers from starting on the files after it..."""
LOOKAHEAD_BYTES = 64 << 20
"""... as long as the small files read ahead hold at most this much memory."""


@dataclass
class Content:
    """What reading one regular file gave: a small file's bytes, or a large file's pieces
    (already stored), or why it could not be read."""

    data: bytes | None = None
    pieces: list[Piece] | None = None
    size: int = 0
    failed: str | None = None


def read_content(saver: Saver, local: bytes, size: int) -> Content:
    """Read one file (on a reader thread), retried RETRIES times before it counts as failed."""
    last: OSError | None = None
    for _ in range(1 + RETRIES):
        try:
            with open(local, "rb", buffering=0) as fh:
                if size < SMALL_FILE:
                    data = fh.read(SMALL_FILE)
                    if len(data) < SMALL_FILE:
                        return Content(data=data, size=len(data))
                    fh.seek(0)  # grew meanwhile: cut it as a large file
                pieces, n = saver.large(fh)
                return Content(pieces=pieces, size=n)
        except OSError as err:
            last = err
            time.sleep(0.05)
    assert last is not None
    return Content(failed=f"cannot read: {last.strerror or last}")


def unchanged(old: Entry, st: os.stat_result) -> bool:
    """Whether the previous image's entry ``old`` (a regular file) describes ``st`` field for
    field but the access time, so that its record can be written again as it is (with the new
    access time: backing a file up reads it, which moves that): same inode, size, mode, owner,
    change and modification times, and one name (a file with more goes the long way, for
    hard-link grouping). The ctime moves with any change of extended attributes or creation
    time, so those hold too."""
    return (
        old.ctime_ns == st.st_ctime_ns
        and old.mtime_ns == st.st_mtime_ns
        and old.size == st.st_size
        and old.inode == st.st_ino
        and old.mode == st.st_mode
        and old.uid == st.st_uid
        and old.gid == st.st_gid
        and st.st_nlink == 1
        and bool(old.raw)
    )


def cached_pieces(e: Entry, old: Entry | None, stable_inodes: bool) -> list[Piece] | None:
    """The previous image's pieces for ``e`` when the files cache vouches it unchanged."""
    if (
        old is not None
        and old.size == e.size
        and old.mtime_ns == e.mtime_ns
        and (old.inode == e.inode or not stable_inodes)
    ):
        return list(old.pieces)
    return None


# -- browsing a source (the TUI's folder tree) ------------------------------------------------

MAX_FOLDERS = 4000


def source_folders(spec: str, depth: int = 3) -> SourceFolders:
    """Mount ``spec`` read-only, list its folders ``depth`` levels deep, unmount."""
    (source,) = resolve_sources([spec])
    folders: list[str] = []
    truncated = False
    with mounted(source) as root:
        base = os.path.join(root, source.folder.lstrip("/"))
        preset = user_data_preset(_root_names(root)) if source.folder == "/" else None
        stack = [(source.folder, base, 0)]
        while stack:
            path, local, level = stack.pop()
            if level >= depth:
                continue
            try:
                with os.scandir(local) as it:
                    subs = sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
            except OSError:
                continue
            for name in reversed(subs):
                child = path.rstrip("/") + "/" + name
                if len(folders) >= MAX_FOLDERS:
                    truncated = True
                    break
                folders.append(child)
                stack.append((child, os.path.join(local, name), level + 1))
    folders.sort()
    chosen: list[str] = []
    if preset is not None:
        inc = Includes(list(preset.include), source.case_insensitive)
        for f in folders:
            if inc.state(f) == "inside" and not any(_within(f, c) for c in chosen):
                chosen.append(f)
    return SourceFolders(
        spec,
        preset.system if preset is not None else None,
        tuple(folders),
        tuple(chosen),
        truncated,
    )
