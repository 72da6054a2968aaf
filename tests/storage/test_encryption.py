"""Encrypted backup locations through the real CLI on loop devices (issue 19, "Done when")."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from tests import loopdev
from tests.storage.disks import MiB, ext4_digest, mounted, run_recovery

PASS = "correct horse battery staple"
SECRET_NAME = "quarterly-ACME-7731.txt"
SECRET = b"ACME-7731 confidential figures: revenue 4.2M, margin 17%\n" * 4000


def env(passphrase: str | None, **more: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("RECOVERY_")}
    if passphrase is not None:
        e["RECOVERY_PASSPHRASE"] = passphrase
    e.update(more)
    return e


def one_line(r) -> str:  # type: ignore[no-untyped-def]
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def error_line(r) -> str:  # type: ignore[no-untyped-def]
    """The one error line of a command that failed after showing its plan (which a restore
    prints before it starts, as it does on a terminal before asking)."""
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("recovery: ")]
    assert errors == [lines[-1]], r.stderr
    return lines[-1]


def location_bytes(repo: Path) -> bytes:
    out = bytearray()
    for p in sorted(repo.rglob("*")):
        out += str(p.relative_to(repo)).encode()
        if p.is_file():
            out += p.read_bytes()
    return bytes(out)


def small_disk(loop) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    dev = loop(96 * MiB)
    (part,) = loopdev.partition(dev, "label: gpt\ntype=linux, name=root\n")
    loopdev.mkfs(part, "ext4", "-L", "root")
    with mounted(part) as m:
        (m / "docs").mkdir()
        (m / "docs" / SECRET_NAME).write_bytes(SECRET)
        (m / "random.bin").write_bytes(os.urandom(3 * MiB))
    loopdev.settle(dev)
    return dev, part


def test_encrypted_location_end_to_end(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src, part = small_disk(loop)
    want = ext4_digest(part)
    repo = tmp_path / "enc"
    run_recovery(
        "backup", src, "--to", str(repo), "--encrypt", "--name", "alice-laptop", env=env(PASS)
    )
    at_rest = location_bytes(repo)
    for leak in (b"ACME-7731", SECRET_NAME.encode(), b"alice-laptop", src.encode(), b"root"):
        assert leak not in at_rest, leak
    assert hashlib.sha256(SECRET).hexdigest().encode() not in at_rest
    for needle in ("ACME-7731", SECRET_NAME, "alice-laptop"):  # the words: grep -r
        found = subprocess.run(["grep", "-r", "-a", "-l", "-F", needle, str(repo)], check=False)
        assert found.returncode == 1, needle

    assert "alice-laptop" in run_recovery("images", str(repo), env=env(PASS)).stdout
    assert "intact" in run_recovery("verify", f"{repo}::alice-laptop", env=env(PASS)).stdout

    target = loop(96 * MiB)
    run_recovery("restore", f"{repo}::alice-laptop", target, "--yes", env=env(PASS))
    (tpart,) = loopdev.partition_paths(target)
    loopdev.run("e2fsck", "-fn", tpart)
    assert ext4_digest(tpart) == want

    # Open: a file read through the read-only view has the original's bytes.
    view = tmp_path / "view"
    view.mkdir()
    run_recovery("open", f"{repo}::alice-laptop", str(view), env=env(PASS))
    try:
        assert (view / "p1" / "docs" / SECRET_NAME).read_bytes() == SECRET
    finally:
        run_recovery("close", str(view))
    assert not any(view.iterdir())

    # A second image of the same disk stores almost nothing new: dedup works under a key.
    before = sum(p.stat().st_size for p in repo.rglob("*") if p.is_file())
    run_recovery("backup", src, "--to", str(repo), "--name", "again", env=env(PASS))
    after = sum(p.stat().st_size for p in repo.rglob("*") if p.is_file())
    assert after - before < 64 * 1024, after - before

    # Changing the passphrase rewrites only the header; the old one stops working.
    files = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file() and p.name != "lock"}
    r = run_recovery(
        "passphrase", str(repo), env=env(PASS, RECOVERY_NEW_PASSPHRASE="new passphrase")
    )
    assert "changed" in r.stdout
    changed = [p.name for p, data in files.items() if p.read_bytes() != data]
    assert changed == ["recovery-repo"]
    assert "wrong passphrase" in one_line(
        run_recovery("images", str(repo), check=False, env=env(PASS))
    )
    assert "alice-laptop" in run_recovery("images", str(repo), env=env("new passphrase")).stdout

    r = run_recovery("remove", f"{repo}::again", "--yes", env=env("new passphrase"))
    assert "Removed" in r.stdout


def target_digest(target: str) -> str:
    """SHA-256 of every byte of the target disk."""
    h = hashlib.sha256()
    with open(target, "rb") as f:
        while block := f.read(4 * MiB):
            h.update(block)
    return h.hexdigest()


def flip_byte(path: Path, offset: int) -> None:
    blob = bytearray(path.read_bytes())
    blob[offset] ^= 1
    path.write_bytes(bytes(blob))


def largest_chunk(repo: Path) -> Path:
    """A data chunk (the 3 MiB of random data), not a map chunk, and not the first the
    restore would write: the table and boot area come first."""
    chunks = (p for p in (repo / "chunks").rglob("*") if p.is_file())
    return max(chunks, key=os.path.getsize)


def test_refusals_write_nothing_to_the_target(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src, _ = small_disk(loop)
    repo = tmp_path / "enc"
    run_recovery("backup", src, "--to", str(repo), "--encrypt", "--name", "img", env=env(PASS))
    target = loop(96 * MiB)
    with open(target, "r+b") as f:
        f.write(b"\xa5" * MiB)
    before = target_digest(target)

    wrong = run_recovery("restore", f"{repo}::img", target, "--yes", check=False, env=env("nope"))
    assert "wrong passphrase" in one_line(wrong)
    assert PASS not in wrong.stderr + wrong.stdout
    missing = run_recovery("restore", f"{repo}::img", target, "--yes", check=False, env=env(None))
    assert "RECOVERY_PASSPHRASE" in one_line(missing)
    assert target_digest(target) == before

    # A flipped byte in the manifest: one line naming the damage, nothing written.
    (manifest,) = (repo / "images").glob("*.image")
    flip_byte(manifest, 40)
    r = run_recovery("restore", f"{repo}::img", target, "--yes", check=False, env=env(PASS))
    assert "damaged" in one_line(r)
    assert target_digest(target) == before
    flip_byte(manifest, 40)

    # A flipped byte in a data chunk: every chunk is authenticated before the first write, so
    # one line names it and not a byte of the target changed (not even the partition table).
    victim = largest_chunk(repo)
    flip_byte(victim, victim.stat().st_size // 2)
    r = run_recovery("restore", f"{repo}::img", target, "--yes", check=False, env=env(PASS))
    line = error_line(r)
    assert victim.name in line and "authentication" in line and "nothing was written" in line
    assert target_digest(target) == before
    r = run_recovery("verify", f"{repo}::img", check=False, env=env(PASS))
    assert r.returncode != 0
    assert victim.name in r.stdout + r.stderr
    assert "authentication" in r.stdout + r.stderr

    # Repaired, the same image restores.
    flip_byte(victim, victim.stat().st_size // 2)
    run_recovery("restore", f"{repo}::img", target, "--yes", env=env(PASS))
    assert target_digest(target) != before


def test_damage_in_a_plain_location(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Without encryption a damaged manifest still stops the restore before any write; a
    damaged chunk is found as it is about to be written (a full check first would decompress
    and hash the whole image twice): one line, a non-zero exit, and the message says the
    target is incomplete (docs/FORMAT.md, "Damage and how it is detected")."""
    src, _ = small_disk(loop)
    repo = tmp_path / "plain"
    run_recovery("backup", src, "--to", str(repo), "--name", "img")
    target = loop(96 * MiB)
    before = target_digest(target)
    manifest = repo / "images" / "img.image"
    flip_byte(manifest, 40)
    r = run_recovery("restore", f"{repo}::img", target, "--yes", check=False)
    assert "damaged" in one_line(r)
    assert target_digest(target) == before
    flip_byte(manifest, 40)

    victim = largest_chunk(repo)
    flip_byte(victim, victim.stat().st_size // 2)
    r = run_recovery("restore", f"{repo}::img", target, "--yes", check=False)
    line = error_line(r)
    assert victim.name in line and "incomplete" in line
