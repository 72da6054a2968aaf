"""What every network backend (SFTP, SMB, S3) shares: bounded retries, and the lease lock.

Called by :mod:`recovery.repository.sftp`, :mod:`~recovery.repository.smb` and
:mod:`~recovery.repository.s3`. Promises: :func:`retrying` turns every failure into an
``OSError`` with an errno and a clear ``strerror`` (never a library exception, never a
secret); :func:`lease` implements docs/FORMAT.md, "Network locations", on any backend's
write, list, read and delete.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from recovery.repository.backend import Backend

from recovery.repository.backend import LockHeld

T = TypeVar("T")

PARALLEL_REQUESTS = 6
"""Worker threads for a network location: with one per core (2 here), restore waited on round
trips with the CPU half idle."""

TRIES = 5
FIRST_WAIT = 0.5
"""Waits between tries: 0.5, 1, 2, 4 s (7.5 s in all, plus the tries themselves)."""


def retrying(
    what: str,
    operation: Callable[[], T],
    translate: Callable[[BaseException], OSError | None],
    reconnect: Callable[[], None] = lambda: None,
    tries: int = TRIES,
) -> T:
    """Run ``operation``; a failure that ``translate`` maps to None is transient: reconnect, wait
    (doubling from :data:`FIRST_WAIT`), try again, at most ``tries`` times, then ``EIO``.

    ``translate`` maps a final failure to the OSError the caller sees; an OSError raised by the
    operation itself with an errno passes through unchanged (FileNotFoundError above all).
    """
    wait = FIRST_WAIT
    last: BaseException | None = None
    for attempt in range(tries):
        try:
            return operation()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:
            mapped = translate(e)
            if mapped is not None:
                raise mapped from None
            last = e
        with contextlib.suppress(Exception):
            reconnect()
        if attempt + 1 < tries:
            time.sleep(wait)
            wait *= 2
    reason = str(last) or type(last).__name__
    raise OSError(errno.EIO, f"no answer to '{what}' after {tries} tries: {reason}")


# -- the lease lock (docs/FORMAT.md, "Network locations") --------------------------------

LOCKS_FOLDER = "locks"
STALE_AFTER = 600.0
"""Seconds without a refresh after which a lease is stale."""
REFRESH_EVERY = 60.0
PID_MAX = 1 << 22
STEP_BACK_TRIES = 5


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _age(stamp: object) -> float | None:
    if not isinstance(stamp, str):
        return None
    try:
        then = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    return (datetime.now(UTC) - then).total_seconds()


def _pid_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(body: object, host: str = "") -> bool:
    """Whether a lease's content shows a holder that is gone (see FORMAT.md)."""
    if not isinstance(body, dict):
        return True
    age = _age(body.get("refreshed"))
    if age is None or age > STALE_AFTER:
        return True
    pid = body.get("pid")
    here = host or socket.gethostname()
    if body.get("host") != here:
        return False
    # A pid no process can have (Linux's PID_MAX_LIMIT is 2**22) names a holder that is gone.
    if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid <= PID_MAX:
        return True
    return not _pid_runs(pid)


def _describe(body: object) -> str:
    if not isinstance(body, dict):
        return ""
    keep = {k: body[k] for k in ("pid", "host", "operation", "since") if k in body}
    return json.dumps(keep)


@contextlib.contextmanager
def lease(backend: Backend, note: str) -> Iterator[None]:
    """Hold the writers' lock of a location without flock: a lease object refreshed by a
    thread while the caller works. Raises :class:`LockHeld` when a fresh lease of another
    writer exists after :data:`STEP_BACK_TRIES` tries."""
    owner = secrets.token_hex(16)
    name = f"{LOCKS_FOLDER}/{owner}.lock"
    try:
        fields = json.loads(note)
    except ValueError:
        fields = {"operation": note}
    if not isinstance(fields, dict):
        fields = {"operation": note}
    body: dict[str, object] = {
        **fields,
        "owner": owner,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }

    def put() -> None:
        body["refreshed"] = _now()
        backend.write(name, json.dumps(body).encode(), durable=True)

    holder = ""
    for attempt in range(STEP_BACK_TRIES):
        put()
        holder = ""
        for f in list(backend.list(LOCKS_FOLDER)):
            if f.name == name or not f.name.endswith(".lock"):
                continue
            try:
                other = json.loads(backend.read(f.name, 0, 1 << 16))
            except FileNotFoundError:
                continue  # released meanwhile
            except (ValueError, RecursionError):
                other = None  # not a lease of ours: garbage, removed as stale
            if is_stale(other):
                backend.delete(f.name)
            else:
                holder = _describe(other)
        if not holder:
            try:
                mine = json.loads(backend.read(name, 0, 1 << 16))
            except (FileNotFoundError, ValueError, RecursionError):
                mine = None
            if isinstance(mine, dict) and mine.get("owner") == owner:
                break
            holder = "a writer that removed this one's lock"
        backend.delete(name)
        if attempt + 1 < STEP_BACK_TRIES:
            time.sleep(random.uniform(0.2, 1.0))
    else:
        raise LockHeld(holder)

    stop = threading.Event()

    def refresh() -> None:
        while not stop.wait(REFRESH_EVERY):
            with contextlib.suppress(OSError):
                put()

    refresher = threading.Thread(target=refresh, name="lease-refresh", daemon=True)
    refresher.start()
    try:
        yield
    finally:
        stop.set()
        refresher.join()
        with contextlib.suppress(OSError):
            backend.delete(name)
