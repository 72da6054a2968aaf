"""A UEFI boot entry for a restored or cloned disk's EFI system partition, when it lacks one.

Called by :mod:`recovery.engine.restore` and :mod:`recovery.engine.clone`: :func:`plan_offer`
while planning (only when this machine itself runs on UEFI and the table written has an EFI
system partition that no firmware entry points at), :func:`add_entry` after the data is written
and checked. The loader the entry starts is chosen from what the written partition holds
(:func:`recovery.core.bootentries.choose_loader`). Adding an entry never fails a restore: what
happened is one line of the result.
"""

from __future__ import annotations

from recovery.core.bootentries import BootEntryOffer, choose_loader, esp_of, offer_for
from recovery.core.table import Table, partition_node
from recovery.devices import firmware
from recovery.devices.tools import Need, require
from recovery.filesystems.base import kind_of

NEEDS = (
    Need("efibootmgr", "to add a UEFI boot entry for the EFI system partition"),
    Need("mdir", "to find the boot loader on the EFI system partition"),
)


def plan_offer(
    table: Table | None, wanted: bool = True
) -> tuple[BootEntryOffer | None, str | None]:
    """``(offer, note)``: the entry to add, or None; a note when it cannot be known."""
    if not wanted or table is None or not firmware.is_uefi() or esp_of(table) is None:
        return None, None
    entries = firmware.boot_entries()
    if entries is None:
        return None, (
            "this machine runs on UEFI but its boot entries cannot be read (is efibootmgr "
            "installed?): if the restored system does not start, add an entry for its EFI "
            "system partition in the firmware's setup"
        )
    offer = offer_for(table, entries)
    if offer is not None:
        require(NEEDS)
    return offer, None


def add_entry(target: str, offer: BootEntryOffer) -> str:
    """Add the entry offered (unless one appeared meanwhile); one line saying what happened."""
    node = partition_node(target, offer.partition)
    fat = kind_of("vfat")
    listing = {}
    for folder in fat.names_in(node, "/EFI"):
        where = "/EFI/Microsoft/Boot" if folder == "microsoft" else f"/EFI/{folder}"
        listing[folder] = fat.names_in(node, where)
    chosen = choose_loader(listing)
    if chosen is None:
        return f"note: no UEFI boot entry added: {node} holds no boot loader under \\EFI"
    label, loader = chosen
    code, out = firmware.add_boot_entry(target, offer.partition, label, loader)
    if code != 0:
        last = out.splitlines()[-1] if out else f"exit code {code}"
        return (
            f"note: the UEFI boot entry could not be added ({last}): add it in the firmware's setup"
        )
    return f"{node}: UEFI boot entry '{label}' added, starting {loader}"
