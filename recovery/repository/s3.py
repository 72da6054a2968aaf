"""A backup location in an S3 bucket (Amazon S3 or any S3-compatible store), under a prefix.

Opened by :func:`recovery.repository.kinds.open_backend` for ``s3://`` (HTTPS) and
``s3+http://`` addresses. Spoken with the ``minio`` SDK: small (a few hundred KB over urllib3),
well kept, and made to speak every S3-compatible store; boto3/botocore would add ~80 MB to a
live ISO that must stay under 200 MB.

How it meets docs/FORMAT.md ("Network locations"): every file is one object written by one PUT
(atomic by the protocol; never a multipart upload); there is no rename (``supports_move`` is
False); the writers' lock is the lease of :mod:`recovery.repository.remote`. Keys come from
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` or ``~/.aws/credentials`` (read by the SDK),
never from the address. One client serves every thread (urllib3 keeps a pool of connections).
"""

from __future__ import annotations

import errno
import io
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, suppress
from typing import Any, TypeVar

import urllib3
from minio import Minio
from minio.credentials.providers import (
    AWSConfigProvider,
    ChainedProvider,
    EnvAWSProvider,
    Provider,
    StaticProvider,
)
from minio.error import InvalidResponseError, S3Error, ServerError

from recovery.repository.address import Address
from recovery.repository.backend import Backend, StoredFile
from recovery.repository.credentials import Credentials
from recovery.repository.remote import (
    PARALLEL_REQUESTS,
    Uploads,
    forget_after_fork,
    lease,
    retrying,
)

T = TypeVar("T")

MIN_PART = 5 << 20
"""The SDK's smallest part size; a part size at least the object's length makes one PUT."""
POOL = 16
"""Connections kept to the server: more than the backup's worker threads."""

_NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "NotFound", "NoSuchObject"}
_REFUSED = {
    "AccessDenied",
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "InvalidToken",
    "ExpiredToken",
    "AllAccessDisabled",
    "AccountProblem",
}
_FULL = {"QuotaExceeded", "XMinioStorageFull", "StorageFull"}
_TRANSIENT = {
    "SlowDown",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "OperationAborted",
}


class S3Backend(Backend):
    parallel_requests = PARALLEL_REQUESTS
    supports_move = False

    def __init__(self, address: Address, credentials: Credentials) -> None:
        self.address = address
        self.location = str(address)
        self._uploads = Uploads()
        self.bucket = address.share
        self.prefix = f"{address.path}/" if address.path else ""
        self._client: Minio | None = None
        self.credentials = credentials
        forget_after_fork(self)

    def _after_fork(self) -> None:
        self._client = None  # its pooled sockets are the parent's

    # -- the connection ------------------------------------------------------------------

    def _minio(self) -> Minio:
        if self._client is None:
            endpoint = (
                self.address.host if ":" not in self.address.host else f"[{self.address.host}]"
            )
            if self.address.port is not None:
                endpoint += f":{self.address.port}"
            http = urllib3.PoolManager(
                maxsize=POOL,
                timeout=urllib3.Timeout(connect=10, read=60),
                retries=False,  # ours, in retrying(): bounded, with back-off, then EIO
            )
            self._client = Minio(
                endpoint,
                credentials=ChainedProvider(self._key_providers()),
                secure=self.address.secure,
                http_client=http,
            )
        return self._client

    def _key_providers(self) -> list[Provider]:
        """Keys the person gave (the TUI's form) first, then the environment, then the AWS
        files."""
        given = self.credentials.s3_keys(self.location)
        chain: list[Provider] = [EnvAWSProvider(), AWSConfigProvider()]
        if given is not None:
            chain.insert(0, StaticProvider(given.access_key, given.secret_key))
        return chain

    def _translate(self, e: BaseException) -> OSError | None:
        """The OSError a person sees for ``e``, or None when another try may work."""
        where = self.location
        if isinstance(e, S3Error):
            code = e.code or ""
            if code in _NOT_FOUND:
                return FileNotFoundError(errno.ENOENT, f"not found at {where} ({code})")
            if code in _REFUSED:
                # The next request builds a new client, with keys asked anew (the person may
                # have typed others since: the backend is kept per address).
                self._client = None
                return PermissionError(
                    errno.EACCES,
                    f"the S3 server refused the keys ({code}): check AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY (or ~/.aws/credentials) and the bucket's permissions",
                )
            if code in _FULL:
                return OSError(errno.ENOSPC, f"the S3 store is full ({code})")
            if code in _TRANSIENT:
                return None
            return OSError(errno.EIO, f"the S3 server answered {code or 'an error'}")
        if isinstance(e, ServerError):
            return (
                None
                if e.status_code >= 500 or e.status_code == 429
                else OSError(errno.EIO, f"the S3 server answered HTTP {e.status_code}")
            )
        if isinstance(e, InvalidResponseError):
            return None
        if isinstance(e, ValueError) and "credentials" in str(e):
            return PermissionError(
                errno.EACCES,
                "no S3 keys: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or write ~/.aws/credentials)",
            )
        if isinstance(e, urllib3.exceptions.SSLError):
            return OSError(
                errno.EPROTO,
                f"the TLS certificate of {self.address.host} is not trusted "
                "(for plain HTTP on a LAN, use s3+http://)",
            )
        if isinstance(e, urllib3.exceptions.HTTPError | ConnectionError | socket.timeout):
            return None
        if isinstance(e, OSError):
            return e
        return OSError(errno.EIO, f"S3 request failed: {type(e).__name__}: {e}")

    def _call(self, what: str, operation: Callable[[], T]) -> T:
        return retrying(what, operation, self._translate)

    def _key(self, name: str) -> str:
        return self.prefix + name

    # -- the operations ------------------------------------------------------------------

    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        self._uploads.wait_for(name)
        if length == 0:
            return b""

        def get() -> bytes:
            try:
                response = self._minio().get_object(
                    self.bucket, self._key(name), offset=offset, length=length or 0
                )
            except S3Error as e:
                if e.code == "InvalidRange":
                    return b""  # offset at or past the end: short read, as a file gives
                raise
            try:
                return bytes(response.read())
            finally:
                response.close()
                response.release_conn()

        return self._call(f"read {name}", get)

    def head(self, name: str, length: int) -> tuple[int, bytes] | None:
        """One ranged GET: its Content-Range (``bytes 0-15/SIZE``) names the object's size, so
        no HEAD request goes first."""
        self._uploads.wait_for(name)
        if length <= 0:
            return super().head(name, length)

        def get() -> tuple[int, bytes] | None:
            try:
                response = self._minio().get_object(
                    self.bucket, self._key(name), offset=0, length=length
                )
            except S3Error as e:
                if e.code == "InvalidRange":
                    return None  # an empty object: asked the long way
                raise
            try:
                data = bytes(response.read())
                total = (response.headers.get("Content-Range") or "").rpartition("/")[2]
            finally:
                response.close()
                response.release_conn()
            if total.isdigit():
                return int(total), data
            return (len(data), data[:length]) if response.status == 200 else None

        try:
            found = self._call(f"read {name}", get)
        except FileNotFoundError:
            return None
        return found if found is not None else super().head(name, length)

    def size(self, name: str) -> int | None:
        self._uploads.wait_for(name)
        try:
            stat: Any = self._call(
                f"size of {name}", lambda: self._minio().stat_object(self.bucket, self._key(name))
            )
        except FileNotFoundError:
            return None
        return int(stat.size)

    def write(self, name: str, data: bytes | bytearray | memoryview, durable: bool = False) -> None:
        if durable:  # after every chunk written before it (a manifest, a lease)
            self._uploads.settle()
            self._write_now(name, data, durable)
        else:
            blob = bytes(data)  # the caller may reuse its buffer
            self._uploads.submit(name, lambda: self._write_now(name, blob, durable))

    def _write_now(self, name: str, data: bytes | bytearray | memoryview, durable: bool) -> None:
        blob = bytes(data)
        part = max(len(blob), MIN_PART)

        def put() -> None:
            self._minio().put_object(
                self.bucket, self._key(name), io.BytesIO(blob), len(blob), part_size=part
            )

        self._call(f"write {name}", put)

    def flush(self) -> None:
        """Wait for the background uploads (an acknowledged PUT is durable); raise the first
        that failed."""
        self._uploads.flush()

    def list(self, folder: str) -> Iterator[StoredFile]:
        self._uploads.wait_all()
        prefix = self._key(f"{folder}/" if folder else "")

        def listing() -> list[StoredFile]:
            found = []
            for o in self._minio().list_objects(self.bucket, prefix=prefix, recursive=True):
                name = o.object_name or ""
                if name.endswith("/") or not name.startswith(self.prefix):
                    continue
                found.append(StoredFile(name[len(self.prefix) :], int(o.size or 0)))
            return found

        try:
            yield from self._call(f"list {folder or '/'}", listing)
        except FileNotFoundError:
            return

    def delete(self, name: str) -> None:
        self._uploads.wait_for(name)
        with suppress(FileNotFoundError):
            self._call(
                f"delete {name}", lambda: self._minio().remove_object(self.bucket, self._key(name))
            )

    def lock(self, note: str) -> AbstractContextManager[None]:
        self._uploads.forget()  # a new writer: an earlier one was told of its failures
        return lease(self, note)

    def exists(self) -> bool:
        return bool(self._call("find the bucket", lambda: self._minio().bucket_exists(self.bucket)))

    def is_empty(self) -> bool:
        def first() -> bool:
            for _ in self._minio().list_objects(self.bucket, prefix=self.prefix, recursive=True):
                return False
            return True

        try:
            return bool(self._call("list", first))
        except FileNotFoundError:
            return True

    def create(self) -> None:
        if not self.exists():
            self._call("create the bucket", lambda: self._minio().make_bucket(self.bucket))
