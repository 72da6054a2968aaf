"""The live ISO boots in each mode, runs the TUI on tty1, and restores a disk inside itself.

Each mode boots once (the module-scoped ``machine`` fixture); the tests below run in that boot in
file order. Screenshots of tty1 go to build/boot-test/tty1-MODE.png, timings to timings.json.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.boot.conftest import ARTIFACTS, BOOT_TIMEOUT
from tests.boot.qemu import Machine

EFI_GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"

# What tty1 shows, as text: whether the TUI's lock is held, then the screen (/dev/vcs1 has no
# line breaks, so fold it at the console's width). The lock is looked up in /proc/locks, never
# taken: taking it, even for a moment, could make the TUI starting on tty1 refuse to run.
TTY1 = (
    "ino=$(stat -c %i /run/recovery-tui.lock 2>/dev/null); "
    'if [ -n "$ino" ] && grep -q ":$ino " /proc/locks; then echo LOCK=held; '
    "else echo LOCK=free; fi; "
    "fold -w \"$(stty -F /dev/tty1 size | cut -d' ' -f2)\" /dev/vcs1; echo"
)


def _tui_drawn(screen: str) -> bool:
    rows = [r for r in screen.splitlines() if r.strip()]
    return (
        bool(rows)
        and "recovery" in rows[0]
        and len(rows) >= 5
        and "Traceback" not in screen
        and "usage: recovery" not in screen
        and "login:" not in screen
    )


def _seconds(span: str) -> float:
    """systemd's time spans: "1min 2.345s", "523ms"."""
    unit = {"min": 60.0, "s": 1.0, "ms": 0.001}
    return round(sum(float(n) * unit[u] for n, u in re.findall(r"([\d.]+)(min|ms|s)", span)), 1)


@pytest.fixture(scope="session")
def iso_build_uuid(iso: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("iso") / "live-uuid"
    subprocess.run(
        ["xorriso", "-osirrox", "on", "-indev", str(iso),
         "-extract", "/.disk/live-uuid-generic", str(out)],
        check=True, capture_output=True,
    )  # fmt: skip
    return out.read_text().strip()


def test_tui_runs_on_tty1(machine: Machine, timings: dict[str, dict[str, float]]) -> None:
    serial = machine.serial
    assert serial is not None
    screen = ""
    deadline = time.monotonic() + BOOT_TIMEOUT
    while time.monotonic() < deadline:
        rc, out = serial.run(TTY1, timeout=120)
        lock, _, screen = out.partition("\n")
        if lock == "LOCK=held" and _tui_drawn(screen):
            break
        time.sleep(1)
    else:
        pytest.fail(f"no TUI on tty1 after {BOOT_TIMEOUT:.0f} s; tty1 shows:\n{screen}")
    timings[machine.mode.name]["tui_on_tty1_s"] = round(machine.elapsed(), 1)
    # Let the first disk scan land before the screenshot, so it shows the real first screen.
    time.sleep(3)
    machine.screenshot(ARTIFACTS / f"tty1-{machine.mode.name}.png")
    _, out = serial.run(TTY1)
    (ARTIFACTS / f"tty1-{machine.mode.name}.txt").write_text(out)

    # Only one TUI drives the disks: a second one, started here, is refused with a reason.
    rc, out = serial.run("recovery 2>&1 </dev/null")
    assert rc == 75, out
    assert "already running on /dev/tty1" in out


def test_firmware_and_medium(
    machine: Machine, iso_build_uuid: str, timings: dict[str, dict[str, float]]
) -> None:
    serial = machine.serial
    assert serial is not None
    # Where the boot time went (firmware and loader are not counted by a BIOS machine).
    rc, out = serial.run("systemd-analyze time 2>&1 | head -1")
    for span, part in re.findall(r"((?:[\d.]+(?:min|ms|s) ?)+) \((\w+)\)", out):
        timings[machine.mode.name][f"systemd_analyze_{part}_s"] = _seconds(span)
    rc, _ = serial.run("test -d /sys/firmware/efi")
    assert (rc == 0) == machine.mode.firmware.startswith("uefi")
    if machine.mode.firmware == "uefi-secureboot":
        rc, out = serial.run(f"od -An -tu1 /sys/firmware/efi/efivars/SecureBoot-{EFI_GLOBAL}")
        assert rc == 0 and out.split()[-1] == "1", f"Secure Boot is not on: {out!r}"

    # The system runs from this build's medium: the UUID pinned in the initrd matched the one on
    # the medium, and our layer is stacked over the Debian one.
    rc, out = serial.run("cat /etc/recovery-release")
    assert rc == 0, out
    release = dict(line.split("=", 1) for line in out.split())
    assert release["BUILD_UUID"] == iso_build_uuid
    rc, out = serial.run("findmnt -n -o SOURCE,FSTYPE /run/live/medium")
    assert rc == 0, out
    source, fstype = out.split()
    assert fstype == "iso9660"
    assert source.startswith("/dev/sr" if machine.mode.medium == "cd" else "/dev/sd"), out
    rc, out = serial.run("/opt/recovery/recovery --version")
    assert rc == 0 and out.startswith("recovery "), out


def test_restore_inside_the_live_system(
    machine: Machine, source_files: dict[str, bytes], timings: dict[str, dict[str, float]]
) -> None:
    """Back up the source disk into a repository in RAM, verify the image, restore it onto the
    empty target disk, power off, and read the target's file system from the host. Runs in one
    mode: the slow part of a boot test is the boot, and one restore shows that the binary does
    real work on a kernel that has what this machine's lacks."""
    if machine.mode.name != "bios-cd":
        pytest.skip("the restore runs in the bios-cd boot only")
    serial = machine.serial
    assert serial is not None
    rc, out = serial.run("recovery --help")
    commands = out.split()
    if "backup" not in commands or "restore" not in commands:
        pytest.skip("the binary has no backup/restore commands yet")

    rc, out = serial.run(
        "src=$(readlink -f /dev/disk/by-id/virtio-recsrc); "
        "tgt=$(readlink -f /dev/disk/by-id/virtio-rectgt); echo $src $tgt"
    )
    assert rc == 0, out
    src, tgt = out.split()
    started = time.monotonic()
    rc, out = serial.run(
        f"recovery backup {src} --to /tmp/repo --name boot-test --yes 2>&1", timeout=900
    )
    assert rc == 0, out
    timings[machine.mode.name]["backup_s"] = round(time.monotonic() - started, 1)
    rc, out = serial.run("recovery verify /tmp/repo::boot-test 2>&1", timeout=900)
    assert rc == 0, out
    started = time.monotonic()
    rc, out = serial.run(f"recovery restore /tmp/repo::boot-test {tgt} --yes 2>&1", timeout=900)
    assert rc == 0, out
    timings[machine.mode.name]["restore_s"] = round(time.monotonic() - started, 1)

    assert machine.power_off() == 0
    target = next(d.path for d in machine.disks if d.serial == "rectgt")
    source = next(d.path for d in machine.disks if d.serial == "recsrc")
    _check_restored(source, target, source_files)


def _partitions(image: Path) -> list[dict[str, object]]:
    r = subprocess.run(["sfdisk", "-J", str(image)], capture_output=True, text=True, check=True)
    table = json.loads(r.stdout)["partitiontable"]
    assert table["label"] == "gpt", table
    parts: list[dict[str, object]] = table["partitions"]
    return parts


def _check_restored(source: Path, target: Path, files: dict[str, bytes]) -> None:
    src_parts, tgt_parts = _partitions(source), _partitions(target)
    assert [(p["start"], p["size"], p["type"]) for p in tgt_parts] == [
        (p["start"], p["size"], p["type"]) for p in src_parts
    ]
    start, size = int(tgt_parts[0]["start"]) * 512, int(tgt_parts[0]["size"]) * 512  # type: ignore[call-overload]
    part = target.parent / "restored-partition.img"
    with open(target, "rb") as f, open(part, "wb") as out:
        f.seek(start)
        out.write(f.read(size))
    fsck = subprocess.run(["e2fsck", "-fn", str(part)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    for name, data in files.items():
        r = subprocess.run(["debugfs", "-R", f"cat {name}", str(part)], capture_output=True)
        assert r.stdout == data, f"{name}: {len(r.stdout)} bytes read back, {len(data)} expected"
