"""A real bootable Linux disk as an image file, and a QEMU machine that boots a disk to its login.

Used by the boot tier (tests/boot/test_bootable_disk.py: ``open`` and ``export`` of its image
boot) and meant for any test that must show a restored or converted disk still boots (issue 15,
restores onto a smaller disk). The system on it is the live ISO's own Debian: its kernel, its
initrd (which boots an ordinary root file system when ``boot=live`` is not given) and the Debian
layer of its root file system (``live/filesystem.squashfs``; the recovery layer with the TUI and
the serial autologin is left out). Nothing here mounts anything or needs a loop device.

API
---

``bootable_disk(iso=None, *, size=DEFAULT_SIZE, spread=False) -> BootableDisk``
    Builds the disk once and caches it under ``build/bootable-disk/KEY/disk.img``, KEY a hash of
    the ISO's bytes, this module's source and the arguments; later calls (and later runs) return
    the cached file in about 2 s (hashing the ISO). First build on a busy machine: ~30 s (~2 min
    with ``spread`` at 1.5 GiB). ``iso`` defaults to ``$RECOVERY_ISO`` or
    ``<repo>/dist/recovery.iso`` (made by ``make iso``; read, never written). The file is
    shared: attach it read-only, boot it with ``snapshot=True``, or copy it
    (``cp --sparse=always``) before anything writes to it.

    The disk (GPT, 512-byte sectors, ``size`` bytes, at least 768 MiB):

    ========  ==========  ========================================================================
    number    size        what
    ========  ==========  ========================================================================
    1         64 MiB      EFI system partition, FAT32 (label ``EFI``): ``EFI/BOOT/BOOTX64.EFI``,
                          a GRUB image that finds the root by its UUID and reads
                          ``/boot/grub/grub.cfg`` from it (so a restore that changes the root's
                          UUID makes it unbootable, as on a real system)
    2         the rest    ext4 root (label ``bootroot``): the Debian system (~480 MB used),
                          ``/boot/vmlinuz`` and ``/boot/initrd.img``, fstab by UUID, hostname
                          ``bootdisk``, root without a password, ``/etc/bootable-disk`` holding
                          :attr:`BootableDisk.marker`; no fsck pass at boot
    ========  ==========  ========================================================================

    The kernel command line has ``console=ttyS0,115200n8``: systemd starts a getty there and the
    serial line shows ``bootdisk login:``. Typing ``root`` gives a shell (:func:`login`).

    ``spread=True`` adds files that spread over the whole root partition: the free space is filled
    with 8 MiB files of random bytes (``/var/filler/NNNN``, up to a margin of 2 % or 16 MiB), then
    every other one is deleted (the last one stays), so used blocks reach the partition's end
    with holes of old data between them (what a shrinking restore must move).
    :attr:`BootableDisk.files` maps each kept file's path to its SHA-256;
    :attr:`BootableDisk.used_bytes` is what the root file system holds.

``BootableDisk``
    ``path``, ``size``; ``esp`` and ``root`` (:class:`Partition`: ``number``, ``start`` and
    ``size`` in bytes); ``root_uuid``, ``esp_volume_id``, ``marker``, ``files``, ``used_bytes``.

``boot(disk, workdir, *, format="raw", snapshot=True, timeout=BOOT_TIMEOUT) -> Booted``
    A context manager: powers on a UEFI (OVMF) machine under TCG with ``disk`` (an image file in
    any QEMU format, or a block device such as a loop device or a restored target) as its only,
    bootable, virtio disk, and waits for ``login:`` on the serial line. ``snapshot`` is QEMU's
    ``-snapshot`` (the disk stays untouched, and a read-only file such as ``recovery open``'s
    ``DIR/disk.img`` boots). Yields a :class:`Booted` (``machine``: the :class:`Machine` of
    tests/boot/qemu.py; ``login_s``: seconds from power-on to ``login:``); kills QEMU on the way
    out and leaves ``serial.log`` and ``qemu.log`` in ``workdir``. A boot that does not reach the
    prompt raises TimeoutError with the serial line's last output. ~40-60 s on a quiet machine.

``login(machine)``
    Logs in as root on the serial line and turns echo off; afterwards ``machine.serial.run(cmd)``
    returns ``(status, output)`` of shell commands run in the booted system.

A test that restores this disk and boots the result::

    disk = bootable_disk(spread=True, size=1536 * MiB)
    src = loopdev.attach(disk.path, readonly=True)
    ... recovery backup, recovery restore onto a smaller loop device ...
    with boot(Path(target_dev), tmp_path / "vm", snapshot=True) as booted:
        login(booted.machine)
        status, out = booted.machine.serial.run("cat /etc/bootable-disk")
        assert out.strip() == disk.marker
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tests.boot.qemu import DISK_MODE, Disk, Machine

REPO = Path(__file__).resolve().parents[2]
ISO = Path(os.environ.get("RECOVERY_ISO", REPO / "dist" / "recovery.iso"))
CACHE = REPO / "build" / "bootable-disk"
MiB = 1024 * 1024
SECTOR = 512
DEFAULT_SIZE = 1024 * MiB
ESP_START = 1 * MiB
ESP_SIZE = 64 * MiB
ROOT_START = ESP_START + ESP_SIZE
FILLER_SIZE = 8 * MiB
HOSTNAME = "bootdisk"
# Power-on to login: under TCG ~40-60 s on a quiet machine, several minutes when the two cores
# are shared with other work; the limit is for the busy case.
BOOT_TIMEOUT = float(os.environ.get("RECOVERY_BOOT_TIMEOUT", "900"))
LOGIN = re.compile(rb"\b" + HOSTNAME.encode() + rb" login: ")
SHELL = re.compile(rb"root@" + HOSTNAME.encode() + rb":[^\r\n]*# ")
# Modules built into the GRUB image: no module directory exists on either partition.
GRUB_MODULES = (
    "part_gpt fat ext2 search search_fs_uuid normal configfile linux echo test serial terminal "
    "efi_gop all_video gzio sleep ls cat"
)


SERIAL_GETTY = """\
# tests/boot/bootable_disk.py: systemd's serial-getty@.service without its BindsTo= and After= on
# dev-ttyS0.device (a slow boot could time out waiting for it, and then no login prompt shows).
[Unit]
Description=Serial Getty on %I
After=systemd-user-sessions.service getty-pre.target
Before=getty.target
IgnoreOnIsolate=yes
Conflicts=rescue.service
Before=rescue.service

[Service]
ExecStart=-/sbin/agetty -o '-p -- \\\\u' --keep-baud 115200,57600,38400,9600 - $TERM
Type=idle
Restart=always
UtmpIdentifier=%I
StandardInput=tty
StandardOutput=tty
TTYPath=/dev/%I
TTYReset=yes
TTYVHangup=yes
IgnoreSIGPIPE=no
SendSIGHUP=yes

[Install]
WantedBy=getty.target
"""


@dataclass(frozen=True)
class Partition:
    number: int
    start: int
    """Bytes from the start of the disk."""
    size: int


@dataclass(frozen=True)
class BootableDisk:
    path: Path
    size: int
    esp: Partition
    root: Partition
    root_uuid: str
    esp_volume_id: str
    """The FAT volume serial number as ``XXXX-XXXX``."""
    marker: str
    """The content of /etc/bootable-disk (without the newline): tells one build from another."""
    used_bytes: int
    """Bytes in use in the root file system (blocks count), as ``dumpe2fs`` says."""
    files: dict[str, str] = field(default_factory=dict)
    """The kept filler files of a ``spread`` disk: path in the root file system -> SHA-256."""


@dataclass
class Booted:
    machine: Machine
    login_s: float
    """Seconds from power-on to ``login:`` on the serial line."""


def bootable_disk(
    iso: Path | None = None, *, size: int = DEFAULT_SIZE, spread: bool = False
) -> BootableDisk:
    """The cached disk for ``iso``, built first if needed (see the module's docstring)."""
    iso = iso or ISO
    if not iso.exists():
        raise FileNotFoundError(f"{iso} does not exist: run `make iso` first")
    if size < 768 * MiB or size % MiB:
        raise ValueError(f"size must be whole MiB, at least 768 MiB, not {size}")
    key = _cache_key(iso, size, spread)
    final = CACHE / key
    CACHE.mkdir(parents=True, exist_ok=True)
    # Two test processes may want the same disk at once: one builds, the other waits.
    with open(CACHE / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (final / "disk.json").exists():
            work = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=CACHE))
            try:
                _build(iso, work, key, size, spread)
                shutil.rmtree(final, ignore_errors=True)
                (work / "disk.img").rename(work.parent / f"{key}.img")
                final.mkdir()
                (work.parent / f"{key}.img").rename(final / "disk.img")
                (work / "disk.json").rename(final / "disk.json")  # last: marks the build complete
            finally:
                shutil.rmtree(work, ignore_errors=True)
            _prune(keep=final)
    return _load(final)


def _prune(keep: Path, count: int = 3) -> None:
    """Only the newest ``count`` builds stay (each a GiB or more, sparse): an ISO or fixture
    change makes a new key, and the old disks are dead weight."""
    builds = sorted(
        (p for p in CACHE.iterdir() if p.is_dir() and (p / "disk.json").exists()),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in builds[count:]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)
            (CACHE / f"{old.name}.lock").unlink(missing_ok=True)


def _cache_key(iso: Path, size: int, spread: bool) -> str:
    h = hashlib.sha256()
    with open(iso, "rb") as f:
        while block := f.read(8 * MiB):
            h.update(block)
    h.update(Path(__file__).read_bytes())
    h.update(f"{size} {spread}".encode())
    return h.hexdigest()[:16]


def _load(final: Path) -> BootableDisk:
    meta = json.loads((final / "disk.json").read_text())
    return BootableDisk(
        path=final / "disk.img",
        size=meta["size"],
        esp=Partition(**meta["esp"]),
        root=Partition(**meta["root"]),
        root_uuid=meta["root_uuid"],
        esp_volume_id=meta["esp_volume_id"],
        marker=meta["marker"],
        used_bytes=meta["used_bytes"],
        files=meta["files"],
    )


def _run(*cmd: str, input: str | None = None) -> str:
    r = subprocess.run(cmd, input=input, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def _build(iso: Path, work: Path, key: str, size: int, spread: bool) -> None:
    # Fixed identities derived from the key: a rebuild of the same inputs gives the same disk.
    ids = hashlib.sha256(key.encode()).hexdigest()
    root_uuid = str(uuid.UUID(ids[:32]))
    esp_serial = ids[32:40].upper()
    esp_volume_id = f"{esp_serial[:4]}-{esp_serial[4:]}"
    machine_id = ids[40:64] + ids[:8]
    marker = f"bootable-disk {key}"

    _run("xorriso", "-osirrox", "on", "-indev", str(iso),
         "-extract", "/live/vmlinuz", str(work / "vmlinuz"),
         "-extract", "/live/initrd.img", str(work / "initrd.img"),
         "-extract", "/live/filesystem.squashfs", str(work / "system.squashfs"))  # fmt: skip
    root = work / "root"
    _run("unsquashfs", "-q", "-n", "-d", str(root), str(work / "system.squashfs"))
    (work / "system.squashfs").unlink()
    _configure_system(root, work, root_uuid, machine_id, marker)

    root_size = size - ROOT_START - 1 * MiB  # the backup GPT's sectors at the end
    disk = work / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(size)
    _run("sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(disk), input=(
        "label: gpt\n"
        f"label-id: {uuid.UUID(ids[8:40])}\n"
        f"start={ESP_START // SECTOR}, size={ESP_SIZE // SECTOR}, type=uefi, name=EFI\n"
        f"start={ROOT_START // SECTOR}, size={root_size // SECTOR}, type=linux, name=root\n"
    ))  # fmt: skip

    esp = work / "esp.img"
    _run("mkfs.vfat", "-F", "32", "-n", "EFI", "-i", esp_serial, "-C", str(esp),
         str(ESP_SIZE // 1024))  # fmt: skip
    grub = work / "BOOTX64.EFI"
    early = work / "early.cfg"
    # The image only finds the root and hands over to the root's own grub.cfg.
    early.write_text(
        f"search --no-floppy --fs-uuid --set=root {root_uuid}\nset prefix=($root)/boot/grub\n"
    )
    _run("grub-mkimage", "-O", "x86_64-efi", "-p", "/boot/grub", "-c", str(early),
         "-o", str(grub), *GRUB_MODULES.split())  # fmt: skip
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    for cmd in (
        ["mmd", "-i", str(esp), "::/EFI", "::/EFI/BOOT"],
        ["mcopy", "-i", str(esp), str(grub), "::/EFI/BOOT/BOOTX64.EFI"],
    ):
        subprocess.run(cmd, env=env, check=True, capture_output=True)
    _run("dd", f"if={esp}", f"of={disk}", "bs=1M", f"seek={ESP_START // MiB}",
         "conv=notrunc,sparse", "status=none")  # fmt: skip

    def mkfs() -> None:
        _run("mkfs.ext4", "-q", "-F", "-L", "bootroot", "-U", root_uuid, "-d", str(root),
             "-E", f"offset={ROOT_START}", str(disk), f"{root_size // 1024}k")  # fmt: skip

    mkfs()
    files: dict[str, str] = {}
    if spread:
        # Measured, not guessed: what the system leaves free, filled up to a small margin, then
        # the file system made again with the fillers (mke2fs -d allocates in order, so the
        # last fillers land at the partition's end).
        free = _statistics(disk, work)["free"]
        files = _add_fillers(root, free - max(16 * MiB, root_size // 50))
        mkfs()
        _delete_every_other_filler(disk, work, files)
    used = _statistics(disk, work)["used"]
    (work / "disk.json").write_text(json.dumps({
        "size": size,
        "esp": asdict(Partition(1, ESP_START, ESP_SIZE)),
        "root": asdict(Partition(2, ROOT_START, root_size)),
        "root_uuid": root_uuid,
        "esp_volume_id": esp_volume_id,
        "marker": marker,
        "used_bytes": used,
        "files": files,
    }, indent=2))  # fmt: skip


def _configure_system(root: Path, work: Path, root_uuid: str, machine_id: str, marker: str) -> None:
    """Turn the live system's Debian layer into an installed system that boots from its disk."""
    boot = root / "boot"
    shutil.copyfile(work / "vmlinuz", boot / "vmlinuz")
    shutil.copyfile(work / "initrd.img", boot / "initrd.img")
    (boot / "grub").mkdir(exist_ok=True)
    (boot / "grub" / "grub.cfg").write_text(
        "serial --unit=0 --speed=115200\n"
        "terminal_input --append serial\n"
        "terminal_output --append serial\n"
        "set timeout=0\n"
        'menuentry "bootable disk (recovery tests)" {\n'
        f"    linux /boot/vmlinuz root=UUID={root_uuid} ro console=ttyS0,115200n8"
        " loglevel=4 modprobe.blacklist=floppy\n"
        "    initrd /boot/initrd.img\n"
        "}\n"
    )
    etc = root / "etc"
    # No fsck pass for the root: it would wait for udev to announce the disk (under TCG on a busy
    # host that alone took 50-75 s) and check a file system that was just made or restored.
    (etc / "fstab").write_text(f"UUID={root_uuid} / ext4 errors=remount-ro 0 0\n")
    (etc / "hostname").write_text(HOSTNAME + "\n")
    (etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n")
    # A fixed machine-id: an empty one makes this a first boot, which systemd treats differently.
    (etc / "machine-id").write_text(machine_id + "\n")
    (etc / "bootable-disk").write_text(marker + "\n")
    # root logs in without a password (pam_unix's nullok): the tests' only way in.
    shadow = etc / "shadow"
    shadow.write_text(re.sub(r"^root:[^:]*:", "root::", shadow.read_text(), flags=re.M))
    units = etc / "systemd" / "system"
    # The login prompt on ttyS0 without waiting for udev to announce the port: systemd's
    # serial-getty@.service binds to dev-ttyS0.device, which a boot slowed down by a busy host
    # can miss within its 90 s (the getty then never starts). ttyS0 exists from the kernel's
    # first line, since it is the console.
    (units / "serial-getty@ttyS0.service").write_text(SERIAL_GETTY)
    (units / "getty.target.wants").mkdir(exist_ok=True)
    (units / "getty.target.wants" / "serial-getty@ttyS0.service").symlink_to(
        "/etc/systemd/system/serial-getty@ttyS0.service"
    )
    # No gettys on the screen (nobody looks at it; getty-static starts tty2-6 when dbus is
    # missing). What the live system masks (timers and services touching disks, time sync) is
    # masked here too: a test boot should reach its login prompt without extra work.
    (units / "getty.target.wants" / "getty@tty1.service").unlink(missing_ok=True)
    (units / "getty-static.service").symlink_to("/dev/null")
    for line in (REPO / "iso" / "units.txt").read_text().splitlines():
        action, _, unit = line.partition(" ")
        if action == "mask" and unit:
            link = units / unit.strip()
            link.unlink(missing_ok=True)
            link.symlink_to("/dev/null")


def _add_fillers(root: Path, room: int) -> dict[str, str]:
    """Files of random bytes that take ``room`` bytes (whole fillers); every filler's path ->
    SHA-256 (all of them, before half are deleted)."""
    folder = root / "var" / "filler"
    folder.mkdir()
    files = {}
    for i in range(max(2, room // FILLER_SIZE)):
        data = os.urandom(FILLER_SIZE)
        name = f"/var/filler/{i:04d}"
        (root / name.lstrip("/")).write_bytes(data)
        files[name] = hashlib.sha256(data).hexdigest()
    return files


def _delete_every_other_filler(disk: Path, work: Path, files: dict[str, str]) -> None:
    """debugfs removes every other filler from the unmounted file system; its blocks keep the
    old bytes. ``files`` keeps only the survivors."""
    part = _root_partition_file(disk, work)
    # Counted from the last: the last filler, at the partition's end, stays.
    names = sorted(files)
    deleted = names[len(names) % 2 :: 2]
    script = work / "debugfs-rm"
    script.write_text("".join(f"rm {name}\n" for name in deleted))
    try:
        _run("debugfs", "-w", "-f", str(script), str(part))
        _run("e2fsck", "-fy", str(part))
        _copy_back(part, disk)
    finally:
        part.unlink()
    for name in deleted:
        del files[name]


def _root_partition_file(disk: Path, work: Path) -> Path:
    # e2fsprogs' tools other than mkfs take no offset: give them the partition as its own file.
    part = work / "root-partition.img"
    _run("dd", f"if={disk}", f"of={part}", "bs=1M", f"skip={ROOT_START // MiB}",
         f"count={(os.path.getsize(disk) - ROOT_START - MiB) // MiB}",
         "conv=sparse", "status=none")  # fmt: skip
    return part


def _copy_back(part: Path, disk: Path) -> None:
    _run("dd", f"if={part}", f"of={disk}", "bs=1M", f"seek={ROOT_START // MiB}",
         "conv=notrunc", "status=none")  # fmt: skip


def _statistics(disk: Path, work: Path) -> dict[str, int]:
    """Bytes ``used`` and ``free`` in the root file system, as dumpe2fs counts blocks."""
    part = _root_partition_file(disk, work)
    try:
        out = _run("dumpe2fs", "-h", str(part))
    finally:
        part.unlink()
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    block = int(fields["Block size"])
    free = int(fields["Free blocks"])
    return {"used": (int(fields["Block count"]) - free) * block, "free": free * block}


@contextlib.contextmanager
def boot(
    disk: Path,
    workdir: Path,
    *,
    format: str = "raw",
    snapshot: bool = True,
    timeout: float = BOOT_TIMEOUT,
    memory_mib: int = 1024,
) -> Iterator[Booted]:
    """Power on a UEFI machine that boots ``disk``; wait for ``login:`` (module docstring)."""
    workdir.mkdir(parents=True, exist_ok=True)
    vm = Machine(
        mode=DISK_MODE,
        iso=None,
        workdir=workdir,
        disks=[Disk(disk, "bootdisk", format=format, bootindex=0)],
        snapshot=snapshot,
        memory_mib=memory_mib,
    )
    vm.start()
    try:
        assert vm.serial is not None
        vm.serial.expect(LOGIN, timeout)
        yield Booted(vm, round(vm.elapsed(), 1))
    finally:
        vm.kill()


def login(machine: Machine, timeout: float = 300) -> None:
    """Log in as root on the serial line; then ``machine.serial.run`` runs shell commands."""
    serial = machine.serial
    assert serial is not None
    with serial.lock:
        start = len(serial.buffer)
    serial.send("root\n")
    serial.expect(SHELL, timeout, start)
    time.sleep(0.5)  # the prompt is printed before the shell reads its first line
    serial.run("stty -echo cols 500", timeout=60)
