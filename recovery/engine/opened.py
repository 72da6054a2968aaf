"""``open`` and ``close``: an image served read-only at a folder by a background process.

Called through :mod:`recovery.engine.api` by the CLI (``recovery open``/``close``) and by
:mod:`recovery.engine.extract`. :func:`open_image` checks the image and the folder, then forks a
server (double fork, own session) that holds the FUSE view and the file system mounts under it,
and returns once the server says it is ready (or with its one-line error). What the server
mounted is written to a state file under :data:`STATE_DIR`, so :func:`close_image`, in another
process, unmounts the file systems, detaches the loop devices, unmounts the view and waits for
the server to end, leaving the folder as it was. Several images may be open at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from recovery.engine.fileview import FILES, FileImageView, open_view, serve_files
from recovery.engine.view import ImageView, ViewResult, mount_partition, serve, unmount_partition
from recovery.errors import DeviceError, RecoveryError, Refused, UsageError

STATE_DIR = Path(os.environ.get("RECOVERY_RUN_DIR", "/run/recovery")) / "open"
READY_TIMEOUT = 600.0
"""Seconds to wait for the server: mounting a large damaged NTFS can take a while."""


def _key(directory: str) -> str:
    return hashlib.sha256(directory.encode()).hexdigest()[:16]


def state_path(directory: str) -> Path:
    return STATE_DIR / f"{_key(directory)}.json"


def mount_points() -> set[str]:
    """Every mount point of this machine (from /proc/self/mounts, escapes decoded)."""
    out: set[str] = set()
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 1:
                    out.add(_unescape(fields[1]))
    except OSError:
        pass
    return out


def _unescape(field: str) -> str:
    for code, ch in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, ch)
    return field


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_state(directory: str) -> dict[str, Any] | None:
    try:
        data = json.loads(state_path(directory).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def open_views() -> list[dict[str, Any]]:
    """The state of every image open now (servers that still run)."""
    out = []
    for f in sorted(STATE_DIR.glob("*.json")) if STATE_DIR.is_dir() else []:
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(f.read_text())
            if isinstance(data, dict) and _alive(int(data.get("pid", 0))):
                out.append(data)
    return out


def _check_folder(directory: str) -> str:
    real = os.path.realpath(directory)
    if not os.path.isdir(real):
        raise UsageError(
            f"{directory} is not a folder: create an empty folder to open the image in"
        )
    state = read_state(real)
    if real in mount_points() or (state and _alive(int(state.get("pid", 0)))):
        raise UsageError(f"{directory} is in use (an image is open there?): close it first")
    if any(os.scandir(real)):
        raise UsageError(f"{directory} is not empty: give an empty folder")
    for v in open_views():
        inside = str(v.get("dir", ""))
        if real == inside or real.startswith(inside.rstrip("/") + "/"):
            raise UsageError(f"{directory} is inside the open image at {inside}: choose another")
    return real


def open_image(repo: str, image: str, directory: str) -> ViewResult:
    """Serve ``REPO::IMAGE`` read-only at ``directory``; returns once it is mounted."""
    if os.geteuid() != 0:
        raise Refused("opening an image mounts file systems and needs root: run it with sudo")
    real = _check_folder(directory)
    view = open_view(repo, image)  # a missing or damaged image stops here, in the caller
    try:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DeviceError(f"cannot create {STATE_DIR}: {e.strerror}") from e
    log = STATE_DIR / f"{_key(real)}.log"
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked process
        os.close(r)
        try:
            if os.fork() != 0:
                os._exit(0)
            _server(view, repo, real, w, log)
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(child, 0)
    try:
        message = _read_ready(r)
    finally:
        os.close(r)
    if message is None:
        tail = ""
        with contextlib.suppress(OSError):
            lines = log.read_text().strip().splitlines()
            tail = f": {lines[-1]}" if lines else ""
        raise DeviceError(f"the view of {image} ended before it was ready{tail} (log: {log})")
    if "error" in message:
        raise DeviceError(str(message["error"]))
    return ViewResult(
        real, int(message["pid"]), list(message["files"]), list(message["partitions"]), str(log)
    )


def _read_ready(fd: int) -> dict[str, Any] | None:
    buf = b""
    deadline = time.monotonic() + READY_TIMEOUT
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        data = os.read(fd, 65536)
        if not data:
            break
        buf += data
    try:
        msg = json.loads(buf.split(b"\n", 1)[0])
    except ValueError:
        return None
    return msg if isinstance(msg, dict) else None


def _server(view: ImageView | FileImageView, repo: str, directory: str, w: int, log: Path) -> None:
    """The forked server: its own session, output to the log, the view until unmounted."""
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    null = os.open(os.devnull, os.O_RDWR)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)
    # Fresh stream objects: the forking process (the TUI) may have replaced sys.stdout and
    # sys.stderr, or another of its threads may have held their locks at the fork.
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    os.chdir("/")
    told = False

    def tell(msg: dict[str, Any]) -> None:
        nonlocal told
        if told:
            return
        told = True
        with contextlib.suppress(OSError):
            os.write(w, json.dumps(msg).encode() + b"\n")
            os.close(w)

    def ready() -> None:
        try:
            widen_readahead(directory)
            for p in view.partitions:
                mount_partition(p, f"{directory}/p{p.number}.img", f"{directory}/p{p.number}")
            state = {
                "dir": directory,
                "repo": repo,
                "image": view.image,
                "pid": os.getpid(),
                "log": str(log),
                "partitions": [
                    {
                        "number": p.number,
                        "target": f"{directory}/p{p.number}",
                        "loop": p.loop,
                        "mounted": p.mounted,
                    }
                    for p in view.partitions
                ],
            }
            tmp = state_path(directory).with_suffix(".tmp")
            tmp.write_text(json.dumps(state))
            tmp.rename(state_path(directory))
            tell(
                {
                    "pid": os.getpid(),
                    "files": [f"{FILES}/"]
                    if isinstance(view, FileImageView)
                    else sorted(view.files),
                    "partitions": [
                        {
                            "number": p.number,
                            "fstype": p.fstype,
                            "image": f"{directory}/p{p.number}.img",
                            "mounted": f"{directory}/p{p.number}" if p.mounted else None,
                            "reason": p.reason,
                        }
                        for p in view.partitions
                    ],
                }
            )
        except BaseException as e:  # anything here must reach the waiting parent
            text = e.message if isinstance(e, RecoveryError) else repr(e)
            print(f"open failed: {text}", flush=True)
            tell({"error": f"cannot open the image: {text}"})
            for p in view.partitions:
                unmount_partition(f"{directory}/p{p.number}", p.loop)
            subprocess.run(["umount", "-l", directory], capture_output=True)

    print(f"serving {repo}::{view.image} at {directory}", flush=True)
    try:
        if isinstance(view, FileImageView):
            serve_files(view, directory, ready)
        else:
            serve(view, directory, ready)
    except BaseException as e:
        tell({"error": f"cannot mount the view at {directory}: {e}"})
    finally:
        view.close()
        state = read_state(directory)
        if state is not None and state.get("pid") == os.getpid():
            with contextlib.suppress(OSError):
                state_path(directory).unlink()
        print("view closed", flush=True)


def widen_readahead(directory: str, kib: int = 4096) -> None:
    """Let the kernel read ahead ``kib`` from the view, in requests of up to 1 MiB.

    FUSE's default of 128 KiB cut a 200 MB sequential read into 1600 requests; at 4 MiB (one
    cell) they come as 1 MiB. A loop device copies the setting when it opens pN.img, so this
    runs before the file systems are mounted. Best effort: without it reads are only slower.
    """
    st = os.stat(directory)
    knob = Path(f"/sys/class/bdi/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/read_ahead_kb")
    with contextlib.suppress(OSError):
        knob.write_text(str(kib))


def close_image(directory: str) -> list[str]:
    """Unmount everything ``open`` mounted at ``directory`` and end its server.

    Returns lines about what could not be undone (empty when all went)."""
    real = os.path.realpath(directory)
    state = read_state(real)
    mounted = real in mount_points()
    if state is None and not mounted:
        raise UsageError(f"no image is open at {directory}")
    problems: list[str] = []
    parts = state.get("partitions", []) if state else []
    points = mount_points()
    for p in reversed(parts):
        target = str(p.get("target"))
        if target in points or p.get("loop"):
            problem = unmount_partition(target, p.get("loop"))
            if problem:
                problems.append(problem)
    if mounted:
        problems.extend(_unmount_view(real))
    pid = int(state.get("pid", 0)) if state else 0
    if pid and _alive(pid):
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(OSError):
        state_path(real).unlink()
    log = state_path(real).with_suffix(".log")
    with contextlib.suppress(OSError):
        # Kept only when it says something worth reading: which chunks failed reads.
        if "EIO" not in log.read_text():
            log.unlink()
    return problems


def _unmount_view(directory: str) -> list[str]:
    # A FUSE driver that served a pN/ may still hold its pN.img for a moment after its own
    # unmount: retry before falling back to a lazy unmount.
    last = ""
    for _ in range(100):
        r = subprocess.run(["umount", directory], capture_output=True, text=True)
        if r.returncode == 0 or directory not in mount_points():
            return []
        last = r.stderr.strip()
        time.sleep(0.1)
    r = subprocess.run(["umount", "-l", directory], capture_output=True, text=True)
    if r.returncode != 0:
        return [f"cannot unmount {directory}: {r.stderr.strip() or last}"]
    return []
