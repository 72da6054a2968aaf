"""What every network backend (SFTP, SMB, S3) shares: bounded retries, background uploads,
a pool of connections, and the lease lock.

Called by :mod:`recovery.repository.sftp`, :mod:`~recovery.repository.smb` and
:mod:`~recovery.repository.s3`. Promises: :func:`retrying` turns every failure into an
``OSError`` with an errno and a clear ``strerror`` (never a library exception, never a
secret); :class:`Uploads` runs writes that need not be durable yet in the background (the
engine compresses the next chunk while this one travels), and a failed one is always raised
by the flush that precedes a manifest; :class:`Pool` lends each thread a connection of its own
for one operation and keeps it for the next (a plan and its run, or one worker pool after
another, log in once); :func:`lease` implements docs/FORMAT.md, "Network locations", on any
backend's write, list, read and delete.
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
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from recovery.repository.backend import Backend

from recovery.repository.backend import LockHeld

T = TypeVar("T")
C = TypeVar("C")

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


_FORKED: weakref.WeakSet[Any] = weakref.WeakSet()


def forget_after_fork(holder: Any) -> None:
    """Have ``holder._after_fork()`` called in a forked child (``open`` forks its server): a
    connection made before the fork belongs to the parent (its socket is shared, its reader
    thread did not come along), so the child drops it, unclosed, and makes its own."""
    _FORKED.add(holder)


def _after_fork_in_child() -> None:
    for holder in list(_FORKED):
        holder._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Pool(Generic[C]):
    """Connections to one server, each used by one thread at a time.

    :meth:`run` takes an idle connection (or opens one with ``connect``), runs the operation on
    it and gives it back; a connection whose operation failed in a way ``keep`` does not accept
    (the network, the server going away) is closed with ``close`` instead, so the next try opens
    a fresh one. At most as many connections exist as operations ever ran at once.
    """

    def __init__(self, connect: Callable[[], C], close: Callable[[C], None]) -> None:
        self._connect = connect
        self._close = close
        self._idle: list[C] = []
        self._lock = threading.Lock()
        forget_after_fork(self)

    def _after_fork(self) -> None:
        self._idle, self._lock = [], threading.Lock()

    def run(self, operation: Callable[[C], T], keep: Callable[[BaseException], bool]) -> T:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
        try:
            result = operation(conn)
        except BaseException as e:
            if keep(e):
                self._give_back(conn)
            else:
                with contextlib.suppress(Exception):
                    self._close(conn)
            raise
        self._give_back(conn)
        return result

    def _give_back(self, conn: C) -> None:
        with self._lock:
            self._idle.append(conn)

    def close_all(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                self._close(conn)


UPLOAD_THREADS = 8
"""Background uploads at once: with the engine's workers waiting for each upload, a network
location was idle while they compressed, and they while it answered."""
QUEUED_UPLOADS = 16
"""Uploads started and not finished, at most (each holds its chunk: <= 16 x 4 MiB)."""


class Uploads:
    """Writes that need be durable only after a flush (docs/FORMAT.md), run in the background.

    :meth:`submit` returns at once (waiting only for room in the queue); every other operation
    of the backend on a name waits for that name's upload first (:meth:`wait_for`), a listing
    or a flush for all of them (:meth:`wait_all`), so the backend reads what it wrote. A failed
    upload is kept: the next :meth:`submit` raises it (the backup stops early), and
    :meth:`flush` raises it, which is what keeps a manifest from naming a chunk that never
    arrived. :meth:`forget` clears it when a new writer starts (the lock's owner changes).
    """

    def __init__(self, threads: int = UPLOAD_THREADS, queued: int = QUEUED_UPLOADS) -> None:
        self._threads = threads
        self._room = threading.BoundedSemaphore(queued)
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pending: dict[str, Future[None]] = {}
        self._failed: OSError | None = None
        self._queued = queued
        forget_after_fork(self)

    def _after_fork(self) -> None:
        # The upload threads stayed in the parent, whose uploads these are.
        self._room = threading.BoundedSemaphore(self._queued)
        self._lock = threading.Lock()
        self._pool, self._pending = None, {}

    def submit(self, name: str, upload: Callable[[], None]) -> None:
        self._raise_failure()
        self.wait_for(name)  # a name's writes stay in order
        self._room.acquire()
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="upload")
            future: Future[None] = Future()
            self._pending[name] = future
        try:
            self._pool.submit(self._run, name, upload, future)
        except BaseException:
            self._finish(name, future)
            raise

    def _run(self, name: str, upload: Callable[[], None], future: Future[None]) -> None:
        try:
            if self._failed is None:  # after a failure the rest are dropped: the backup stops
                upload()
        except OSError as e:
            with self._lock:
                self._failed = self._failed or e
        except BaseException as e:
            with self._lock:
                self._failed = self._failed or OSError(errno.EIO, f"upload failed: {e}")
        finally:
            self._finish(name, future)

    def _finish(self, name: str, future: Future[None]) -> None:
        with self._lock:
            if self._pending.get(name) is future:
                del self._pending[name]
        self._room.release()
        future.set_result(None)

    def wait_for(self, name: str) -> None:
        with self._lock:
            future = self._pending.get(name)
        if future is not None:
            future.result()

    def wait_all(self) -> None:
        with self._lock:
            futures = list(self._pending.values())
        for future in futures:
            future.result()

    def settle(self) -> None:
        """Before a durable write (a manifest, a lease): wait for every upload, and raise a
        failure without forgetting it (a lease refresh ignores errors; the flush still sees
        it)."""
        self.wait_all()
        self._raise_failure()

    def flush(self) -> None:
        """Wait for every upload; raise the first failure (once)."""
        self.wait_all()
        with self._lock:
            failed, self._failed = self._failed, None
        if failed is not None:
            raise OSError(failed.errno, failed.strerror)

    def forget(self) -> None:
        """Wait for every upload and drop a failure that an earlier writer was told of."""
        self.wait_all()
        with self._lock:
            self._failed = None

    def _raise_failure(self) -> None:
        failed = self._failed
        if failed is not None:
            raise OSError(failed.errno, failed.strerror)


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
