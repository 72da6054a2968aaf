"""A static address for one interface of the live system: what the person typed, checked, and
the systemd-networkd file that sets it.

Called by the TUI's Network screen (through :mod:`recovery.devices.network`, which writes the
file and has networkd take it). Pure: nothing here touches the machine. The live system asks
DHCP on every wired interface through iso/rootfs/etc/systemd/network/80-recovery-wired.network;
a file named by :func:`network_file_name` sorts before it (networkd takes the first file, in
name order, whose [Match] fits a link), so it wins for its one interface and for nothing else.
Its DNS servers reach /etc/resolv.conf the way DHCP's do: networkd lists them in
/run/systemd/netif/state, which recovery-dns follows.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

STATIC_FILE_PREFIX = "10-recovery-static-"
"""Sorts before the ISO's 80-recovery-wired.network, so the static file wins for its link."""

_IFNAME = re.compile(r"[A-Za-z0-9_.:-]{1,15}")
"""What the kernel accepts as an interface name (IFNAMSIZ), without "/" or spaces, so it is
safe in a file name and in a [Match] line."""


@dataclass(frozen=True)
class StaticAddress:
    """A checked static configuration of one interface."""

    interface: str
    address: IPInterface
    """The address with its prefix length (``10.0.2.50/24``)."""
    gateway: IPAddress | None
    dns: tuple[IPAddress, ...]


class InvalidSettings(ValueError):
    """What is wrong with the typed settings: one line per wrong field, in the form's order."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def check_static(interface: str, address: str, gateway: str, dns: str) -> StaticAddress:
    """The settings as typed in the form, checked; :class:`InvalidSettings` names each wrong
    field in one line. The gateway and the DNS servers may be left empty (a network without
    a router, or names not needed); DNS servers are separated by commas or spaces."""
    problems: list[str] = []
    if not _IFNAME.fullmatch(interface):
        problems.append(f"Interface: {interface!r} is not a network interface name.")
    parsed = _check_address(address.strip(), problems)
    router = _check_gateway(gateway.strip(), parsed, problems)
    servers: list[IPAddress] = []
    for word in dns.replace(",", " ").split():
        try:
            server = ipaddress.ip_address(word)
        except ValueError:
            problems.append(f"DNS: {word!r} is not an IP address (for example 10.0.2.3).")
            continue
        if server.is_unspecified or server.is_multicast:
            problems.append(f"DNS: {word} cannot be a DNS server.")
        else:
            servers.append(server)
    if problems or parsed is None:
        raise InvalidSettings(problems)
    return StaticAddress(interface, parsed, router, tuple(servers))


def _shown(text: str) -> str:
    """Typed text as a message shows it: as typed, or quoted when it holds a line break or
    another character that would break the one-line message."""
    return text if text.isprintable() else repr(text)


def _check_address(text: str, problems: list[str]) -> IPInterface | None:
    if not text:
        problems.append("Address: give the address with its prefix length, e.g. 192.168.1.20/24.")
        return None
    if "/" not in text:
        problems.append(f"Address: {_shown(text)} needs a prefix length, e.g. {_shown(text)}/24.")
        return None
    try:
        parsed = ipaddress.ip_interface(text)
    except ValueError:
        problems.append(
            f"Address: {_shown(text)} is not an address with a prefix length (a.b.c.d/nn)."
        )
        return None
    ip = parsed.ip
    if ip.is_unspecified or ip.is_loopback or ip.is_multicast or ip.is_link_local:
        problems.append(f"Address: {ip} cannot be a machine's address on a network.")
        return None
    network = parsed.network
    if (
        isinstance(ip, ipaddress.IPv4Address)
        and network.prefixlen < 31
        and ip in (network.network_address, network.broadcast_address)
    ):
        which = "network" if ip == network.network_address else "broadcast"
        problems.append(f"Address: {ip} is the {which} address of {network}; pick a host in it.")
        return None
    return parsed


def _check_gateway(text: str, address: IPInterface | None, problems: list[str]) -> IPAddress | None:
    if not text:
        return None
    try:
        gateway = ipaddress.ip_address(text)
    except ValueError:
        problems.append(f"Gateway: {_shown(text)} is not an IP address (for example 192.168.1.1).")
        return None
    if address is None:
        return gateway
    if gateway.version != address.version:
        problems.append(f"Gateway: {gateway} is not an IPv{address.version} address.")
    elif gateway == address.ip:
        problems.append(f"Gateway: {gateway} is this machine's own address.")
    elif gateway not in address.network and not gateway.is_link_local:
        problems.append(f"Gateway: {gateway} is not in {address.network}, the address's network.")
    return gateway


def network_file_name(interface: str) -> str:
    return f"{STATIC_FILE_PREFIX}{interface}.network"


def network_file_text(settings: StaticAddress) -> str:
    """The systemd-networkd file that gives ``settings.interface`` its static address. DHCP is
    off on that link (the address would otherwise be joined by a leased one); IPv6 router
    advertisements stay on, as for every other link."""
    lines = [
        "# Written by recovery's Network screen: a static address for this interface.",
        "# Removing this file (choosing DHCP there) gives it back to 80-recovery-wired.network.",
        "[Match]",
        f"Name={settings.interface}",
        "",
        "[Link]",
        "RequiredForOnline=no",
        "",
        "[Network]",
        "DHCP=no",
        "IPv6AcceptRA=yes",
        "LinkLocalAddressing=ipv6",
        f"Address={settings.address.with_prefixlen}",
    ]
    if settings.gateway is not None:
        lines.append(f"Gateway={settings.gateway}")
    lines.extend(f"DNS={server}" for server in settings.dns)
    return "\n".join(lines) + "\n"
