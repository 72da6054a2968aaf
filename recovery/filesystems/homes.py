"""The file system homes: each module under recovery.filesystems that registers readers and
kinds, with the blkid TYPEs whose :class:`~recovery.filesystems.base.Kind` it registers.

Importing :mod:`recovery.filesystems.load_all` imports every home (the registry's only list of
modules); :func:`recovery.filesystems.base.kind_of` imports only the home of the TYPE it is
asked about (a restore of an ext4 and an EFI partition needs two of the ten: the other eight
took 10-14 ms of every command's start), and every home for a TYPE none claims.
tests/unit/test_fs_registry.py holds this list to what the homes register.
"""

HOMES = {
    "ext4": ("ext2", "ext3", "ext4"),
    "fat": ("vfat",),
    "swap": ("swap",),
    "ntfs": ("ntfs",),
    "xfs": ("xfs",),
    "btrfs": ("btrfs",),
    "exfat": ("exfat",),
    "encrypted": ("BitLocker", "crypto_LUKS"),
    "lvm": ("LVM2_member",),
    "md": ("linux_raid_member",),
}
"""Home module (under recovery.filesystems) -> the blkid TYPEs whose Kind it registers."""

_BY_TYPE = {fstype: home for home, fstypes in HOMES.items() for fstype in fstypes}


def home_of(fstype: str) -> str | None:
    """The home module registering blkid's TYPE ``fstype``; None when no home claims it."""
    return _BY_TYPE.get(fstype)
