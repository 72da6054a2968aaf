"""A QEMU virtual machine that boots the live ISO (or a disk), driven through its serial console
and QMP.

Used by tests/boot. One :class:`Machine` per boot: :meth:`Machine.start` powers it on with the
medium attached the way a mode says (CD or USB stick, BIOS or UEFI, Secure Boot or not) and any
extra virtio disks, or, in :data:`DISK_MODE`, with no medium, booting the disk that has a
``bootindex`` (tests/boot/bootable_disk.py). :class:`SerialConsole` types commands into the
root shell the live system keeps on ttyS0 and returns their output and exit status;
:class:`Qmp` takes screenshots of the screen (tty1) and powers off. Under TCG (this machine's
KVM is nested and unusable) a boot takes about a minute on a quiet machine and several when
other work shares the two cores.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

OVMF = Path("/usr/share/OVMF")


@dataclass(frozen=True)
class Mode:
    """How the machine boots the medium."""

    name: str
    firmware: str
    """``bios`` (SeaBIOS), ``uefi`` (OVMF) or ``uefi-secureboot`` (OVMF with Microsoft's keys)."""
    medium: str
    """``cd`` (ATAPI CD-ROM), ``usb`` (usb-storage stick on an xHCI controller) or ``disk`` (no
    live medium: the machine boots one of its :class:`Disk` s, the one with a ``bootindex``)."""


MODES = (
    Mode("bios-cd", "bios", "cd"),
    Mode("bios-usb", "bios", "usb"),
    Mode("uefi-usb", "uefi", "usb"),
    Mode("uefi-secureboot-cd", "uefi-secureboot", "cd"),
)


# A machine that boots an installed system from one of its disks (tests/boot/bootable_disk.py).
DISK_MODE = Mode("uefi-disk", "uefi", "disk")


@dataclass
class Disk:
    """An image file attached as a virtio disk; inside it is /dev/disk/by-id/virtio-SERIAL."""

    path: Path
    serial: str
    format: str = "raw"
    """QEMU's name of the file's format: ``raw``, ``qcow2``, ``vhdx``, ``vmdk``, ``vdi``."""
    bootindex: int | None = None
    """Set on the disk the firmware boots from (a :data:`DISK_MODE` machine)."""


@dataclass
class Machine:
    mode: Mode
    iso: Path | None
    """The live medium; None for a :data:`DISK_MODE` machine."""
    workdir: Path
    disks: list[Disk] = field(default_factory=list)
    snapshot: bool = False
    """QEMU's ``-snapshot``: every disk is read-only underneath, writes go to temporary files."""
    memory_mib: int = 2048
    cpus: int = int(os.environ.get("RECOVERY_BOOT_CPUS", "2"))
    cpu_model: str = os.environ.get("RECOVERY_BOOT_CPU", "qemu64")
    """TCG's default CPU. ``max`` (every feature TCG emulates) booted 2-3 times slower here."""
    nic: str = "user"
    """QEMU's ``-nic``: ``user`` is QEMU's user network (the guest gets 10.0.2.15 by DHCP, the
    host is 10.0.2.2), ``none`` a machine without a network card."""
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    serial: SerialConsole | None = None
    qmp: Qmp | None = None

    def command(self) -> list[str]:
        serial_sock = self.workdir / "serial.sock"
        qmp_sock = self.workdir / "qmp.sock"
        cmd = [
            "qemu-system-x86_64",
            "-accel", "tcg,thread=multi",
            "-cpu", self.cpu_model,
            "-m", str(self.memory_mib),
            "-smp", str(self.cpus),
            "-display", "none",
            "-vga", "std",
            "-nic", self.nic,
            "-no-reboot",
            "-chardev", f"socket,id=ser0,path={serial_sock},server=on,wait=off",
            "-serial", "chardev:ser0",
            "-qmp", f"unix:{qmp_sock},server=on,wait=off",
        ]  # fmt: skip
        if self.mode.firmware == "bios":
            cmd += ["-machine", "pc"]
        else:
            secure = self.mode.firmware == "uefi-secureboot"
            code = OVMF / ("OVMF_CODE_4M.ms.fd" if secure else "OVMF_CODE_4M.fd")
            vars_template = OVMF / ("OVMF_VARS_4M.ms.fd" if secure else "OVMF_VARS_4M.fd")
            vars_copy = self.workdir / "OVMF_VARS.fd"
            shutil.copyfile(vars_template, vars_copy)
            if secure:
                # Secure Boot needs SMM so the guest cannot write the variable store directly.
                cmd += ["-machine", "q35,smm=on"]
                cmd += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
            else:
                cmd += ["-machine", "q35"]
            cmd += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}"]
            cmd += ["-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"]
        if self.snapshot:
            cmd += ["-snapshot"]
        if self.mode.medium == "disk":
            pass
        elif self.mode.medium == "cd":
            cmd += ["-drive", f"if=none,id=medium,media=cdrom,readonly=on,file={self.iso}"]
            bus = "ide.1" if self.mode.firmware == "bios" else "ide.2"
            cmd += ["-device", f"ide-cd,drive=medium,bus={bus},bootindex=0"]
        else:
            cmd += ["-device", "qemu-xhci,id=xhci"]
            cmd += ["-drive", f"if=none,id=medium,format=raw,readonly=on,file={self.iso}"]
            cmd += ["-device", "usb-storage,bus=xhci.0,drive=medium,removable=on,bootindex=0"]
        for i, disk in enumerate(self.disks):
            cmd += ["-drive", f"if=none,id=disk{i},format={disk.format},file={disk.path}"]
            boot = "" if disk.bootindex is None else f",bootindex={disk.bootindex}"
            cmd += ["-device", f"virtio-blk-pci,drive=disk{i},serial={disk.serial}{boot}"]
        return cmd

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "qemu.log", "wb")  # noqa: SIM115 (closed with the process)
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self.serial = SerialConsole.connect(
            self.workdir / "serial.sock", self.workdir / "serial.log", self.process
        )
        self.qmp = Qmp.connect(self.workdir / "qmp.sock", self.process)

    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    def screenshot(self, path: Path) -> None:
        assert self.qmp is not None
        self.qmp.execute("screendump", filename=str(path), format="png")

    def power_off(self, timeout: float = 180.0) -> int:
        """``poweroff`` through the shell, so disks are flushed; QEMU exits when it is done."""
        assert self.process is not None and self.serial is not None
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.serial.send("sync; poweroff\n")
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
        if self.serial is not None:
            self.serial.close()
        if self.qmp is not None:
            self.qmp.close()


def _connect_unix(
    path: Path, process: subprocess.Popen[bytes], timeout: float = 30
) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"QEMU exited ({process.returncode}) before {path} was ready")
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(path))
            return s
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class SerialConsole:
    """The guest's ttyS0: everything it prints is kept (and logged); commands get markers."""

    PROMPT = re.compile(rb"root@recovery:[^\r\n]*# ")

    def __init__(self, sock: socket.socket, log_path: Path) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.lock = threading.Condition()
        self.log = open(log_path, "wb")  # noqa: SIM115 (closed in close())
        self.closed = False
        self.counter = 0
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    @classmethod
    def connect(cls, path: Path, log_path: Path, process: subprocess.Popen[bytes]) -> SerialConsole:
        return cls(_connect_unix(path, process), log_path)

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            with self.lock:
                if not data:
                    self.closed = True
                    self.lock.notify_all()
                    return
                self.buffer += data
                self.log.write(data)
                self.log.flush()
                self.lock.notify_all()

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode())

    def expect(self, pattern: re.Pattern[bytes], timeout: float, start: int = 0) -> re.Match[bytes]:
        """Wait until ``pattern`` matches the output from byte ``start`` on."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                m = pattern.search(self.buffer, start)
                if m:
                    return m
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    tail = bytes(self.buffer[-2000:]).decode(errors="replace")
                    why = "the serial line closed" if self.closed else f"{timeout:.0f} s passed"
                    raise TimeoutError(f"{why} without {pattern.pattern!r}; last output:\n{tail}")
                self.lock.wait(min(left, 1.0))

    def wait_for_shell(self, timeout: float) -> None:
        self.expect(self.PROMPT, timeout)
        # No echo (our commands would be mixed into their output) and no line wrapping.
        self.run("stty -echo cols 500", timeout=60)

    def run(self, command: str, timeout: float = 120) -> tuple[int, str]:
        """Run one shell command line; return its exit status and output (CR LF turned to LF)."""
        self.counter += 1
        n = self.counter
        with self.lock:
            start = len(self.buffer)
        # The quotes split the markers, so the shell's echo of this line never matches them.
        self.send(f"echo '@@BE''GIN {n}@@'; {command}; echo \"@@E\"\"ND {n} $?@@\"\n")
        pattern = re.compile(rb"@@BEGIN %d@@\r?\n(.*?)@@END %d (\d+)@@" % (n, n), re.DOTALL)
        m = self.expect(pattern, timeout, start)
        output = m.group(1).decode(errors="replace").replace("\r\n", "\n")
        return int(m.group(2)), output

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        self.reader.join(5)
        self.log.close()


class Qmp:
    """The QEMU Machine Protocol: JSON commands on a unix socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = sock.makefile("rwb")
        self._read()  # greeting
        self.execute("qmp_capabilities")

    @classmethod
    def connect(cls, path: Path, process: subprocess.Popen[bytes]) -> Qmp:
        return cls(_connect_unix(path, process))

    def _read(self) -> dict[str, object]:
        line = self.file.readline()
        if not line:
            raise ConnectionError("QMP closed")
        reply: dict[str, object] = json.loads(line)
        return reply

    def execute(self, command: str, **arguments: object) -> object:
        request: dict[str, object] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        self.file.write(json.dumps(request).encode() + b"\n")
        self.file.flush()
        while True:
            reply = self._read()
            if "event" in reply:
                continue
            if "error" in reply:
                raise RuntimeError(f"QMP {command}: {reply['error']}")
            return reply.get("return")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
            self.sock.close()
