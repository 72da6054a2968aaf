"""The kinds of backup location, and the one function that picks a backend for an address.

Called by :class:`recovery.repository.store.Repository` (and the backup plan, which asks where a
location lives before creating it). Adding a kind of location is one module implementing
:class:`~recovery.repository.backend.Backend` and one branch here.
"""

from __future__ import annotations

import os
import threading

from recovery.errors import UsageError
from recovery.repository import secrets
from recovery.repository.address import KINDS, parse_address, scheme_of
from recovery.repository.backend import Backend
from recovery.repository.secrets import Secrets

__all__ = ["KINDS", "open_backend"]

_opened: dict[tuple[str, int], tuple[Secrets, Backend]] = {}
_opened_lock = threading.Lock()


def open_backend(address: str | os.PathLike[str]) -> Backend:
    """The backend for a location address. Opens nothing yet: no I/O happens here (a network
    backend connects on its first operation).

    An address with a scheme this build does not speak is refused here, before anything is
    created: a typo must never become a local folder named ``smb:``.
    """
    text = os.fspath(address)
    if not text:
        raise UsageError(f"no backup location given: give {KINDS}")
    if scheme_of(text) is None:
        from recovery.repository.local import LocalFolder

        return LocalFolder(text)
    credentials = secrets.current()
    # A network backend is kept for the process, per address and credentials provider: a plan
    # and its run (and each command of a TUI session) share its logged-in connections; a new
    # login costs a key exchange and an authentication (~0.2 s idle, over 1 s on a busy machine).
    with _opened_lock:
        kept = _opened.get((text, id(credentials)))
        if kept is None:  # (the provider is kept with it, so its id stays its own)
            kept = _opened[(text, id(credentials))] = (
                credentials,
                _network_backend(text, credentials),
            )
    return kept[1]


def _network_backend(text: str, credentials: Secrets) -> Backend:
    where = parse_address(text)
    # One line per kind of location; imported here so a build without a client library still
    # opens folders, and so PyInstaller sees every import.
    if where.kind == "sftp":
        from recovery.repository.sftp import SftpBackend

        return SftpBackend(where, credentials)
    if where.kind == "smb":
        from recovery.repository.smb import SmbBackend

        return SmbBackend(where, credentials)
    if where.kind in ("s3", "s3+http"):
        from recovery.repository.s3 import S3Backend

        return S3Backend(where, credentials)
    if where.kind == "nfs":
        from recovery.repository.nfs import NfsBackend

        return NfsBackend(where)
    raise UsageError(f"'{where.kind}://' is not a kind of backup location: give {KINDS}")
