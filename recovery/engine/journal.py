"""Crashed Linux: a file system whose journal needs recovery is imaged as if it was replayed.

Called by :mod:`recovery.engine.sources` while planning a backup or clone. The journal of an
ext3/ext4 that was not shut down cleanly (or is mounted now) holds committed work that is not
yet in place, so its block bitmaps cannot be trusted until it is replayed. Instead of imaging
every block, the file system's own replay (``e2fsck -E journal_only``, :meth:`Kind.replay_journal`)
runs on a copy-on-write view of the partition (:class:`~recovery.devices.cowview.CowView`):
the source is only read, and what replay writes is kept in memory as an
:class:`~recovery.core.overlay.Overlay` that the backup or clone then reads the partition
through. The image holds the replayed file system: it restores clean, with what the journal
committed. When replay cannot run (no FUSE, no e2fsck, more written than the view holds), the
partition is imaged every block as before, and the note says why.
"""

from __future__ import annotations

from dataclasses import dataclass

from recovery.core.overlay import Overlay
from recovery.core.units import human_size
from recovery.devices.cowview import OVERLAY_LIMIT, CowView
from recovery.devices.tools import unavailable
from recovery.errors import DeviceError
from recovery.filesystems.base import kind_of


@dataclass(frozen=True)
class Replayed:
    overlay: Overlay | None
    """What replay wrote, or None when it could not run."""
    note: str
    """For the plan and the result: that the journal was replayed, or why not."""


def replay(disk: str, number: int | None, start: int, size: int, fstype: str | None) -> Replayed:
    """Replay the journal of the file system at ``[start, start + size)`` of ``disk`` into
    memory, writing nothing to ``disk``."""
    kind = kind_of(fstype)
    where = f"partition {number}" if number else disk
    fallback = f"{where}: its {fstype} journal needs recovery and could not be replayed"
    missing = unavailable(kind.replay_journal_needs())
    if missing:
        return Replayed(None, f"{fallback} ({missing[0]}): every block is imaged")
    try:
        with CowView(disk, start, size) as view:
            problem = kind.replay_journal(view.path)
    except (DeviceError, OSError) as e:
        text = e.message if isinstance(e, DeviceError) else str(e)
        return Replayed(None, f"{fallback} ({text}): every block is imaged")
    if view.overflowed:
        problem = f"replay wrote more than {human_size(OVERLAY_LIMIT)}"
    if problem:
        return Replayed(None, f"{fallback} ({problem}): every block is imaged")
    overlay = view.overlay()
    return Replayed(
        overlay,
        f"{where}: the {fstype} journal needed recovery (not shut down cleanly, or mounted): "
        f"it was replayed into the image ({human_size(overlay.size)} replayed in memory; "
        f"nothing was written to {disk}), so the image holds its used blocks only",
    )
