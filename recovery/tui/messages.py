"""Messages the app's workers post to its screens (Textual messages are thread-safe to post)."""

from __future__ import annotations

from textual.message import Message

from recovery.devices.model import Disk
from recovery.devices.network import Interface
from recovery.tui.progress import ProgressSnapshot


class DisksUpdated(Message):
    """The list of disks changed (hot-plug, or after work that rewrote a disk)."""

    def __init__(self, disks: list[Disk]) -> None:
        super().__init__()
        self.disks = disks


class NetworkUpdated(Message):
    """The network interfaces as read now (the app reads them every few seconds)."""

    def __init__(self, interfaces: list[Interface]) -> None:
        super().__init__()
        self.interfaces = interfaces


class ProgressUpdate(Message):
    def __init__(self, snapshot: ProgressSnapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class WorkFinished(Message):
    """A worker's job ended well; ``result`` is what the job returned (the screen that ran the
    job knows its type and narrows it)."""

    def __init__(self, tag: str, result: object) -> None:
        super().__init__()
        self.tag = tag
        """Which job: a screen may run several kinds."""
        self.result = result


class WorkFailed(Message):
    """A worker's job raised; the screen shows ``error`` in the error dialog."""

    def __init__(self, tag: str, error: BaseException) -> None:
        super().__init__()
        self.tag = tag
        self.error = error
