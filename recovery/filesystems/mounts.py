"""How each file system is mounted read-only, to read its files: by the image view
(:mod:`recovery.engine.view`) and by file backup (:mod:`recovery.engine.filebackup`).

Plain data, no imports: a file backup's start-up does not load the view's machinery.
"""

from __future__ import annotations

# fstype (as blkid names it) -> (how, options). "kernel": `mount -t FSTYPE -o OPTIONS` on a
# read-only loop device; "ntfs-3g" / "fusefat": that FUSE driver on the pNimg file itself. No
# option here replays a journal or clears a hibernation: the image must not change, and the
# kernel refuses to write through a read-only loop device anyway.
MOUNTS: dict[str, tuple[tuple[str, str], ...]] = {
    "ext2": (("kernel", "ro,noload"),),
    "ext3": (("kernel", "ro,noload"),),
    "ext4": (("kernel", "ro,noload"),),
    "xfs": (("kernel", "ro,norecovery"),),
    "btrfs": (("kernel", "ro,rescue=nologreplay"),),
    # ntfs-3g mounts a hibernated or unclean volume read-only; remove_hiberfile is never used.
    "ntfs": (("ntfs-3g", "ro"), ("ntfs-3g", "ro,norecover")),
    # The kernel's vfat where this kernel has it, else a FUSE FAT driver.
    "vfat": (("kernel", "ro,shortname=mixed,utf8"), ("fusefat", "ro")),
}
NO_FILES = {"swap": "a swap area holds no files"}
