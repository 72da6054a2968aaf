"""Which paths a file backup keeps: exclude patterns, chosen folders and the presets.

Pure logic for :mod:`recovery.engine.filebackup`; paths here are ``/``-separated strings from
the root of the source's file system (``/Users/alice/AppData``), no I/O.

Patterns (as ``--exclude`` takes them): ``*`` matches within one name, ``**`` any number of
names, ``?`` one character, ``[...]`` a class. A pattern starting with ``/`` is anchored at
the file system's root; any other matches at any depth (``*.tmp``, ``node_modules``). A
trailing ``/`` matches folders only. A folder that matches is left out with all it holds.
On NTFS and FAT names compare without case.
"""

from __future__ import annotations

import re
from typing import NamedTuple


def _translate(glob: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(glob):
        c = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = glob.find("]", i + 2)
            if j < 0:
                out.append(re.escape(c))
                i += 1
                continue
            body = glob[i + 1 : j]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


class Pattern(NamedTuple):
    """One compiled exclude pattern (a named tuple, not a dataclass: the command line loads
    this module before it forks a file backup's read-ahead, and dataclasses takes 6 ms)."""

    text: str
    regex: re.Pattern[str]
    folders_only: bool

    @classmethod
    def compile(cls, text: str, case_insensitive: bool) -> Pattern:
        glob = text.strip()
        folders_only = glob.endswith("/") and len(glob) > 1
        glob = glob.rstrip("/") or "/"
        if glob.startswith("/"):
            rx = "^" + _translate(glob) + "$"
        else:
            rx = "^(?:.*/)?" + _translate(glob) + "$"
        flags = re.IGNORECASE if case_insensitive else 0
        return cls(text, re.compile(rx, flags | re.DOTALL), folders_only)

    def matches(self, path: str, is_folder: bool) -> bool:
        if self.folders_only and not is_folder:
            return False
        return self.regex.match(path) is not None


class Excludes:
    """A compiled list of exclude patterns for one source."""

    def __init__(self, patterns: list[str], case_insensitive: bool) -> None:
        self.patterns = [Pattern.compile(p, case_insensitive) for p in patterns if p.strip()]

    def excluded(self, path: str, is_folder: bool) -> bool:
        """Whether ``path`` (absolute in its file system, ``/`` alone being the root) is out."""
        return any(p.matches(path, is_folder) for p in self.patterns)


class Includes:
    """Chosen folders and files (anchored paths, ``*`` allowed per name, no ``**``): whether
    a path is inside one, or on the way to one (then the walk goes on into it)."""

    def __init__(self, roots: list[str], case_insensitive: bool) -> None:
        flags = (re.IGNORECASE if case_insensitive else 0) | re.DOTALL
        self.roots = [[re.compile(_translate(p), flags) for p in r.split("/") if p] for r in roots]

    def state(self, path: str) -> str:
        """``inside``, ``towards`` (an ancestor of something chosen) or ``outside``."""
        names = [p for p in path.split("/") if p]
        towards = False
        for root in self.roots:
            n = min(len(root), len(names))
            if all(root[i].fullmatch(names[i]) for i in range(n)):
                if len(names) >= len(root):
                    return "inside"
                towards = True
        return "towards" if towards else "outside"


# -- presets (docs: README, "File backup") -----------------------------------------------------

WINDOWS_USER_FOLDERS = (
    "Documents",
    "Desktop",
    "Pictures",
    "Music",
    "Videos",
    "Downloads",
    "Favorites",
)
WINDOWS_EXCLUDES = (
    "/pagefile.sys",
    "/hiberfil.sys",
    "/swapfile.sys",
    "$RECYCLE.BIN/",
    "System Volume Information/",
    "Temp/",
    "Cache/",
    "Caches/",
    "INetCache/",
    "Thumbs.db",
    "~$*",
    "*.tmp",
)
LINUX_ROOTS = ("/home", "/root", "/etc")
LINUX_EXCLUDES = (
    ".cache/",
    ".local/share/Trash/",
    ".Trash-*/",
    ".thumbnails/",
    "Cache/",
    "CacheStorage/",
    "Code Cache/",
    "GPUCache/",
    "node_modules/.cache/",
    "*.tmp",
)


class Preset(NamedTuple):
    name: str
    system: str
    """``windows`` or ``linux``: which kind of system the source was recognised as."""
    include: tuple[str, ...]
    exclude: tuple[str, ...]


def user_data_preset(root_names: set[str]) -> Preset | None:
    """The ``user-data`` preset for a file system whose root holds ``root_names``, or None
    when it is neither a Windows nor a Linux system."""
    lower = {n.lower() for n in root_names}
    if {"windows", "users"} <= lower:
        include = tuple(f"/Users/*/{f}" for f in WINDOWS_USER_FOLDERS)
        return Preset("user-data", "windows", include, WINDOWS_EXCLUDES)
    if {"etc", "home"} <= lower or {"etc", "root"} <= lower:
        return Preset("user-data", "linux", LINUX_ROOTS, LINUX_EXCLUDES)
    return None
