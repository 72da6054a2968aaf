"""NTFS: geometry and used clusters, read from the volume's own cluster bitmap ($Bitmap).

Called through the registry in :mod:`recovery.filesystems.base` (``open_filesystem``) by backup
and clone; ``detect_encrypted`` is for callers that must say why a volume (BitLocker, LUKS) is
imaged sector by sector. Promises:

- ``Ntfs.open`` reads the boot sector, MFT records 0 ($MFT), 3 ($Volume), 5 (the root directory)
  and 6 ($Bitmap), their extension records when an attribute list points there, and the root
  directory's index. Every field is checked before it is used, so damaged or hostile metadata
  raises :class:`DamagedFileSystem` naming what is wrong (never IndexError, struct.error, a huge
  allocation or an endless loop); every read is bounded by the volume, by Windows' own limits or
  by a fixed cap. ``used_extents`` reads the bitmap in 1 MiB pieces, so memory stays flat.
- ``used_extents`` yields byte ranges relative to the partition start, sorted and merged: every
  cluster the bitmap marks in use (cluster 0 holds the boot sector), and the backup boot sector
  (the sector after the last one NTFS counts, normally the partition's last sector).
- Unless ``keep_system_files`` is set, the clusters of the unnamed data of ``pagefile.sys``,
  ``hiberfil.sys`` and ``swapfile.sys`` in the root directory are left out: Windows recreates
  them, and they are often the largest files on a system volume. Two exceptions keep a restore
  from resuming the wrong session: a hiberfil.sys that holds a hibernated session is stored
  whole, and of an unused one the first cluster (its header, "not hibernated") is stored, so a
  restore overwrites whatever header the target disk has there. Clusters these files would share
  with the file system's own metadata are never left out.
- ``geometry.notes`` tells a person, in plain words, about a hibernated Windows or one shut down
  with Fast Startup (hiberfil.sys header), a volume marked dirty, and what was left out.

Why the root directory index and not a scan of the whole MFT: the three files live in the root
directory, whose index is a few blocks long, so finding them costs a handful of reads whatever
the number of files; a scan of the MFT would read every record (gigabytes on a large volume).
Index entries are checked against the MFT record they point to (in use, parent is the root,
same name, same sequence number), so a stale entry cannot make us drop a live file's clusters.
A damaged root directory only costs the exclusion (a note says so); it is not an error.

The home in parts, each readable on its own: :mod:`.layout` (boot sector, MFT records and
attributes, the on-disk constants), :mod:`.volume` (records by number, attribute lists, streams),
:mod:`.windows` (pagefile.sys, hiberfil.sys, swapfile.sys and hibernation), :mod:`.reader` (the
registered :class:`Ntfs` reader), :mod:`.kind` (what the engine does with an NTFS volume: grow
unless Windows is hibernated, check, fix a moved boot sector, mount with ntfs-3g, list the root).
This package re-exports what callers and tests use.
"""

from recovery.filesystems.encrypted import detect_encrypted
from recovery.filesystems.ntfs import kind
from recovery.filesystems.ntfs.layout import BootSector, decode_runs, parse_boot_sector
from recovery.filesystems.ntfs.reader import Ntfs
from recovery.filesystems.ntfs.volume import Volume
from recovery.filesystems.ntfs.windows import (
    SystemFile,
    find_system_files,
    overlaps,
    subtract_holes,
)

__all__ = [
    "BootSector",
    "Ntfs",
    "SystemFile",
    "Volume",
    "decode_runs",
    "detect_encrypted",
    "find_system_files",
    "kind",
    "overlaps",
    "parse_boot_sector",
    "subtract_holes",
]
