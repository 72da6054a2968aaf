"""The firmware of the machine we run on: is it UEFI, what boot entries does it hold, add one.

Called by :mod:`recovery.engine.bootentry`. ``efibootmgr`` is the one program used (described
in :data:`~recovery.devices.tools.TOOLS`); its output becomes plain data in
:mod:`recovery.core.bootentries`.
"""

from __future__ import annotations

import os

from recovery.core.bootentries import BootEntry, parse_efibootmgr
from recovery.devices import tools

EFI_DIR = "/sys/firmware/efi"


def is_uefi(root: str = EFI_DIR) -> bool:
    """Whether this system was started by UEFI firmware (the kernel then has ``root``)."""
    return os.path.isdir(root)


def boot_entries() -> list[BootEntry] | None:
    """The firmware's boot entries; None when they cannot be read (no efibootmgr, no efivars)."""
    if not tools.available("efibootmgr"):
        return None
    code, out = tools.run(["efibootmgr", "-v"], timeout=60)
    if code != 0:
        return None
    return parse_efibootmgr(out)


def add_boot_entry(disk: str, partition: int, label: str, loader: str) -> tuple[int, str]:
    """``efibootmgr --create``: a new entry, first in the boot order; (exit status, output)."""
    return tools.run(
        [
            "efibootmgr",
            "--create",
            "--disk",
            disk,
            "--part",
            str(partition),
            "--label",
            label,
            "--loader",
            loader,
        ],
        timeout=60,
    )
