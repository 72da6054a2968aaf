"""UEFI boot entries: which of the firmware's entries point at a disk's EFI system partition,
and which loader a new entry should start. Pure: the device layer (devices/firmware.py) runs
``efibootmgr`` and lists the partition's ``EFI`` folder; the engine (engine/bootentry.py)
decides with these functions whether a restore or clone offers a new entry.

Why: a UEFI machine boots what its NVRAM entries name (a partition GUID and a file). A disk
restored into a new machine, or after the motherboard was replaced, has no entry there; the
firmware then only tries the removable-media path ``\\EFI\\BOOT\\BOOTX64.EFI``, which Windows'
boot manager and most Linux installs do not rely on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from recovery.core.system import ESP
from recovery.core.table import Entry, Table

ESP_MBR_TYPES = {"ef", "0xef"}

_ENTRY = re.compile(r"^Boot([0-9A-Fa-f]{4})(\*?)\s+(.*)$")
_HD = re.compile(r"HD\((\d+),(GPT|MBR),([^,()]+)", re.IGNORECASE)
_FILE = re.compile(r"(?<![A-Za-z])File\(([^()]*)\)", re.IGNORECASE)


@dataclass(frozen=True)
class BootEntry:
    number: str
    """Four hex digits, as ``Boot0003``."""
    label: str
    active: bool
    partition: int | None
    """The partition number the entry's device path names, or None (firmware apps, network)."""
    scheme: str | None
    """``GPT`` or ``MBR``."""
    signature: str | None
    """The partition GUID (GPT, upper case) or the disk signature (MBR, ``0x`` and 8 lower-case
    hex digits) the entry names."""
    loader: str | None


@dataclass(frozen=True)
class BootEntryOffer:
    """A boot entry a restore or clone offers to add for the target's EFI system partition."""

    partition: int
    signature: str
    scheme: str

    def describe(self, target: str) -> str:
        return (
            f"add a UEFI boot entry for partition {self.partition} (EFI system partition) of "
            f"{target}: no boot entry of this machine points at it (--no-boot-entry: don't)"
        )


def parse_efibootmgr(text: str) -> list[BootEntry]:
    """The ``BootXXXX`` lines of ``efibootmgr -v``; other lines and anything malformed are
    skipped (the text comes from a program, but is read defensively)."""
    out = []
    for line in text.splitlines():
        m = _ENTRY.match(line.strip())
        if m is None:
            continue
        number, star, rest = m.groups()
        label, _, path = rest.partition("\t")
        if not path:  # older efibootmgr: label and path separated by spaces only
            hd_at = rest.find("HD(")
            label, path = (rest[:hd_at], rest[hd_at:]) if hd_at >= 0 else (rest, "")
        hd = _HD.search(path)
        file = _FILE.search(path)
        partition = scheme = signature = None
        if hd is not None:
            try:
                partition = int(hd.group(1))
            except ValueError:
                partition = None
            scheme = hd.group(2).upper()
            signature = _signature(scheme, hd.group(3))
        out.append(
            BootEntry(
                number.upper(),
                label.strip(),
                star == "*",
                partition,
                scheme,
                signature,
                file.group(1) if file else None,
            )
        )
    return out


def _signature(scheme: str, text: str) -> str:
    text = text.strip()
    if scheme == "GPT":
        return text.upper()
    try:
        return f"0x{int(text, 16):08x}"
    except ValueError:
        return text.lower()


def esp_of(table: Table) -> Entry | None:
    """The table's EFI system partition (the first, if several)."""
    for e in table.data_entries:
        t = e.type.lower()
        if (table.label == "gpt" and t == ESP) or (table.label == "dos" and t in ESP_MBR_TYPES):
            return e
    return None


def offer_for(table: Table, entries: list[BootEntry]) -> BootEntryOffer | None:
    """An entry to add for ``table``'s EFI system partition when none of ``entries`` points at
    it; None when it has none, or one points at it already."""
    esp = esp_of(table)
    if esp is None:
        return None
    if table.label == "gpt":
        if not esp.uuid:
            return None
        scheme, signature = "GPT", esp.uuid.upper()
    else:
        if not table.id:
            return None
        scheme, signature = "MBR", _signature("MBR", table.id)
    for e in entries:
        if e.scheme != scheme or e.signature != signature:
            continue
        if scheme == "GPT" or e.partition == esp.number:
            return None
    return BootEntryOffer(esp.number, signature, scheme)


# Loaders by folder (lower case) under \EFI, in the order tried within a folder.
_LOADERS = ("shimx64.efi", "grubx64.efi", "bootmgfw.efi", "systemd-bootx64.efi")
_LABELS = {"microsoft": "Windows Boot Manager"}


def choose_loader(listing: Mapping[str, set[str]]) -> tuple[str, str] | None:
    """``(label, loader path)`` for a new entry, from what the ESP's ``\\EFI`` holds:
    ``listing`` maps each folder under ``\\EFI`` (lower case) to its file names (lower case;
    for ``microsoft``, the names in ``Microsoft\\Boot``). An operating system's own loader
    first (Windows, then any other vendor folder, shim before GRUB), the removable-media path
    ``\\EFI\\BOOT\\BOOTX64.EFI`` last; None when there is no loader at all."""
    if "bootmgfw.efi" in listing.get("microsoft", set()):
        return _LABELS["microsoft"], "\\EFI\\Microsoft\\Boot\\bootmgfw.efi"
    for folder in sorted(listing):
        if folder in ("boot", "microsoft"):
            continue
        for loader in _LOADERS:
            if loader in listing[folder]:
                return folder, f"\\EFI\\{folder}\\{loader}"
    if "bootx64.efi" in listing.get("boot", set()):
        return "UEFI OS", "\\EFI\\BOOT\\BOOTX64.EFI"
    return None
