"""UEFI boot entries after a restore or clone (issue 15, part 4): the planning logic.

This machine boots BIOS-style (no /sys/firmware/efi, no efivars), so ``efibootmgr --create``
cannot run here; what is tested is everything before it: reading ``efibootmgr -v``, deciding
whether an entry points at the target's EFI system partition, which loader a new entry starts,
and what restore and clone planning offer (with the firmware answers supplied), plus a fuzzer
for the parser.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recovery.core.bootentries import (
    BootEntryOffer,
    choose_loader,
    esp_of,
    offer_for,
    parse_efibootmgr,
)
from recovery.core.table import Entry, Table
from recovery.devices import firmware
from recovery.engine import bootentry

ESP_GUID = "0B5C3A2E-1F2D-4E6A-9C55-6C3B0E2E7A11"
OUTPUT = (
    "BootCurrent: 0001\n"
    "Timeout: 1 seconds\n"
    "BootOrder: 0001,0000,0002\n"
    "Boot0000* UiApp\tFvVol(7cb8bdc9-f8eb-4f34-aaea-3ee4af6516a1)"
    "/FvFile(462caa21-7614-4503-836e-8ab6f4662331)\n"
    f"Boot0001* debian\tHD(1,GPT,{ESP_GUID.lower()},0x800,0x100000)"
    "/File(\\EFI\\debian\\shimx64.efi)\n"
    "Boot0002  Windows Boot Manager\tHD(2,MBR,0x5eedbeef,0x800,0x32000)"
    "/File(\\EFI\\Microsoft\\Boot\\bootmgfw.efi)WINDOWS.x.\n"
    "Boot0003* UEFI PXEv4 (MAC:525400123456)\tPciRoot(0x0)/Pci(0x3,0x0)"
    "/MAC(525400123456,1)/IPv4(0.0.0.00.0.0.0,0,0)N.....YM....R,Y.\n"
)


def gpt(esp_uuid: str | None = ESP_GUID) -> Table:
    return Table(
        "gpt",
        "4E1B2C3D-0000-4000-8000-000000000001",
        512,
        2048,
        1048542,
        (
            Entry(1, 2048, 204800, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", esp_uuid, "EFI"),
            Entry(2, 206848, 800000, "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "AB-CD", "root"),
        ),
    )


def dos(type_: str = "ef") -> Table:
    return Table(
        "dos",
        "0x5eedbeef",
        512,
        None,
        None,
        (Entry(1, 2048, 204800, "83"), Entry(2, 206848, 204800, type_)),
    )


def test_parse_efibootmgr() -> None:
    entries = parse_efibootmgr(OUTPUT)
    assert [e.number for e in entries] == ["0000", "0001", "0002", "0003"]
    ui, debian, windows, pxe = entries
    assert ui.partition is None and ui.loader is None and ui.active
    assert (debian.label, debian.partition, debian.scheme, debian.signature) == (
        "debian",
        1,
        "GPT",
        ESP_GUID,
    )
    assert debian.loader == "\\EFI\\debian\\shimx64.efi"
    assert not windows.active
    assert (windows.scheme, windows.signature, windows.partition) == ("MBR", "0x5eedbeef", 2)
    assert pxe.label.startswith("UEFI PXEv4") and pxe.partition is None


def test_offer_only_when_no_entry_points_at_the_esp() -> None:
    entries = parse_efibootmgr(OUTPUT)
    assert esp_of(gpt()) is not None and esp_of(gpt()).number == 1  # type: ignore[union-attr]
    assert offer_for(gpt(), entries) is None  # Boot0001 points at it (case does not matter)
    other = "11111111-2222-4333-8444-555555555555"
    assert offer_for(gpt(other), entries) == BootEntryOffer(1, other, "GPT")
    assert offer_for(gpt(other), []) == BootEntryOffer(1, other, "GPT")
    # MBR: the disk signature and the partition number.
    assert offer_for(dos(), entries) is None  # Boot0002: 0x5eedbeef, partition 2
    moved = Table("dos", "0x0badf00d", 512, None, None, dos().entries)
    assert offer_for(moved, entries) == BootEntryOffer(2, "0x0badf00d", "MBR")
    # No EFI system partition: nothing to offer (a BIOS-booting disk).
    assert offer_for(dos("83"), []) is None
    no_esp = Table("gpt", "X", 512, 34, 1000, gpt().entries[1:])
    assert offer_for(no_esp, []) is None


def test_choose_loader() -> None:
    assert choose_loader({"microsoft": {"bootmgfw.efi", "bcd"}, "boot": {"bootx64.efi"}}) == (
        "Windows Boot Manager",
        "\\EFI\\Microsoft\\Boot\\bootmgfw.efi",
    )
    assert choose_loader({"debian": {"grubx64.efi", "shimx64.efi"}, "boot": {"bootx64.efi"}}) == (
        "debian",
        "\\EFI\\debian\\shimx64.efi",
    )
    assert choose_loader({"boot": {"bootx64.efi"}}) == ("UEFI OS", "\\EFI\\BOOT\\BOOTX64.EFI")
    assert choose_loader({"boot": set(), "empty": {"readme.txt"}}) is None
    assert choose_loader({}) is None


def test_plan_offer_asks_the_firmware_only_on_uefi(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[bool] = []

    def entries() -> list:  # type: ignore[type-arg]
        asked.append(True)
        return parse_efibootmgr(OUTPUT)

    monkeypatch.setattr(firmware, "boot_entries", entries)
    monkeypatch.setattr(firmware, "is_uefi", lambda: False)
    assert bootentry.plan_offer(gpt("11111111-2222-4333-8444-555555555555")) == (None, None)
    assert not asked  # BIOS: the firmware's entries are not even read
    monkeypatch.setattr(firmware, "is_uefi", lambda: True)
    other = "11111111-2222-4333-8444-555555555555"
    offer, note = bootentry.plan_offer(gpt(other))
    assert offer == BootEntryOffer(1, other, "GPT") and note is None
    assert "no boot entry of this machine points at it" in offer.describe("/dev/sdb")
    assert bootentry.plan_offer(gpt(other), wanted=False) == (None, None)  # --no-boot-entry
    assert bootentry.plan_offer(gpt()) == (None, None)  # an entry points at it already
    assert bootentry.plan_offer(None) == (None, None)  # restoring into an existing table
    monkeypatch.setattr(firmware, "boot_entries", lambda: None)
    offer, note = bootentry.plan_offer(gpt(other))
    assert offer is None and note is not None and "efibootmgr" in note


def test_is_uefi_here_is_false(tmp_path: Path) -> None:
    # This machine boots BIOS-style: the real efibootmgr call cannot be exercised here.
    assert firmware.is_uefi(str(tmp_path / "no-such-dir")) is False
    assert firmware.is_uefi(str(tmp_path)) is True


@given(st.text(max_size=2000))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fuzz_parse_efibootmgr(text: str) -> None:
    for e in parse_efibootmgr(text):
        assert len(e.number) == 4
        assert e.partition is None or e.partition >= 0


@given(st.lists(st.sampled_from(OUTPUT.splitlines()), max_size=8), st.binary(max_size=64))
@settings(max_examples=200, deadline=None)
def test_fuzz_parse_efibootmgr_damaged_lines(lines: list[str], junk: bytes) -> None:
    text = "\n".join(lines)
    cut = len(junk) % (len(text) + 1)
    parse_efibootmgr(text[:cut] + junk.decode("latin-1") + text[cut:])
