"""Boot tests: dist/recovery.iso under QEMU (TCG), one boot per mode, driven over the serial line.

They take minutes, so they run only when asked: ``make iso-test`` (or RECOVERY_BOOT_TESTS=1
with pytest) after ``make iso``. Under plain ``make test`` they are skipped, whether or not an
ISO exists. Screenshots of tty1, serial logs and timings go to build/boot-test/ (or
RECOVERY_BOOT_ARTIFACTS).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.boot.qemu import MODES, Disk, Machine

REPO = Path(__file__).resolve().parents[2]
ISO = Path(os.environ.get("RECOVERY_ISO", REPO / "dist" / "recovery.iso"))
ARTIFACTS = Path(os.environ.get("RECOVERY_BOOT_ARTIFACTS", REPO / "build" / "boot-test"))
# From power-on to a shell on the serial line. ~1 min on a quiet machine under TCG; the limit
# leaves room for a machine busy with other work (boots then take 3-5 min).
BOOT_TIMEOUT = float(os.environ.get("RECOVERY_BOOT_TIMEOUT", "900"))

MiB = 1024 * 1024


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("RECOVERY_BOOT_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="boot tests run with `make iso-test` (RECOVERY_BOOT_TESTS=1)")
    for item in items:
        if "boot" in item.path.parts:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def iso() -> Path:
    if not ISO.exists():
        pytest.fail(f"{ISO} does not exist: run `make iso` first")
    if shutil.which("qemu-system-x86_64") is None:
        pytest.fail("qemu-system-x86_64 not found: run `make iso-deps`")
    return ISO


@pytest.fixture(scope="session")
def timings() -> Iterator[dict[str, dict[str, float]]]:
    """Seconds per mode and event; written to build/boot-test/timings.json at the end."""
    figures: dict[str, dict[str, float]] = {}
    yield figures
    _write_timings(figures)


def _write_timings(figures: dict[str, dict[str, float]]) -> None:
    """After each boot too, so a long run shows its figures as it goes."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "timings.json").write_text(json.dumps(figures, indent=2) + "\n")


@pytest.fixture(scope="session")
def source_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """What the source disk's ext4 file system holds: path -> content."""
    rng = __import__("random").Random(7)
    return {
        "/hello.txt": b"restored inside the live system\n",
        "/data/random.bin": rng.randbytes(3 * MiB + 123),
        "/data/zeros-then-data.bin": bytes(MiB) + rng.randbytes(4096),
        "/deep/a/b/c/note.txt": b"deep\n" * 1000,
    }


def make_source_disk(path: Path, files: dict[str, bytes], size: int = 256 * MiB) -> None:
    """A GPT disk image with one ext4 partition holding ``files``, made without loop devices:
    sfdisk writes the table into the file, mkfs.ext4 -d fills the file system at its offset."""
    content = path.parent / "source-content"
    for name, data in files.items():
        target = content / name.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    with open(path, "wb") as f:
        f.truncate(size)
    script = "label: gpt\nstart=2048, size=409600, type=linux, name=system\n"
    subprocess.run(["sfdisk", "-q", str(path)], input=script, text=True, check=True)
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-L", "bootsrc", "-d", str(content),
         "-E", f"offset={2048 * 512}", str(path), f"{409600 * 512 // 1024}k"],
        check=True,
    )  # fmt: skip


@pytest.fixture(scope="module", params=MODES, ids=[m.name for m in MODES])
def machine(
    request: pytest.FixtureRequest,
    iso: Path,
    tmp_path_factory: pytest.TempPathFactory,
    source_files: dict[str, bytes],
    timings: dict[str, dict[str, float]],
) -> Iterator[Machine]:
    """The live system booted in one mode, with a source disk (ext4 with ``source_files``) and an
    empty target disk attached as virtio disks ``recsrc`` and ``rectgt``; a root shell ready on
    the serial line. Powered off after the module's tests."""
    mode = request.param
    work = tmp_path_factory.mktemp(mode.name)
    source = work / "source.img"
    target = work / "target.img"
    make_source_disk(source, source_files)
    with open(target, "wb") as f:
        f.truncate(256 * MiB)
    vm = Machine(
        mode=mode,
        iso=iso,
        workdir=work,
        disks=[Disk(source, "recsrc"), Disk(target, "rectgt")],
    )
    figures = timings.setdefault(mode.name, {})
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    vm.start()
    try:
        assert vm.serial is not None
        vm.serial.wait_for_shell(BOOT_TIMEOUT)
        figures["serial_shell_s"] = round(vm.elapsed(), 1)
        yield vm
        figures["powered_off_s"] = round(vm.elapsed(), 1)
        assert vm.power_off() == 0
    finally:
        vm.kill()
        for name in ("serial.log", "qemu.log"):
            if (work / name).exists():
                shutil.copyfile(work / name, ARTIFACTS / f"{mode.name}-{name}")
        _write_timings(timings)
