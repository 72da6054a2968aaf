"""What the app talks to: the disks, the engine, backup locations, the machine, the clock.

The app takes a :class:`Backends`; :meth:`Backends.system` gives the real ones (udev, the
engine in :mod:`recovery.engine.api`, mount(8), systemctl). Snapshot and unit tests pass fakes
with fixed data, so a screen looks the same on every machine. Every method here may block and is
called from worker threads, except ``clock``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from recovery.core.network import StaticAddress
from recovery.devices.model import Disk
from recovery.devices.network import Interface
from recovery.engine.locations import Location, Locations
from recovery.engine.plans import (
    BackupResult,
    CloneResult,
    FileBackupPlan,
    FileBackupResult,
    ImageInfo,
    RemoveResult,
    RestoreResult,
    SourceFolders,
    VerifyResult,
)
from recovery.engine.progress import CancelToken, Progress
from recovery.errors import DeviceError, RecoveryError

if TYPE_CHECKING:
    from recovery.engine.clonezilla import ClonezillaRestorePlan
    from recovery.engine.extract import ExtractPlan, ExtractResult
    from recovery.engine.plans import BackupPlan, ClonePlan, RestorePlan
    from recovery.engine.view import ViewResult


@runtime_checkable
class ShownPlan(Protocol):
    """What the app needs of a plan: the lines to show, and the bytes it will move (0: not
    known) for the overall progress."""

    def describe(self) -> list[str]: ...

    @property
    def total_bytes(self) -> int: ...


BackupPlanT = TypeVar("BackupPlanT", bound=ShownPlan)
RestorePlanT = TypeVar("RestorePlanT", bound=ShownPlan)
ClonePlanT = TypeVar("ClonePlanT", bound=ShownPlan)


class EngineApi(Protocol[BackupPlanT, RestorePlanT, ClonePlanT]):
    """The part of :mod:`recovery.engine.api` the app calls. The module itself satisfies it
    (checked in :meth:`Backends.system`), and so does the tests' fake engine (checked in
    tests/unit/tui_fakes.py, which mypy reads), so neither can drift from the other.

    The plan types are parameters: the app only shows a plan and hands it back to the matching
    ``*_run``, so a fake may use its own plan type."""

    def backup_plan(
        self,
        sources: list[str],
        repo: str,
        name: str | None = None,
        level: int = 3,
        system: bool = False,
        *,
        encrypt: bool = False,
    ) -> BackupPlanT: ...

    def backup_run(
        self, plan: BackupPlanT, progress: Progress, cancel: CancelToken, /
    ) -> BackupResult: ...

    def verify(
        self, repo: str, image: str, progress: Progress, cancel: CancelToken, /
    ) -> VerifyResult: ...

    def list_images(self, repo: str, /) -> list[ImageInfo]: ...

    def remove(self, repo: str, image: str, /) -> RemoveResult: ...

    def restore_plan(
        self,
        repo: str,
        image: str,
        target: str,
        /,
        partitions: list[int] | None = None,
        full: bool = False,
    ) -> RestorePlanT: ...

    def restore_run(
        self, plan: RestorePlanT, progress: Progress, cancel: CancelToken, /
    ) -> RestoreResult: ...

    def clone_plan(
        self, source: str, target: str, /, system: bool = False, new_ids: bool = False
    ) -> ClonePlanT: ...

    def clone_run(
        self, plan: ClonePlanT, progress: Progress, cancel: CancelToken, /
    ) -> CloneResult: ...

    def open_image(self, repo: str, image: str, directory: str, /) -> ViewResult: ...

    def close_image(self, directory: str, /) -> list[str]: ...

    def extract_plan(
        self, repo: str, image: str, paths: list[str], to: str, /, overwrite: bool = False
    ) -> ExtractPlan: ...

    def extract_run(
        self, plan: ExtractPlan, progress: Progress, cancel: CancelToken, /
    ) -> ExtractResult: ...

    def source_folders(self, source: str, /) -> SourceFolders: ...

    def file_backup_plan(
        self,
        sources: list[str],
        repo: str,
        name: str | None = None,
        excludes: list[str] | None = None,
        preset: str | None = None,
        level: int = 3,
        encrypt: bool = False,
    ) -> FileBackupPlan: ...

    def file_backup_run(
        self, plan: FileBackupPlan, progress: Progress, cancel: CancelToken, /
    ) -> FileBackupResult: ...


class DiskSource(Protocol):
    def list_disks(self) -> list[Disk]: ...

    def watch(self, changed: Callable[[], None]) -> Callable[[], None] | None:
        """Call ``changed`` (from any thread) when a disk comes or goes; return a stop function,
        or None when hot-plug is not available."""
        ...


class LocationFinder(Protocol):
    def candidates(self, disks: list[Disk]) -> list[Location]: ...

    def directory(self, path: str) -> Location: ...

    def mount(self, loc: Location, writable: bool) -> Location: ...

    def inspect(self, loc: Location) -> Location: ...

    def search(self, loc: Location) -> Location: ...

    def unmount(self, loc: Location) -> Location: ...

    def release_all(self) -> None: ...


class NetworkSource(Protocol):
    def interfaces(self) -> list[Interface]: ...

    def renew(self, name: str) -> None:
        """Ask DHCP again on interface ``name``; returns at once (the address comes later)."""
        ...

    def set_static(self, settings: StaticAddress) -> None:
        """Give one interface a static address, gateway and DNS servers (DHCP off on it)."""
        ...

    def use_dhcp(self, name: str) -> None:
        """Give interface ``name`` back to DHCP after a static address."""
        ...


class SystemNetwork:
    """Interfaces through iproute2 (:mod:`recovery.devices.network`)."""

    def interfaces(self) -> list[Interface]:
        from recovery.devices import network

        return network.interfaces()

    def renew(self, name: str) -> None:
        from recovery.devices import network

        network.renew(name)

    def set_static(self, settings: StaticAddress) -> None:
        from recovery.devices import network

        network.set_static(settings)

    def use_dhcp(self, name: str) -> None:
        from recovery.devices import network

        network.use_dhcp(name)


class Machine(Protocol):
    def power_off(self) -> None: ...

    def reboot(self) -> None: ...

    def shell(self) -> list[str]:
        """The command that runs an interactive shell."""
        ...


AppEngine = EngineApi[ShownPlan, ShownPlan, ShownPlan]
"""The engine as the screens use it: a plan is something to show and hand back."""


class SystemDisks:
    """Disks through :mod:`recovery.devices.disks` (udev, or sysfs and blkid without it)."""

    def list_disks(self) -> list[Disk]:
        try:
            from recovery.devices import disks
        except ImportError as e:
            raise DeviceError(
                f"Disk detection is not available in this build ({e}). Use the command line."
            ) from e
        return list(disks.list_disks())

    def watch(self, changed: Callable[[], None]) -> Callable[[], None] | None:
        try:
            from recovery.devices.disks import DiskWatcher
        except ImportError:
            return None

        def on_event(*_args: Any, **_kwargs: Any) -> None:
            changed()

        try:
            watcher = DiskWatcher(on_event)
            watcher.start()
        except (RecoveryError, OSError):
            return None
        stop: Callable[[], None] = watcher.stop
        return stop


class SystemMachine:
    """Power and shell through systemd, or the classic commands when it is not running."""

    def power_off(self) -> None:
        self._run("poweroff")

    def reboot(self) -> None:
        self._run("reboot")

    def _run(self, what: str) -> None:
        if shutil.which("systemctl") and os.path.isdir("/run/systemd/system"):
            cmd = ["systemctl", what]
        else:
            cmd = [what]
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise RecoveryError(f"'{' '.join(cmd)}' failed: {r.stderr.strip()}. Try again.")

    def shell(self) -> list[str]:
        return [os.environ.get("SHELL") or "/bin/bash", "-l"]


@dataclass
class Backends:
    disks: DiskSource
    engine: EngineApi[Any, Any, Any]
    """:mod:`recovery.engine.api` in production. Its plan types are left open here: the app
    treats a plan as a :class:`ShownPlan` and gives it back to the engine that made it."""
    locations: LocationFinder
    machine: Machine
    clock: Callable[[], float] = time.monotonic
    """Seconds, for rates and time left; tests pass a frozen clock."""
    privileged: bool = True
    """Running as root: without it disks can be listed but not read or written."""
    system_partitions: Callable[[str], list[int]] | None = None
    """The engine's answer to "which partitions of this disk are the system" (it looks inside
    the file systems); None leaves the TUI's guess from partition types alone."""
    network: NetworkSource | None = None
    """The network interfaces, for the title bar's address and the Network screen; None shows
    neither (tests that are not about the network)."""

    @classmethod
    def system(cls) -> Backends:
        from recovery.engine import api

        engine: EngineApi[BackupPlan, RestorePlan | ClonezillaRestorePlan, ClonePlan] = api
        return cls(
            SystemDisks(),
            engine,
            Locations(),
            SystemMachine(),
            privileged=os.geteuid() == 0,
            system_partitions=engine_system_partitions,
            network=SystemNetwork(),
        )


def engine_system_partitions(disk: str) -> list[int]:
    from recovery.engine.system import system_partitions

    return system_partitions([disk])
