"""Encrypted volumes (BitLocker, LUKS): recognised, never read.

Called by the imaging engine (:mod:`recovery.engine.sources`) to say why a volume is imaged
sector by sector, by the NTFS reader to say why a BitLocker volume is not NTFS, and through the
registry of :mod:`recovery.filesystems.base` (:class:`EncryptedKind`) by system-partition
detection: which blocks of such a volume are in use, and what it holds, cannot be read without
the key, so it is imaged whole, never grown, checked or mounted, and on a system disk it counts
as the system (a BitLocker C:, a LUKS root).
"""

from __future__ import annotations

from recovery.filesystems.base import BlockSource, Kind, register_kind

BITLOCKER_OEM = b"-FVE-FS-"
BITLOCKER_TOGO_OEM = b"MSWIN4.1"
# The GUID BitLocker To Go writes at offset 424 of its FAT boot sector (as stored on disk).
BITLOCKER_TOGO_GUID = bytes.fromhex("3bd66749292ed84a8399f6a339e3d001")
LUKS_MAGIC = b"LUKS\xba\xbe"


def detect_encrypted(source: BlockSource) -> str | None:
    """A note for a person when ``source`` holds an encrypted volume (BitLocker, LUKS), else None.

    Such volumes are imaged sector by sector: which of their blocks are in use cannot be read
    without the key. blkid names BitLocker only when its metadata block is intact too; the
    volume header alone is enough to know that the allocation cannot be read.
    """
    head = source.pread(0, 512)
    if head[3:11] == BITLOCKER_OEM or (
        head[3:11] == BITLOCKER_TOGO_OEM and head[424:440] == BITLOCKER_TOGO_GUID
    ):
        return (
            "BitLocker-encrypted volume: imaged sector by sector because its allocation cannot "
            "be read without the key"
        )
    if head[:6] == LUKS_MAGIC:
        return (
            "LUKS-encrypted volume: imaged sector by sector because its allocation cannot be "
            "read without the key"
        )
    return None


class EncryptedKind(Kind):
    encrypted = True


for _name in ("BitLocker", "crypto_LUKS"):
    register_kind(EncryptedKind(_name))
