"""``extract``: files and folders copied out of an image, without the person mounting anything.

Called through :mod:`recovery.engine.api`. ``plan_extract`` checks the paths (``pN:/path``) and
the destination (never inside the backup location, never inside an open image's view) and
copies nothing; ``run_extract`` opens the image privately (the same view as ``recovery open``,
in a folder under /run/recovery), refuses before the first byte when a destination would be
overwritten without ``overwrite``, copies with progress, and closes the view again whatever
happens. Kept: contents, mode, owner, times (ns), symlinks, hard links within what is copied,
extended attributes where the target file system takes them. A file the image cannot give (a
damaged chunk: EIO) is reported, its partial copy removed, and the rest is copied.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from recovery.core.units import human_size
from recovery.core.view import parse_image_path
from recovery.engine import opened
from recovery.engine.progress import CancelToken, Progress
from recovery.errors import Refused, UsageError
from recovery.repository.images import streams_of
from recovery.repository.store import Repository, check_name

BLOCK = 4 << 20


@dataclass(frozen=True)
class Item:
    number: int
    path: str
    """Absolute path inside partition ``number``'s file system."""
    dest: str
    """Where it lands: DIR/<last component of path> (DIR/pN for a whole file system)."""

    @property
    def label(self) -> str:
        return f"p{self.number}:{self.path}"


@dataclass
class ExtractPlan:
    repo: str
    image: str
    to: str
    items: list[Item]
    overwrite: bool

    def describe(self) -> list[str]:
        lines = [f"Copy from image '{self.image}' in {self.repo} to {self.to}:"]
        lines += [f"  {i.label} -> {i.dest}" for i in self.items]
        return lines


@dataclass
class ExtractResult:
    image: str
    to: str
    files: int = 0
    folders: int = 0
    links: int = 0
    bytes: int = 0
    seconds: float = 0.0
    copied: list[str] = field(default_factory=list)
    """One line per PATH: what it became and how much."""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {**asdict(self), "ok": self.ok}


def _inside(path: str, folder: str) -> bool:
    folder = os.path.realpath(folder).rstrip("/") or "/"
    return path == folder or path.startswith(folder + "/") or folder == "/"


def check_destination(to: str, repo: Repository, location: str) -> str:
    """The real path of the folder ``to`` copy into, refused unless it is (or can be made as)
    a folder outside the backup location ``location`` (how the person named it)."""
    dest = os.path.realpath(to)
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise UsageError(f"{to} is not a folder: give a folder to copy into")
    if not os.path.isdir(os.path.dirname(dest.rstrip("/")) or "/"):
        raise UsageError(f"the folder that would hold {to} does not exist")
    local = repo.local_path()
    if local is not None and _inside(dest, local):
        raise Refused(
            f"{to} is inside the backup location {location}: copy somewhere else; "
            "nothing was copied"
        )
    return dest


def plan_extract(
    repo_path: str, image: str, paths: list[str], to: str, overwrite: bool = False
) -> ExtractPlan:
    if not paths:
        raise UsageError("name what to copy: pN:/path, e.g. p2:/home/alice")
    if os.geteuid() != 0:
        raise Refused("copying out of an image mounts its file systems and needs root: use sudo")
    repo = Repository.open(repo_path)
    check_name(image)
    body = repo.read_manifest(image)
    numbers = {
        int(s.raw.get("number", 0) or 0)
        for s in streams_of(body, repo.manifest_where(image))
        if s.id != "disk"
    }
    dest = check_destination(to, repo, repo_path)
    for v in opened.open_views():
        if _inside(dest, str(v.get("dir", "/nonexistent"))):
            raise Refused(
                f"{to} is inside the open image at {v.get('dir')}, which is read-only: copy "
                "somewhere else; nothing was copied"
            )
    items = []
    names: set[str] = set()
    for text in paths:
        n, path = parse_image_path(text)
        if n not in numbers:
            raise UsageError(
                f"image '{image}' has no partition {n} "
                f"(it has {', '.join(f'p{x}' for x in sorted(numbers)) or 'none'})"
            )
        name = os.path.basename(path) or f"p{n}"
        if name in names:
            raise UsageError(f"two paths would both be copied to {dest}/{name}: copy them apart")
        names.add(name)
        items.append(Item(n, path, os.path.join(dest, name)))
    return ExtractPlan(repo_path, image, dest, items, overwrite)


def run_extract(plan: ExtractPlan, progress: Progress, cancel: CancelToken) -> ExtractResult:
    started = time.monotonic()
    opened.STATE_DIR.mkdir(parents=True, exist_ok=True)
    where = tempfile.mkdtemp(prefix="extract-", dir=opened.STATE_DIR.parent)
    try:
        view = opened.open_image(plan.repo, plan.image, where)
        try:
            return _copy_all(plan, view.partitions, where, progress, cancel, started)
        finally:
            opened.close_image(where)
            # The private view's log: what it says is in the result's problems already.
            with contextlib.suppress(OSError):
                os.unlink(view.log)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(where)


def _copy_all(
    plan: ExtractPlan,
    partitions: list[dict[str, Any]],
    where: str,
    progress: Progress,
    cancel: CancelToken,
    started: float,
) -> ExtractResult:
    by_number = {int(p["number"]): p for p in partitions}
    sources: list[tuple[Item, str]] = []
    for item in plan.items:
        p = by_number[item.number]
        if not p.get("mounted"):
            raise Refused(
                f"partition {item.number} of '{plan.image}' cannot be read as files "
                f"({p.get('reason')}); nothing was copied"
            )
        src = os.path.join(where, f"p{item.number}") + (item.path if item.path != "/" else "")
        if not os.path.lexists(src):
            raise UsageError(
                f"there is no {item.path} in partition {item.number} of '{plan.image}'"
            )
        sources.append((item, src))

    total = 0
    conflicts: list[str] = []
    for item, src in sources:
        for _, d, st in _walk(src, item.dest):
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
            if os.path.lexists(d) and not (stat.S_ISDIR(st.st_mode) and os.path.isdir(d)):
                conflicts.append(d)
    if conflicts and not plan.overwrite:
        raise Refused(
            f"{len(conflicts)} file(s) already exist where the copy would go (first: "
            f"{conflicts[0]}): add --overwrite to replace them; nothing was copied"
        )
    result = ExtractResult(plan.image, plan.to)
    os.makedirs(plan.to, exist_ok=True)
    progress.step(f"copying from {plan.image}", total)
    for item, src in sources:
        before = (result.files, result.folders, result.links, result.bytes)
        _copy_tree(src, item, result, progress, cancel)
        files, folders, links, size = (
            result.files - before[0],
            result.folders - before[1],
            result.links - before[2],
            result.bytes - before[3],
        )
        result.copied.append(
            f"{item.label} -> {item.dest}: {files} file(s), {folders} folder(s), "
            f"{links} link(s), {human_size(size)}"
        )
    result.seconds = time.monotonic() - started
    return result


def _walk(src: str, dest: str) -> list[tuple[str, str, os.stat_result]]:
    """``(source, destination, lstat)`` of everything under ``src``, parents first."""
    out = [(src, dest, os.lstat(src))]
    if stat.S_ISDIR(out[0][2].st_mode):
        for root, dirs, files in os.walk(src):
            dirs.sort()
            rel = os.path.relpath(root, src)
            base = dest if rel == "." else os.path.join(dest, rel)
            for name in [*sorted(dirs), *sorted(files)]:
                s = os.path.join(root, name)
                out.append((s, os.path.join(base, name), os.lstat(s)))
    return out


def _copy_tree(
    src: str, item: Item, result: ExtractResult, progress: Progress, cancel: CancelToken
) -> None:
    linked: dict[tuple[int, int], str] = {}
    folders: list[tuple[str, str, os.stat_result]] = []
    for s, d, st in _walk(src, item.dest):
        cancel.check()
        mode = st.st_mode
        try:
            if stat.S_ISDIR(mode):
                if not os.path.isdir(d):
                    if os.path.lexists(d):
                        os.unlink(d)
                    os.mkdir(d, 0o700)
                folders.append((s, d, st))
                result.folders += 1
                continue
            if os.path.lexists(d):
                os.unlink(d)
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in linked:
                os.link(linked[key], d)
                result.links += 1
                continue
            if stat.S_ISLNK(mode):
                os.symlink(os.readlink(s), d)
                result.links += 1
            elif stat.S_ISREG(mode):
                _copy_file(s, d, st, result, progress)
                result.files += 1
            else:
                os.mknod(d, mode, st.st_rdev)
                result.files += 1
            if st.st_nlink > 1:
                linked[key] = d
            _keep_attributes(s, d, st, result)
        except OSError as e:
            result.problems.append(_problem(item, s, e))
    for s, d, st in reversed(folders):  # after their contents, which change their times
        try:
            _keep_attributes(s, d, st, result)
        except OSError as e:
            result.problems.append(_problem(item, s, e))


def _problem(item: Item, source: str, e: OSError) -> str:
    # ``source`` is under the private view; name it as the person wrote it.
    marker = f"/p{item.number}"
    inside = source.split(marker, 1)[1] if marker in source else source
    what = f"p{item.number}:{inside or '/'}"
    if e.errno == errno.EIO:
        return f"{what}: the image is damaged there (read error); not copied"
    return f"{what}: {e.strerror or e}"


def _copy_file(
    s: str, d: str, st: os.stat_result, result: ExtractResult, progress: Progress
) -> None:
    fd_in = os.open(s, os.O_RDONLY)
    try:
        fd_out = os.open(d, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            while True:
                data = os.read(fd_in, BLOCK)
                if not data:
                    break
                view = memoryview(data)
                while view:
                    n = os.write(fd_out, view)
                    view = view[n:]
                result.bytes += len(data)
                progress.advance(len(data))
        except OSError:
            os.close(fd_out)
            with contextlib.suppress(OSError):
                os.unlink(d)
            raise
        os.close(fd_out)
    finally:
        os.close(fd_in)


def _keep_attributes(s: str, d: str, st: os.stat_result, result: ExtractResult) -> None:
    link = stat.S_ISLNK(st.st_mode)
    try:
        names = os.listxattr(s, follow_symlinks=False)
    except OSError:
        names = []
    for name in names:
        try:
            os.setxattr(d, name, os.getxattr(s, name, follow_symlinks=False), follow_symlinks=False)
        except OSError as e:
            if e.errno not in (errno.ENOTSUP, errno.EPERM, errno.EOPNOTSUPP, errno.EACCES):
                raise
            note = "extended attributes: the target does not take them (not kept)"
            if note not in result.notes:
                result.notes.append(note)
    try:
        os.chown(d, st.st_uid, st.st_gid, follow_symlinks=False)
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        note = "owners: the target does not take them (not kept)"
        if note not in result.notes:
            result.notes.append(note)
    if not link:
        os.chmod(d, stat.S_IMODE(st.st_mode))
    os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
