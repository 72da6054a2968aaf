"""Backup location addresses: what a person types after ``--to`` or before ``::IMAGE``.

Called by :func:`recovery.repository.kinds.open_backend`; pure (no I/O), so every rule is
unit-tested. Promises: an address with a scheme is either one of the kinds below, parsed into an
:class:`Address`, or refused with a :class:`UsageError` whose one line names the kinds that
work; a password inside an address is refused (it would show in ``ps`` and shell history).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from recovery.errors import UsageError

KINDS = (
    "a folder (/media/usb/backups), smb://[USER@]HOST[:PORT]/SHARE[/PATH], "
    "sftp://[USER@]HOST[:PORT]/PATH, s3://HOST[:PORT]/BUCKET[/PREFIX], "
    "s3+http://HOST[:PORT]/BUCKET[/PREFIX] or nfs://HOST[:PORT]/EXPORT[/PATH]"
)
"""The kinds of location this build takes, as the refusal of an unknown address names them."""

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)
_HOST = re.compile(r"^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9._-]+))(?::([0-9]{1,5}))?$")
# S3 bucket names (the rules every S3-compatible store accepts).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class Address:
    """A parsed network location. ``path`` is ``/``-separated with no leading or trailing
    ``/``: relative to the share (SMB) or bucket (S3); for SFTP it is absolute unless ``home``."""

    kind: str
    """``smb``, ``sftp``, ``s3``, ``s3+http`` or ``nfs``."""
    host: str
    port: int | None
    user: str | None
    share: str
    """The SMB share, the S3 bucket or the NFS export (the path's first element); empty for
    SFTP."""
    path: str
    home: bool = False
    """SFTP only: ``path`` starts at the user's home (``/~/dir``)."""

    @property
    def secure(self) -> bool:
        return self.kind != "s3+http"

    def __str__(self) -> str:
        """The address as messages show it (there is never a secret in it)."""
        user = f"{self.user}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port is not None else ""
        parts = [p for p in (self.share, self.path) if p]
        if self.kind == "sftp":
            parts = [p for p in ("~" if self.home else "", self.path) if p]
        return f"{self.kind}://{user}{host}{port}/" + "/".join(parts)


def scheme_of(text: str) -> str | None:
    m = _SCHEME.match(text)
    return m.group(1).lower() if m else None


def parse_address(text: str) -> Address:
    """Parse a network address; a folder path (no ``scheme://``) is not for this function."""
    m = _SCHEME.match(text)
    if not m:
        raise UsageError(f"'{text}' is not a network address: give {KINDS}")
    scheme, rest = m.group(1).lower(), m.group(2)
    if scheme not in ("smb", "sftp", "s3", "s3+http", "nfs"):
        raise UsageError(f"'{scheme}://' is not a kind of backup location: give {KINDS}")
    authority, _, path = rest.partition("/")
    user: str | None = None
    if "@" in authority:
        user, _, authority = authority.rpartition("@")
        if ":" in user:
            raise UsageError(
                f"{scheme}:// address with a password in it: a password on the command line "
                "shows in 'ps' and the shell's history; give it in RECOVERY_PASSWORD instead"
            )
        user = unquote(user)
        if not user:
            raise UsageError(f"'{text}': the user before '@' is empty")
        if scheme.startswith("s3"):
            raise UsageError(
                f"'{text}': an s3:// address takes no user; give the keys in "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )
        if scheme == "nfs":
            raise UsageError(
                f"'{text}': an nfs:// address takes no user; the server decides by this "
                "machine's address what it may do"
            )
    h = _HOST.match(authority)
    if not h:
        raise UsageError(f"'{text}' names no usable server: give {scheme}://HOST/...")
    host = h.group(1) or h.group(2)
    port = int(h.group(3)) if h.group(3) else None
    if port is not None and not 0 < port < 65536:
        raise UsageError(f"'{text}': port {port} is out of range (1 to 65535)")
    segments = [unquote(s) for s in path.split("/") if s]
    if any(s in (".", "..") for s in segments):
        raise UsageError(f"'{text}': '.' and '..' are not allowed in a location's path")
    if scheme == "sftp":
        if not segments:
            raise UsageError(
                f"'{text}' names no folder: give sftp://HOST/PATH (absolute) or "
                "sftp://HOST/~/PATH (from the home)"
            )
        home = segments[0] == "~"
        below = segments[1:] if home else segments
        return Address("sftp", host, port, user, "", "/".join(below), home=home)
    if not segments:
        what = {"smb": "SHARE", "nfs": "EXPORT"}.get(scheme, "BUCKET")
        raise UsageError(f"'{text}' names no {what.lower()}: give {scheme}://HOST/{what}[/PATH]")
    share, rel = segments[0], "/".join(segments[1:])
    if scheme.startswith("s3") and not _BUCKET.match(share):
        raise UsageError(
            f"'{share}' is not a bucket name: 3 to 63 lower-case letters, digits, '.' and '-'"
        )
    return Address(scheme, host, port, user, share, rel)
