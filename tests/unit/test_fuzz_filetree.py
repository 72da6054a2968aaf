"""File images (issue 13): the tree parser and the file-image manifest fields, fuzzed, and the
exclude patterns and presets.

The tree is untrusted input like every file of a location: any bytes give entries that obey
FORMAT.md ("File images", "Tree") or an :class:`IntegrityError`, never another exception; a
tree cut into chunks anywhere parses the same.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recovery.core.excludes import Excludes, Includes, user_data_preset
from recovery.engine.images import image_info
from recovery.errors import IntegrityError, RecoveryError
from recovery.repository import filetree
from recovery.repository.filetree import ENTRY, Entry, Piece, TreeWriter, parse_entries
from recovery.repository.store import Repository

FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

names = st.binary(min_size=1, max_size=12).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b"..")
)
pieces = st.lists(
    st.builds(
        Piece, st.binary(min_size=32, max_size=32), st.integers(0, 2**32 - 1), st.integers(1, 2**20)
    ),
    max_size=4,
)
xattrs = st.lists(st.tuples(st.binary(min_size=1, max_size=20), st.binary(max_size=40)), max_size=3)
i64 = st.integers(-(2**63), 2**63 - 1)


@st.composite
def trees(draw: st.DrawFn) -> list[Entry]:
    """A valid tree: folders before what they hold, hard links to earlier files."""
    out: list[Entry] = []
    folders: list[bytes] = [b""]
    files: list[bytes] = []
    seen: set[bytes] = set()
    for _ in range(draw(st.integers(0, 15))):
        parent = draw(st.sampled_from(folders))
        path = (parent + b"/" if parent else b"") + draw(names)
        if path in seen:
            continue
        seen.add(path)
        kind = draw(st.sampled_from(list(filetree.TYPE_NAMES)))
        e = Entry(
            path,
            kind,
            mode=draw(st.integers(0, 2**32 - 1)),
            uid=draw(st.integers(0, 2**32 - 1)),
            mtime_ns=draw(i64),
            btime_ns=draw(i64),
            xattrs=draw(xattrs),
        )
        if kind == filetree.REGULAR:
            e.pieces = draw(pieces)
            e.size = sum(p.length for p in e.pieces)
            files.append(path)
        elif kind == filetree.FOLDER:
            folders.append(path)
        elif kind == filetree.SYMLINK:
            e.target = draw(st.binary(min_size=1, max_size=30))
        elif kind == filetree.HARDLINK:
            if not files:
                continue
            e.target = draw(st.sampled_from(files))
        out.append(e)
    return out


def blob_of(entries: list[Entry]) -> bytes:
    return b"".join(e.encode() for e in entries)


def cut(blob: bytes, points: list[int]) -> list[bytes]:
    at = sorted({p % (len(blob) + 1) for p in points})
    edges = [0, *at, len(blob)]
    return [blob[a:b] for a, b in itertools.pairwise(edges)]


@FUZZ
@given(trees(), st.lists(st.integers(0, 10**6), max_size=5))
def test_tree_round_trip_cut_anywhere(entries: list[Entry], points: list[int]) -> None:
    blob = blob_of(entries)
    got = list(parse_entries(cut(blob, points), "t"))
    assert got == entries


def parse_all(chunks: list[bytes]) -> list[Entry]:
    try:
        return list(parse_entries(chunks, "t"))
    except IntegrityError:
        return []


@FUZZ
@given(st.binary(max_size=600))
def test_fuzz_tree_random_bytes(blob: bytes) -> None:
    parse_all([blob])


@FUZZ
@given(trees(), st.data())
def test_fuzz_tree_mutated(entries: list[Entry], data: st.DataObject) -> None:
    blob = bytearray(blob_of(entries))
    if not blob:
        return
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] = data.draw(st.integers(0, 255))
    keep = data.draw(st.integers(0, len(blob)))
    for e in parse_all([bytes(blob[:keep])]):
        assert filetree.check_path(e.path)
        assert e.type in filetree.TYPE_NAMES
        if e.type == filetree.REGULAR:
            assert sum(p.length for p in e.pieces) == e.size
        else:
            assert not e.pieces


def test_damage_is_named() -> None:
    e = Entry(b"a", filetree.REGULAR, size=3, pieces=[Piece(bytes(32), 0, 3)])
    blob = bytearray(e.encode())
    blob[4] = 99  # type
    with pytest.raises(IntegrityError, match="invalid type"):
        list(parse_entries([bytes(blob)], "img"))
    with pytest.raises(IntegrityError, match="ends inside an entry"):
        list(parse_entries([e.encode()[:-1]], "img"))
    orphan = Entry(b"no/parent", filetree.FOLDER)
    with pytest.raises(IntegrityError, match="before its folder"):
        list(parse_entries([orphan.encode()], "img"))
    link = Entry(b"l", filetree.HARDLINK, target=b"missing")
    with pytest.raises(IntegrityError, match="not saved before"):
        list(parse_entries([link.encode()], "img"))
    huge = (2**31).to_bytes(4, "little") + bytes(ENTRY.size)
    with pytest.raises(IntegrityError, match="impossible length"):
        list(parse_entries([huge], "img"))


# -- the file image's manifest fields, through a real location ---------------------------------


@pytest.fixture
def location(tmp_path: Path) -> Repository:
    return Repository.open(str(tmp_path / "repo"), create=True)


def file_body(repo: Repository) -> dict[str, Any]:
    data = os.urandom(5000)
    digest = repo.hash(data)
    repo.put_chunk(digest, data, 3)
    tree = TreeWriter(repo, 3)
    tree.add(Entry(b"d", filetree.FOLDER))
    tree.add(Entry(b"d/f", filetree.REGULAR, size=100, pieces=[Piece(digest, 10, 100)]))
    return {
        "name": "f",
        "kind": "files",
        "created": "2026-12-02T00:00:00Z",
        "sources": [{"spec": "/dev/x", "place": "", "key": "fs:1"}],
        "tree": tree.finish(),
        "files": 1,
        "file_bytes": 100,
        "skipped": [],
    }


def test_file_image_lists_with_its_file_count(location: Repository) -> None:
    body = file_body(location)
    location.write_manifest("f", body, version=filetree.FILE_MANIFEST_VERSION)
    info = image_info(location, "f", location.read_manifest("f"))
    assert (info.kind, info.files, info.data_size) == ("files", 1, 100)
    assert info.stored_size > 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=70),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@FUZZ
@given(st.data())
def test_fuzz_file_image_fields(location: Repository, data: st.DataObject) -> None:
    body = file_body(location)
    key = data.draw(st.sampled_from(["tree", "files", "file_bytes", "sources", "skipped"]))
    body[key] = data.draw(json_values)
    with contextlib.suppress(RecoveryError):
        image_info(location, "f", body)


def test_manifest_version_must_match_its_kind(location: Repository) -> None:
    body = file_body(location)
    location.write_manifest("wrong", body, version=1)
    with pytest.raises(IntegrityError, match="does not match its kind"):
        location.read_manifest("wrong")


# -- excludes, includes, presets ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "folder", "ci", "out"),
    [
        ("*.tmp", "/a/b/x.tmp", False, False, True),
        ("*.tmp", "/a/b/x.TMP", False, False, False),
        ("*.tmp", "/a/b/x.TMP", False, True, True),
        ("node_modules/", "/p/node_modules", True, False, True),
        ("node_modules/", "/p/node_modules", False, False, False),
        ("/Users/*/AppData/Local/Temp", "/Users/al/AppData/Local/Temp", True, False, True),
        ("/Users/*/AppData/Local/Temp", "/x/Users/al/AppData/Local/Temp", True, False, False),
        ("/home/**/cache", "/home/a/b/c/cache", True, False, True),
        ("/home/**/cache", "/home/cache", True, False, True),
        ("docs/*.md", "/x/docs/a.md", False, False, True),
        ("docs/*.md", "/x/docs/sub/a.md", False, False, False),
        ("**/*.bak", "/a.bak", False, False, True),
        ("[ab].txt", "/q/b.txt", False, False, True),
        ("?.txt", "/q/bb.txt", False, False, False),
    ],
)
def test_exclude_patterns(pattern: str, path: str, folder: bool, ci: bool, out: bool) -> None:
    assert Excludes([pattern], ci).excluded(path, folder) is out


def test_includes_walk_towards_chosen_folders() -> None:
    inc = Includes(["/Users/*/Documents"], case_insensitive=True)
    assert inc.state("/Users") == "towards"
    assert inc.state("/users/alice") == "towards"
    assert inc.state("/Users/alice/documents/x.txt") == "inside"
    assert inc.state("/Windows") == "outside"
    assert Includes(["/"], False).state("/anything/at/all") == "inside"


def test_presets_recognise_the_system() -> None:
    win = user_data_preset({"Windows", "Users", "pagefile.sys"})
    assert win is not None and win.system == "windows"
    assert "/Users/*/Documents" in win.include and "/pagefile.sys" in win.exclude
    lin = user_data_preset({"etc", "home", "usr"})
    assert lin is not None and lin.include == ("/home", "/root", "/etc")
    assert user_data_preset({"photos"}) is None


def test_a_kept_record_with_a_new_access_time_is_what_encoding_gives() -> None:
    e = Entry(b"docs/a.txt", 1, mode=0o100644, size=5, mtime_ns=7, atime_ns=8, ctime_ns=9)
    e.pieces = [Piece(bytes(range(32)), 0, 5)]
    folder = Entry(b"docs", 2, mode=0o40755)
    _, kept = parse_entries([folder.encode() + e.encode()], "t", keep_raw=True)
    assert kept.raw == e.encode()
    kept.set_atime(123456789)
    e.atime_ns = 123456789
    assert kept.raw == e.encode() == kept.encode()
