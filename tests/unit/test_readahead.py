"""The read-ahead child of a file backup (recovery/devices/readahead.py): which folders it
enters, that it is stopped and reaped, that it never starts beside other threads, and that a
folder backup through the real command line (which starts it) saves what it should.

The child forks only from a single-threaded process, so each check runs a small script in a
new Python process; the child reports each folder it is about to enter through the
``excluded`` callable, written to a file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from recovery.devices import readahead

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import os, sys
from recovery.devices import readahead
tree, log = sys.argv[1], sys.argv[2]
def excluded(path, is_folder):
    with open(log, "a") as f:
        f.write(path + "\\n")
    return path.endswith("/cache")
h = readahead.start([tree], excluded)
assert h.pid is not None
_, status = os.waitpid(h.pid, 0)
print(os.waitstatus_to_exitcode(status))
h.pid = None
"""


def _tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    for d in ("a/b/c", "a/cache/deep", "z", "y/x"):
        (tree / d).mkdir(parents=True)
    for f in ("a/one", "a/b/c/two", "a/cache/deep/three", "z/four"):
        (tree / f).write_text(f)
    os.symlink("../z", tree / "a" / "to-z")  # a link to a folder: never followed
    return tree


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_the_child_enters_every_folder_but_excluded_ones_and_links(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    log = tmp_path / "asked"
    r = _run(SCRIPT, str(tree), str(log))
    assert r.stdout.strip() == "0"  # the child ran to its end and exited cleanly
    asked = log.read_text().splitlines()
    rel = [p[len(str(tree)) :] for p in asked]
    # Every folder is asked about once as its parent is listed, the excluded one too (its
    # contents never); the root is listed in the walk's order reversed (the child reads from
    # the far end of the tree), and after it several threads read folders at once.
    assert rel[:3] == ["/z", "/y", "/a"]
    assert sorted(rel) == ["/a", "/a/b", "/a/b/c", "/a/cache", "/y", "/y/x", "/z"]


def test_stop_ends_and_reaps_the_child(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    script = """
import os, sys, time
from recovery.devices import readahead
h = readahead.start([sys.argv[1]], lambda p, d: time.sleep(0.2) or False)
pid = h.pid
h.stop()
h.stop()  # twice is fine
try:
    os.waitpid(pid, 0)
    print("not reaped")
except ChildProcessError:
    print("reaped")
"""
    assert _run(script, str(tree)).stdout.strip() == "reaped"


def test_nothing_is_forked_beside_other_threads(tmp_path: Path) -> None:
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert readahead.start([str(tmp_path)]).pid is None
    finally:
        stop.set()
        t.join()
    assert readahead.start([]).pid is None


def test_a_folder_backup_through_the_command_line(tmp_path: Path) -> None:
    """`recovery backup --files FOLDER` starts the read-ahead before the engine loads: the
    image holds what the walk chose, with the excludes and the location inside the source
    left out, the first time and (unchanged, every file from the files cache) the second."""
    tree = _tree(tmp_path)
    repo = tree / "backups"  # the location inside the source

    def backup(name: str) -> dict[str, object]:
        r = subprocess.run(
            [sys.executable, "-m", "recovery", "backup", "--files", str(tree), "--to",
             str(repo), "--exclude", "cache/", "--name", name, "--json"],
            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        result: dict[str, object] = json.loads(r.stdout[r.stdout.index("{\n") :])
        return result

    first = backup("one")
    assert first["files"] == 3  # one, two, four: three is in the excluded cache/
    second = backup("two")
    assert second["files"] == 3 and second["reused_files"] == 3
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, "-m", "recovery", "extract", f"{repo}::two", "/", "--to", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    got = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    inside = str(tree).lstrip("/")
    assert f"{inside}/a/b/c/two" in got and f"{inside}/z/four" in got
    assert not [p for p in got if "/cache" in p or "/backups" in p]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs")
def test_the_child_does_not_cross_into_another_file_system(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    other = tree / "a" / "mnt"
    other.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "none", str(other)], check=True)
    try:
        (other / "inner").mkdir()
        log = tmp_path / "asked"
        _run(SCRIPT, str(tree), str(log))
        asked = [p[len(str(tree)) :] for p in log.read_text().splitlines()]
        assert "/a/mnt" not in asked and "/a/mnt/inner" not in asked
    finally:
        subprocess.run(["umount", str(other)], check=True)
