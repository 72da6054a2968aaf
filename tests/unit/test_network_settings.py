"""A static address for the live system (issue 14): what the Network screen's fields become.

The typed fields are checked with one line per wrong field, and the systemd-networkd file they
make is the one that gives the interface its address (checked inside the live system by
tests/boot/test_network_live.py). The device side, run here with stand-in ``ip`` and
``systemctl`` programs that record their arguments, writes the file in one rename, removes it
for DHCP and restarts networkd."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from recovery.core.network import (
    InvalidSettings,
    StaticAddress,
    check_static,
    network_file_name,
    network_file_text,
)
from recovery.devices import network
from recovery.devices.network import Interface
from recovery.errors import DeviceError


def problems(address: str, gateway: str = "", dns: str = "", name: str = "ens3") -> list[str]:
    with pytest.raises(InvalidSettings) as e:
        check_static(name, address, gateway, dns)
    return e.value.problems


def test_a_full_static_setting_becomes_its_networkd_file() -> None:
    settings = check_static(
        "ens3", " 10.0.2.50/24 ", "10.0.2.2", "10.0.2.3, 1.1.1.1 2606:4700::1111"
    )
    assert settings == StaticAddress(
        "ens3",
        ipaddress.ip_interface("10.0.2.50/24"),
        ipaddress.ip_address("10.0.2.2"),
        tuple(ipaddress.ip_address(a) for a in ("10.0.2.3", "1.1.1.1", "2606:4700::1111")),
    )
    text = network_file_text(settings)
    body = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert body == [
        "[Match]",
        "Name=ens3",
        "[Link]",
        "RequiredForOnline=no",
        "[Network]",
        "DHCP=no",
        "IPv6AcceptRA=yes",
        "LinkLocalAddressing=ipv6",
        "Address=10.0.2.50/24",
        "Gateway=10.0.2.2",
        "DNS=10.0.2.3",
        "DNS=1.1.1.1",
        "DNS=2606:4700::1111",
    ]
    # Sorts before the ISO's DHCP file, so networkd takes it for this link.
    assert network_file_name("ens3") < "80-recovery-wired.network"
    assert network_file_name("ens3").endswith(".network")


def test_gateway_and_dns_may_be_left_empty() -> None:
    settings = check_static("enp1s0", "192.168.7.9/16", "", "")
    text = network_file_text(settings)
    assert "Address=192.168.7.9/16" in text
    assert "Gateway=" not in text and "DNS=" not in text
    v6 = check_static("enp1s0", "fd00::5/64", "fe80::1", "fd00::1")
    assert "Gateway=fe80::1" in network_file_text(v6)  # a link-local router is on the link


def test_each_wrong_field_is_one_line_naming_it() -> None:
    assert problems("") == [
        "Address: give the address with its prefix length, e.g. 192.168.1.20/24."
    ]
    assert problems("10.0.2.50") == ["Address: 10.0.2.50 needs a prefix length, e.g. 10.0.2.50/24."]
    assert problems("10.0.2.500/24", "10.0.2.x", "10.0.2.3 dns.example") == [
        "Address: 10.0.2.500/24 is not an address with a prefix length (a.b.c.d/nn).",
        "Gateway: 10.0.2.x is not an IP address (for example 192.168.1.1).",
        "DNS: 'dns.example' is not an IP address (for example 10.0.2.3).",
    ]
    assert problems("10.0.2.0/24") == [
        "Address: 10.0.2.0 is the network address of 10.0.2.0/24; pick a host in it."
    ]
    assert problems("10.0.2.255/24") == [
        "Address: 10.0.2.255 is the broadcast address of 10.0.2.0/24; pick a host in it."
    ]
    assert problems("127.0.0.5/8") == [
        "Address: 127.0.0.5 cannot be a machine's address on a network."
    ]
    assert problems("10.0.2.50/24", "10.0.3.1") == [
        "Gateway: 10.0.3.1 is not in 10.0.2.0/24, the address's network."
    ]
    assert problems("10.0.2.50/24", "10.0.2.50") == [
        "Gateway: 10.0.2.50 is this machine's own address."
    ]
    assert problems("10.0.2.50/24", "fd00::1") == ["Gateway: fd00::1 is not an IPv4 address."]
    assert problems("10.0.2.50/24", dns="0.0.0.0") == ["DNS: 0.0.0.0 cannot be a DNS server."]
    assert problems("10.0.2.50/33") == [
        "Address: 10.0.2.50/33 is not an address with a prefix length (a.b.c.d/nn)."
    ]
    assert problems("10.0.2.50/24", name="../etc") == [
        "Interface: '../etc' is not a network interface name."
    ]
    # A /31 or /32 has no network or broadcast address to refuse.
    assert check_static("ens3", "10.0.2.0/31", "", "").address.ip == ipaddress.ip_address(
        "10.0.2.0"
    )


@pytest.fixture
def recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``ip`` and ``systemctl`` that append their arguments to a log; one interface, ens3."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "ran.log"
    for name in ("ip", "systemctl"):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\n')
        script.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(
        network, "interfaces", lambda: [Interface("ens3", "52:54:00:12:34:56", True)]
    )
    return log


def test_static_file_is_written_then_networkd_restarted(tmp_path: Path, recorded: Path) -> None:
    folder = tmp_path / "run-networkd"
    settings = check_static("ens3", "10.0.2.50/24", "10.0.2.2", "10.0.2.3")
    network.set_static(settings, folder)
    written = folder / "10-recovery-static-ens3.network"
    assert written.read_text() == network_file_text(settings)
    assert sorted(p.name for p in folder.iterdir()) == [written.name]  # no temporary left
    assert network.static_interfaces(folder) == ["ens3"]
    assert recorded.read_text().splitlines() == [
        "ip address flush dev ens3 scope global",
        "systemctl restart systemd-networkd.service",
    ]
    network.use_dhcp("ens3", folder)
    assert not written.exists() and network.static_interfaces(folder) == []
    assert recorded.read_text().splitlines()[-1] == "systemctl restart systemd-networkd.service"


def test_an_unknown_interface_is_refused_before_anything_is_written(
    tmp_path: Path, recorded: Path
) -> None:
    folder = tmp_path / "run-networkd"
    with pytest.raises(DeviceError, match="no network interface named enp9s0"):
        network.set_static(check_static("enp9s0", "10.0.2.50/24", "", ""), folder)
    assert not folder.exists() and not recorded.exists()
