"""The live ISO boots in each mode, runs the TUI on tty1, and restores a disk inside itself.

Each mode boots once (the module-scoped ``machine`` fixture); the tests below run in that boot in
file order. Screenshots of tty1 go to build/boot-test/tty1-MODE.png, timings to timings.json.
"""

from __future__ import annotations

import base64
import json
import os
import re
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.boot.conftest import ARTIFACTS, BOOT_TIMEOUT, REPO
from tests.boot.qemu import Machine
from tests.servers import SSH_PASSPHRASE, SshServer, ssh_server  # noqa: F401 (a fixture)

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


# The network (issue 14) and the console's colours (issue 12) ------------------------------------

QEMU_GUEST_ADDRESS = "10.0.2.15"
"""What QEMU's user network's DHCP server gives the first (only) guest; its DNS is 10.0.2.3."""


def _tty1_screen(machine: Machine) -> str:
    assert machine.serial is not None
    _, out = machine.serial.run(TTY1)
    return out.partition("\n")[2]


def _wait_tty1(machine: Machine, found: Callable[[str], bool], what: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = _tty1_screen(machine)
        if found(screen):
            return screen
        time.sleep(1)
    pytest.fail(f"tty1 did not show {what} in {timeout:.0f} s; it shows:\n{screen}")


def _press(machine: Machine, *keys: str) -> None:
    """Keys typed on the machine's keyboard (QEMU qcodes: "n", "esc", "down", ...), so on tty1."""
    assert machine.qmp is not None
    for key in keys:
        machine.qmp.execute("send-key", keys=[{"type": "qcode", "data": key}])
        time.sleep(0.3)


def test_network_address_in_the_tui(machine: Machine, timings: dict[str, dict[str, float]]) -> None:
    """Every wired interface gets an address by DHCP at boot without holding the TUI back, the
    TUI's title bar shows it when it comes, and DNS follows DHCP."""
    serial = machine.serial
    assert serial is not None
    screen = _wait_tty1(
        machine,
        lambda s: QEMU_GUEST_ADDRESS in (s.splitlines() or [""])[0],
        f"{QEMU_GUEST_ADDRESS} in the title bar",
        BOOT_TIMEOUT,
    )
    timings[machine.mode.name]["address_in_tui_s"] = round(machine.elapsed(), 1)
    assert "net: " + QEMU_GUEST_ADDRESS in screen.splitlines()[0]
    rc, out = serial.run("ip -4 -o address show scope global")
    assert rc == 0 and f"inet {QEMU_GUEST_ADDRESS}/24" in out, out
    # DNS follows the address: recovery-dns.path sees networkd's lease state change, and its
    # service writes the file a moment later (seen once still holding the placeholder when the
    # title bar already had the address).
    deadline = time.monotonic() + 30
    while True:
        rc, out = serial.run("cat /etc/resolv.conf")
        if "nameserver 10.0.2.3" in out or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert "nameserver 10.0.2.3" in out, out
    # Nothing waited for the network: the TUI came before (or with) the address.
    rc, out = serial.run("systemctl is-enabled systemd-networkd-wait-online.service")
    assert out.strip() == "masked", out
    # What tty1's login waited for, kept to see what the network costs the way to the TUI.
    _, out = serial.run("systemd-analyze critical-chain getty@tty1.service 2>&1")
    (ARTIFACTS / f"{machine.mode.name}-critical-chain.txt").write_text(out)


def test_network_screen_and_selection_contrast(machine: Machine) -> None:
    """The Network screen lists the interface with its address; on the Linux console's 16
    colours the selected rows (the home screen's highlighted task, the Network screen's focused
    table row) read clearly: on every text row of tty1's picture, the text colour against the
    background colour has a contrast ratio of at least 4.5 (WCAG AA)."""
    home = _wait_tty1(machine, lambda s: "System Backup" in s, "the home screen", 120)
    assert "Network" in home
    picture = ARTIFACTS / f"tty1-{machine.mode.name}-home.png"
    machine.screenshot(picture)
    _check_contrast(picture, home)

    _press(machine, "n")
    screen = _wait_tty1(
        machine,
        lambda s: "recovery > Network" in s and f"{QEMU_GUEST_ADDRESS}/24" in s,
        "the Network screen with the address",
        120,
    )
    time.sleep(1)
    picture = ARTIFACTS / f"tty1-{machine.mode.name}-network.png"
    machine.screenshot(picture)
    (ARTIFACTS / f"tty1-{machine.mode.name}-network.txt").write_text(screen)
    _check_contrast(picture, screen)
    _press(machine, "esc")
    _wait_tty1(machine, lambda s: "System Backup" in s, "the home screen again", 120)


def test_backup_to_sftp_on_the_host(machine: Machine, ssh_server: SshServer) -> None:  # noqa: F811
    """A backup from inside the live system to an SSH server on the host, over QEMU's user
    network (the guest reaches the host's 127.0.0.1 as 10.0.2.2); the host then lists and
    verifies the image. The key's passphrase goes in the environment, never on a command line."""
    if machine.mode.name != "bios-cd":
        pytest.skip("the SFTP backup runs in the bios-cd boot only")
    serial = machine.serial
    assert serial is not None
    key = base64.b64encode(ssh_server.identity.read_bytes()).decode()
    rc, out = serial.run(f"echo {key} | base64 -d > /tmp/id && chmod 600 /tmp/id")
    assert rc == 0, out
    folder = ssh_server.root / "from-the-live-system"
    rc, out = serial.run(
        "src=$(readlink -f /dev/disk/by-id/virtio-recsrc); "
        f"RECOVERY_PASSWORD='{SSH_PASSPHRASE}' recovery backup $src "
        f"--to sftp://root@10.0.2.2:{ssh_server.port}{folder} --identity /tmp/id "
        "--accept-new-host-key --name over-the-network --yes 2>&1",
        timeout=900,
    )
    assert rc == 0, out
    address = ssh_server.address("from-the-live-system")
    env = {**os.environ, **ssh_server.env(), "RECOVERY_ACCEPT_NEW_HOST_KEY": "1"}
    host = [sys.executable, "-m", "recovery"]
    listed = subprocess.run(
        [*host, "images", address, "--identity", str(ssh_server.identity)],
        capture_output=True, text=True, env=env, cwd=REPO,
    )  # fmt: skip
    assert listed.returncode == 0 and "over-the-network" in listed.stdout, listed.stderr
    checked = subprocess.run(
        [*host, "verify", f"{address}::over-the-network", "--identity", str(ssh_server.identity)],
        capture_output=True, text=True, env=env, cwd=REPO,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


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


def _check_contrast(picture: Path, screen: str) -> None:
    width, height, pixels = _read_png(picture.read_bytes())
    rows = max(1, len(screen.splitlines()))
    cell = height // rows
    worst: list[str] = []
    for row in range(height // cell):
        counts: dict[tuple[int, int, int], int] = {}
        for y in range(row * cell, (row + 1) * cell):
            line = pixels[y]
            for x in range(width):
                counts[line[x]] = counts.get(line[x], 0) + 1
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])
        if len(ranked) < 2 or ranked[1][1] < width // 8:
            continue  # an empty row: nothing to read
        (background, _), (text, _) = ranked[0], ranked[1]
        ratio = _contrast(background, text)
        if ratio < 4.5:
            line = screen.splitlines()[row] if row < len(screen.splitlines()) else ""
            worst.append(f"row {row} ({line.strip()[:40]!r}): {text} on {background}, {ratio:.1f}")
    assert not worst, f"{picture.name}: hard to read on the console:\n" + "\n".join(worst)


def _contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    def luminance(c: tuple[int, int, int]) -> float:
        def channel(v: int) -> float:
            s = v / 255
            return s / 12.92 if s <= 0.03928 else ((s + 0.055) / 1.055) ** 2.4

        r, g, b_ = (channel(v) for v in c)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b_

    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def _read_png(data: bytes) -> tuple[int, int, list[list[tuple[int, int, int]]]]:
    """An 8-bit RGB or RGBA PNG (what QEMU's screendump writes) as rows of (r, g, b)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6) and header[12] == 0, "not 8-bit RGB(A), or interlaced"
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    previous = bytearray(stride)
    rows = []
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up = previous[i]
            corner = previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + pred) & 0xFF
        rows.append([(line[i], line[i + 1], line[i + 2]) for i in range(0, stride, bpp)])
        previous = line
    return width, height, rows
