"""Virtual disk files (raw, qcow2, vhdx, vmdk, vdi): exporting an image to one, and backing one
up. Called by the ``export`` and ``backup`` commands.

Both go through ``qemu-img`` (Debian's qemu-utils), the one tool that reads and writes every
one of these formats. Neither needs nbd or FUSE (this machine has no nbd; the live system
should not depend on it either):

- export writes the whole disk as a *sparse* raw file (only DATA cells are written; every
  chunk is hash-checked on the way), then ``qemu-img convert`` turns it into the asked format,
  which skips the holes (qcow2, vhdx, vmdk and vdi are all allocated on demand). The raw file
  lies next to FILE and is removed afterwards; for ``raw`` it is FILE itself.
- a virtual disk as backup source is converted by ``qemu-img convert`` to a sparse raw file
  next to it (disk space: about the data it holds, not its size), attached read-only as a loop
  device, backed up like any disk, then detached and removed. A raw file is attached directly.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from recovery.devices.tools import Need, require
from recovery.engine.progress import CancelToken, Progress
from recovery.errors import DeviceError, Refused, UsageError
from recovery.repository.images import cell_size_of, streams_of
from recovery.repository.maps import DATA, StreamReader
from recovery.repository.store import Repository, check_name

FORMATS = ("raw", "qcow2", "vhdx", "vmdk", "vdi")


@dataclass(frozen=True)
class ExportResult:
    image: str
    file: str
    format: str
    disk_size: int
    written_bytes: int
    file_bytes: int
    """Bytes the file takes on its file system (sparse: about the data)."""
    seconds: float
    ok: bool = True
    checks: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        from dataclasses import asdict

        return asdict(self)


def _qemu_img(purpose: str) -> str:
    """qemu-img's path; :class:`MissingTool` (naming qemu-utils) when it is not installed."""
    require([Need("qemu-img", purpose)])
    tool = shutil.which("qemu-img")
    assert tool is not None
    return tool


def _run(cmd: list[str], what: str) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as e:
        raise DeviceError(f"cannot run {cmd[0]}: {e.strerror}") from e
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or [f"exit code {r.returncode}"])[-1]
        raise DeviceError(f"{what} failed: {last}")
    return r.stdout


def export_image(
    repo_path: str, image: str, file: str, fmt: str, progress: Progress, cancel: CancelToken
) -> ExportResult:
    if fmt not in FORMATS:
        raise UsageError(f"--format takes one of {', '.join(FORMATS)}, not '{fmt}'")
    started = time.monotonic()
    out = Path(file)
    if out.exists():
        raise Refused(f"{file} exists: give a new file name (nothing is overwritten)")
    if not out.parent.is_dir():
        raise UsageError(f"{out.parent} is not a folder")
    tool = _qemu_img(f"to write {fmt} files") if fmt != "raw" else ""
    repo = Repository.open(repo_path)
    check_name(image)
    body = repo.read_manifest(image)
    where = repo.manifest_where(image)
    cell_size = cell_size_of(body, where)
    streams = streams_of(body, where)
    if not body.get("whole_disk", True):
        raise Refused(
            f"image '{image}' holds only some partitions of its disk: export needs a "
            "whole-disk image"
        )
    disk_size = int((body.get("source") or {}).get("size", 0))
    ends = [int(s.raw.get("start", 0)) + s.size for s in streams]
    if disk_size <= 0 or max(ends) > disk_size:
        raise Refused(f"image '{image}': its disk size is unknown or too small; cannot export")
    raw = out if fmt == "raw" else out.with_name(f".{out.name}.raw-tmp")
    written = 0
    try:
        fd = os.open(raw, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            os.ftruncate(fd, disk_size)
            # The layout stream first: partitions are written over it.
            for s in sorted(streams, key=lambda s: s.id != "disk"):
                cancel.check()
                start = int(s.raw.get("start", 0))
                reader = StreamReader(repo, s, cell_size, image)
                progress.step(f"writing {s.id}", int(s.raw.get("data_bytes", 0)))
                for cell, rec in reader.records():
                    if rec.kind != DATA:
                        continue
                    data = repo.get_chunk(rec.digest, reader.where(cell))
                    written += _write_sparse(fd, data, start + cell * cell_size)
                    progress.advance(len(data))
                    cancel.check()
            os.fsync(fd)
        finally:
            os.close(fd)
        if fmt != "raw":
            progress.step(f"converting to {fmt} (qemu-img)", 0)
            _run([tool, "convert", "-f", "raw", "-O", fmt, str(raw), str(out)], "qemu-img convert")
    except OSError as e:
        with contextlib.suppress(OSError):
            out.unlink()
        raise DeviceError(f"cannot write {file}: {e.strerror}") from e
    except BaseException:
        with contextlib.suppress(OSError):
            out.unlink()
        raise
    finally:
        if raw != out:
            with contextlib.suppress(OSError):
                raw.unlink()
    return ExportResult(
        image, file, fmt, disk_size, written, out.stat().st_blocks * 512, time.monotonic() - started
    )


SPARSE_PIECE = 64 << 10
_ZEROS = memoryview(bytes(SPARSE_PIECE))


def _write_sparse(fd: int, data: bytes, offset: int) -> int:
    """Write ``data`` at ``offset`` leaving all-zero 64 KiB pieces as holes; bytes written."""
    n = 0
    view = memoryview(data)
    for pos in range(0, len(data), SPARSE_PIECE):
        piece = view[pos : pos + SPARSE_PIECE]
        if piece != _ZEROS[: len(piece)]:
            os.pwrite(fd, piece, offset + pos)
            n += len(piece)
    return n


def default_name(path: str) -> str:
    """An image name for the disk inside ``path``: its file name and the date."""
    import re
    from datetime import UTC, datetime

    stem = re.sub(r"[^A-Za-z0-9._-]", "-", Path(path).stem).lstrip("._-")[:60] or "vdisk"
    return f"{stem}-{datetime.now(UTC).strftime('%Y-%m-%d-%H%M%S')}"


VDISK_SUFFIXES = (".qcow2", ".vhdx", ".vmdk", ".vdi")
MIN_DISK = 1 << 20


def is_virtual_disk(path: str) -> bool:
    """Whether a backup source names a virtual disk file: a .qcow2/.vhdx/.vmdk/.vdi file, or a
    regular file of whole sectors and at least 1 MiB (a raw disk image). Anything else is left
    to the block-device checks, which say what is wrong with it."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_size < MIN_DISK:
        return False
    return path.lower().endswith(VDISK_SUFFIXES) or st.st_size % 512 == 0


def disk_format(path: str) -> str:
    qemu_img = _qemu_img("to read virtual disk files")
    out = _run([qemu_img, "info", "--output=json", path], f"reading {path} with qemu-img")
    try:
        fmt = json.loads(out)["format"]
    except (ValueError, KeyError, TypeError) as e:
        raise DeviceError(f"qemu-img could not tell the format of {path}") from e
    if fmt not in FORMATS:
        raise UsageError(
            f"{path} is a {fmt} file; recovery backs up {', '.join(FORMATS)} virtual disks"
        )
    return str(fmt)


@contextlib.contextmanager
def attached(path: str, progress: Progress | None = None) -> Iterator[str]:
    """The disk inside the virtual disk file ``path`` as a read-only loop device."""
    fmt = disk_format(path)
    require([Need("losetup", "to attach the disk inside a virtual disk file")])
    src = Path(path)
    raw = src if fmt == "raw" else src.with_name(f".{src.name}.raw-tmp")
    try:
        if fmt != "raw":
            if progress is not None:
                progress.step(f"converting {src.name} ({fmt}) to a sparse raw file", 0)
            qemu_img = _qemu_img(f"to read {fmt} files")
            _run(
                [qemu_img, "convert", "-f", fmt, "-O", "raw", str(src), str(raw)],
                f"qemu-img convert of {path}",
            )
        dev = _run(
            ["losetup", "--find", "--show", "--read-only", str(raw)], "attaching a loop device"
        ).strip()
        try:
            yield dev
        finally:
            subprocess.run(["losetup", "-d", dev], capture_output=True, check=False)
    finally:
        if raw != src:
            with contextlib.suppress(OSError):
                raw.unlink()
