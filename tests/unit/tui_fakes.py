"""Fixed fakes for the TUI's unit and snapshot tests: disks, engine, locations, machine, clock.

Pure data and recorded calls (no devices, no root), so a screen looks the same on every machine.
The engine fake follows the function names of recovery/engine/api.py and reports progress through
the real Progress protocol.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from rich.console import Console

from recovery.core.network import StaticAddress
from recovery.devices.model import Disk, Partition
from recovery.devices.network import Interface
from recovery.engine.extract import ExtractPlan, ExtractResult
from recovery.engine.locations import Location
from recovery.engine.plans import (
    BackupResult,
    CloneResult,
    FileBackupPlan,
    FileBackupResult,
    FileSource,
    ImageInfo,
    PartitionSummary,
    RemoveResult,
    RestoreResult,
    SourceFolders,
    VerifyResult,
)
from recovery.engine.progress import CancelToken, Progress
from recovery.engine.view import ViewResult
from recovery.errors import DeviceError
from recovery.tui.backends import Backends, EngineApi
from recovery.tui.selection import BASIC_DATA, ESP, LINUX_DATA, MSR, WINDOWS_RECOVERY

MiB = 1024**2
GiB = 1024**3


def _p(disk: str, sep: str, n: int, start: int, size: int, **kw: Any) -> Partition:
    return Partition(path=f"{disk}{sep}{n}", number=n, start=start, size=size, **kw)


NVME = Disk(
    path="/dev/nvme0n1",
    size=500107862016,
    model="Samsung SSD 970 EVO Plus 500GB",
    serial="S4EVNF0M123456",
    transport="nvme",
    table="gpt",
    partitions=(
        _p("/dev/nvme0n1", "p", 1, MiB, 100 * MiB, fstype="vfat", label="SYSTEM", parttype=ESP),
        _p(
            "/dev/nvme0n1",
            "p",
            2,
            101 * MiB,
            16 * MiB,
            parttype=MSR,
            partlabel="Microsoft reserved partition",
        ),
        _p(
            "/dev/nvme0n1",
            "p",
            3,
            117 * MiB,
            465 * GiB,
            fstype="ntfs",
            label="Windows",
            parttype=BASIC_DATA,
        ),
        _p(
            "/dev/nvme0n1",
            "p",
            4,
            117 * MiB + 465 * GiB,
            600 * MiB,
            fstype="ntfs",
            parttype=WINDOWS_RECOVERY,
        ),
    ),
)
SATA = Disk(
    path="/dev/sda",
    size=1000204886016,
    model="WDC WD10EZEX-08WN4A0",
    serial="WD-WCC6Y1234567",
    transport="sata",
    rotational=True,
    table="gpt",
    partitions=(
        _p("/dev/sda", "", 1, MiB, 931 * GiB, fstype="ext4", label="data", parttype=LINUX_DATA),
    ),
)
STICK = Disk(
    path="/dev/sdb",
    size=30752000000,
    model="SanDisk Ultra",
    serial="4C530001230517",
    transport="usb",
    removable=True,
    table="dos",
    boot_medium=True,
    partitions=(
        _p(
            "/dev/sdb",
            "",
            1,
            MiB,
            1 * GiB,
            fstype="iso9660",
            label="RECOVERY",
            parttype="0x0",
            mountpoint="/run/live/medium",
        ),
    ),
)
T7 = Disk(
    path="/dev/sdc",
    size=1000204886016,
    model="Samsung PSSD T7",
    serial="S5T7NS0R123456",
    transport="usb",
    table="gpt",
    partitions=(
        _p("/dev/sdc", "", 1, MiB, 931 * GiB, fstype="exfat", label="T7", parttype=BASIC_DATA),
    ),
)
DISKS = [NVME, SATA, STICK, T7]


def image(name: str, created: str, status: str = "complete", **kw: Any) -> ImageInfo:
    base = ImageInfo(
        name=name,
        created=created,
        source_path="/dev/nvme0n1",
        source_model="Samsung SSD 970 EVO Plus 500GB",
        source_serial="S4EVNF0M123456",
        source_size=NVME.size,
        table="gpt",
        partitions=(
            PartitionSummary(1, MiB, 100 * MiB, "vfat", "SYSTEM", 31 * MiB),
            PartitionSummary(2, 101 * MiB, 16 * MiB, None, None, 0),
            PartitionSummary(3, 117 * MiB, 465 * GiB, "ntfs", "Windows", 61 * GiB),
            PartitionSummary(4, 117 * MiB + 465 * GiB, 600 * MiB, "ntfs", None, 420 * MiB),
        ),
        data_size=62 * GiB,
        stored_size=29 * GiB,
        status=status,
    )
    return replace(base, **kw)


IMAGES = [
    image(
        "nvme0n1-2024-05-01", "2024-05-01T09:12:44Z", "verified", verified_at="2024-05-01T10:02:10Z"
    ),
    image("before-update", "2024-06-17T18:40:02Z"),
    image(
        "data-disk",
        "2024-03-02T07:00:00Z",
        source_path="/dev/sda",
        source_model="WDC WD10EZEX-08WN4A0",
        data_size=402 * GiB,
        stored_size=380 * GiB,
    ),
]


CLONEZILLA_IMAGE = image(
    "2026-11-26-img",
    "2026-11-26T20:15:00Z",
    "clonezilla",
    source_path="/dev/sda",
    source_model=None,
    source_serial=None,
    data_size=38 * GiB,
    stored_size=17 * GiB,
)
"""A Clonezilla image folder as the engine lists it beside ours (not in IMAGES: tests that want
one pass ``FakeEngine(images=[*IMAGES, CLONEZILLA_IMAGE])``)."""


@dataclass
class FakePlan:
    kind: str
    args: tuple[Any, ...]
    lines: list[str]
    total_bytes: int = 0

    def describe(self) -> list[str]:
        return list(self.lines)


@dataclass
class FakeEngine:
    """Records calls; ``fail`` maps a function name to the exception it raises."""

    images: list[ImageInfo] = field(default_factory=lambda: list(IMAGES))
    fail: dict[str, BaseException] = field(default_factory=dict)
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    gate: Callable[[], None] | None = None
    """Called inside backup_run between steps (tests block or cancel there)."""
    delta_restore: bool = False
    """restore_plan answers as for a target that already holds an earlier state of the disk."""

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        if name in self.fail:
            raise self.fail[name]

    def backup_plan(
        self,
        sources: list[str],
        repo: str,
        name: str | None = None,
        level: int = 3,
        system: bool = False,
        *,
        encrypt: bool = False,
    ) -> FakePlan:
        self._call("backup_plan", sources, repo, name, level, system)
        lines = [f"read {s}" for s in sources] + [
            f"write image {name or 'nvme0n1-2024-07-01'} into {repo}"
        ]
        return FakePlan("backup", (sources, repo, name, level, system), lines)

    def backup_run(self, plan: FakePlan, progress: Progress, cancel: CancelToken) -> BackupResult:
        self._call("backup_run", plan)
        progress.step("backup /dev/nvme0n1p1 (vfat)", 100 * MiB)
        for _ in range(4):
            cancel.check()
            if self.gate:
                self.gate()
            progress.advance(25 * MiB)
        progress.log("p1: 31 MiB used of 100 MiB")
        cancel.check()
        img = image(plan.args[2] or "nvme0n1-2024-07-01", "2024-07-01T12:00:00Z")
        return BackupResult(img, new_bytes=3 * GiB, seconds=42.0)

    def verify(self, repo: str, name: str, progress: Progress, cancel: CancelToken) -> VerifyResult:
        self._call("verify", repo, name)
        progress.step(f"verify {name}", 10 * MiB)
        progress.advance(10 * MiB)
        return VerifyResult(name, True, 62 * GiB, ())

    def list_images(self, repo: str) -> list[ImageInfo]:
        self._call("list_images", repo)
        return list(self.images)

    def remove(self, repo: str, name: str) -> RemoveResult:
        self._call("remove", repo, name)
        self.images = [i for i in self.images if i.name != name]
        return RemoveResult(name, 2 * GiB)

    def restore_plan(
        self,
        repo: str,
        name: str,
        target: str,
        partitions: list[int] | None = None,
        full: bool = False,
    ) -> FakePlan:
        self._call("restore_plan", repo, name, target, partitions)
        lines = [
            f"write a new gpt partition table on {target}",
            "partition 1 (vfat, 100 MiB) -> 1: 100 MiB",
            "partition 3 (ntfs, 465 GiB) -> 3: grown to 930 GiB, file system grown",
        ]
        if self.delta_restore and not full:
            # What engine/delta.py's Delta.describe() gives for a target holding an earlier state.
            lines = [
                f"write a new gpt partition table on {target} (identical layout)",
                "partition 1 (vfat): 31.0 MiB of data, size 100 MiB",
                "partition 3 (ntfs): 61.0 GiB of data, size 465 GiB",
                "delta: 59.2 GiB already match, 1.8 GiB will be written",
                "  (measured: the target holds an earlier state of this disk, so only the cells "
                "that differ are written)",
            ]
        return FakePlan("restore", (repo, name, target, partitions), lines)

    def restore_run(self, plan: FakePlan, progress: Progress, cancel: CancelToken) -> RestoreResult:
        self._call("restore_run", plan)
        progress.step("restore partition 1", 4 * MiB)
        progress.advance(4 * MiB)
        checks = ("partition 1: fsck.vfat: clean",)
        return RestoreResult(plan.args[1], plan.args[2], 4 * MiB, 2.0, checks, True)

    def clone_plan(
        self, source: str, target: str, system: bool = False, new_ids: bool = False
    ) -> FakePlan:
        self._call("clone_plan", source, target, system, new_ids)
        lines = [
            f"Clone {'the system partitions of ' if system else ''}{source} onto {target}",
            "  partition 1 (vfat): 31.0 MiB to copy, size 100 MiB",
            "  partition 3 (ntfs): 61.0 GiB to copy, size 930 GiB (grown from 465 GiB)",
        ]
        return FakePlan("clone", (source, target, system, new_ids), lines)

    def clone_run(self, plan: FakePlan, progress: Progress, cancel: CancelToken) -> CloneResult:
        self._call("clone_run", plan)
        progress.step("copy partition 1", 4 * MiB)
        progress.advance(4 * MiB)
        checks = ("partition 1: fsck.vfat: clean", "partition 3: ntfsfix -n: clean")
        return CloneResult(plan.args[0], plan.args[1], 61 * GiB, 30.0, checks, True)

    def open_image(self, repo: str, image: str, directory: str) -> ViewResult:
        self._call("open_image", repo, image, directory)
        return ViewResult(directory, 0, ["disk.img"])

    def close_image(self, directory: str) -> list[str]:
        self._call("close_image", directory)
        return []

    def extract_plan(
        self, repo: str, image: str, paths: list[str], to: str, overwrite: bool = False
    ) -> ExtractPlan:
        self._call("extract_plan", repo, image, paths, to, overwrite)
        return ExtractPlan(repo, image, to, [], overwrite)

    def extract_run(
        self, plan: ExtractPlan, progress: Progress, cancel: CancelToken
    ) -> ExtractResult:
        self._call("extract_run", plan)
        return ExtractResult(plan.image, plan.to)

    def source_folders(self, source: str) -> SourceFolders:
        self._call("source_folders", source)
        users = [f"/Users/{u}" for u in ("alice", "bob")]
        folders = ["/Program Files", "/Users", "/Windows", "/Windows/System32"]
        for u in users:
            folders += [u, f"{u}/AppData", f"{u}/Desktop", f"{u}/Documents", f"{u}/Pictures"]
        preset = tuple(f"{u}/{f}" for u in users for f in ("Desktop", "Documents", "Pictures"))
        return SourceFolders(source, "windows", tuple(sorted(folders)), preset)

    def file_backup_plan(
        self,
        sources: list[str],
        repo: str,
        name: str | None = None,
        excludes: list[str] | None = None,
        preset: str | None = None,
        level: int = 3,
        encrypt: bool = False,
    ) -> FileBackupPlan:
        self._call("file_backup_plan", sources, repo, name, excludes, preset)
        src = FileSource(
            sources[0], "/dev/nvme0n1p3", "ntfs", "0A1B", "Windows", "/", "", "fs:0A1B", True, True
        )
        include = tuple(("", s.partition(":")[2] or "/") for s in sources)
        return FileBackupPlan(
            (src,),
            repo,
            name or "files-2024-07-01-120000",
            level,
            include,
            tuple(excludes or ()),
            preset,
            1234,
            3 * GiB,
        )

    def file_backup_run(
        self, plan: FileBackupPlan, progress: Progress, cancel: CancelToken
    ) -> FileBackupResult:
        self._call("file_backup_run", plan)
        progress.step(f"backing up {plan.files} file(s)", plan.total_bytes)
        for _ in range(4):
            cancel.check()
            if self.gate:
                self.gate()
            progress.advance(plan.total_bytes // 4)
        img = replace(image(plan.name, "2024-07-01T12:00:00Z"), kind="files", files=1232)
        skipped = ("Users/alice/Documents/broken.docx: cannot read: Input/output error",)
        return FileBackupResult(img, 1232, 80, 3 * GiB, 3 * GiB, 0, 2 * GiB, 61.0, skipped)


# mypy checks this assignment: the fake has every function the app calls on the real engine,
# with the same parameters and result types.
_FAKE_ENGINE_MATCHES_THE_API: EngineApi[FakePlan, FakePlan, FakePlan] = FakeEngine()

REPO = "/run/recovery/mnt/sdc1/recovery-backups"


@dataclass
class FakeLocations:
    calls: list[tuple[str, Any]] = field(default_factory=list)

    def candidates(self, disks: list[Disk]) -> list[Location]:
        self.calls.append(("candidates", [d.path for d in disks]))
        return [
            Location("/dev/sda1", "data", "ext4", 931 * GiB, None, None),
            Location("/dev/sdc1", "T7", "exfat", 931 * GiB, None, None),
            Location("/dev/nvme0n1p3", "Windows", "ntfs", 465 * GiB, None, None),
        ]

    def mount(self, loc: Location, writable: bool) -> Location:
        self.calls.append(("mount", (loc.device, writable)))
        mnt = f"/run/recovery/mnt/{(loc.device or 'x').rsplit('/', 1)[-1]}"
        repos = (f"{mnt}/recovery-backups",) if loc.device == "/dev/sdc1" else ()
        return replace(loc, mountpoint=mnt, free=512 * GiB, repositories=repos, writable=writable)

    def inspect(self, loc: Location) -> Location:
        return loc

    def search(self, loc: Location) -> Location:
        if loc.device == "/dev/nvme0n1p3":
            raise DeviceError("Could not mount /dev/nvme0n1p3: Windows is hibernated")
        return self.mount(loc, False)

    def unmount(self, loc: Location) -> Location:
        self.calls.append(("unmount", loc.device))
        return replace(loc, mountpoint=None, free=None, repositories=())

    def directory(self, path: str) -> Location:
        self.calls.append(("directory", path))
        return Location(None, None, None, 0, path, 100 * GiB, (path,) if path == REPO else (), True)

    def release_all(self) -> None:
        self.calls.append(("release_all", None))


@dataclass
class FakeDisks:
    disks: list[Disk] = field(default_factory=lambda: list(DISKS))
    changed: Callable[[], None] | None = None

    def list_disks(self) -> list[Disk]:
        return list(self.disks)

    def watch(self, changed: Callable[[], None]) -> Callable[[], None] | None:
        self.changed = changed
        return lambda: None

    def plug(self, disks: list[Disk]) -> None:
        """Pretend a disk came or went: the list changes and the watcher calls back."""
        self.disks = list(disks)
        assert self.changed is not None
        self.changed()


@dataclass
class FakeMachine:
    calls: list[str] = field(default_factory=list)

    def power_off(self) -> None:
        self.calls.append("power_off")

    def reboot(self) -> None:
        self.calls.append("reboot")

    def shell(self) -> list[str]:
        return ["true"]


class FakeNetwork:
    """Two wired interfaces: one with an address by DHCP, one without a cable. ``renew`` is
    recorded; ``interfaces`` can be replaced to show an address arriving."""

    def __init__(self, found: list[Interface] | None = None) -> None:
        self.found = (
            found
            if found is not None
            else [
                Interface("enp0s3", "52:54:00:12:34:56", True, ("10.0.2.15/24", "fec0::5054/64")),
                Interface("enp0s4", "52:54:00:12:34:57", False),
            ]
        )
        self.renewed: list[str] = []
        self.static: list[StaticAddress] = []
        self.dhcp: list[str] = []

    def interfaces(self) -> list[Interface]:
        return list(self.found)

    def renew(self, name: str) -> None:
        self.renewed.append(name)

    def set_static(self, settings: StaticAddress) -> None:
        self.static.append(settings)

    def use_dhcp(self, name: str) -> None:
        self.dhcp.append(name)


class FrozenClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def fake_system_partitions(disk: str) -> list[int]:
    """What the engine finds inside NVME's partitions: ESP, MSR, Windows, WinRE."""
    return [1, 2, 3, 4] if disk == NVME.path else []


def fake_backends(**kw: Any) -> Backends:
    return Backends(
        disks=kw.pop("disks", FakeDisks()),
        engine=kw.pop("engine", FakeEngine()),
        locations=kw.pop("locations", FakeLocations()),
        machine=kw.pop("machine", FakeMachine()),
        clock=kw.pop("clock", FrozenClock()),
        system_partitions=kw.pop("system_partitions", fake_system_partitions),
        privileged=kw.pop("privileged", True),
        network=kw.pop("network", None),
    )


def screen_text(app: Any) -> str:
    """The characters on the app's screen, one line per row (what a person would read)."""
    width, height = app.size
    console = Console(
        width=width,
        height=height,
        file=io.StringIO(),
        force_terminal=True,
        color_system="truecolor",
        record=True,
        legacy_windows=False,
        safe_box=False,
    )
    console.print(
        app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    )
    return console.export_text()
