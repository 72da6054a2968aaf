"""The machine's network interfaces: what they are, which addresses they have, and asking DHCP
again, and setting a static address (or DHCP again) on one of them.

Called by the TUI (the title bar's address, the Network screen) through its backends, from
worker threads. The live system brings every wired interface up by DHCP on its own
(systemd-networkd, iso/rootfs/etc/systemd/network/); nothing here waits for it. Interfaces come
from ``ip -json address`` and are turned into plain data in :func:`parse_ip_json`, the one place
that reads iproute2's output.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from recovery.core.network import (
    STATIC_FILE_PREFIX,
    StaticAddress,
    network_file_name,
    network_file_text,
)
from recovery.devices import tools
from recovery.errors import DeviceError

NETWORKD_RUNTIME = Path("/run/systemd/network")
"""Where the static files go: in RAM, gone at the next boot like everything else here."""

VIRTUAL_PREFIXES = ("lo", "docker", "veth", "br-", "virbr", "ifb", "dummy", "tun", "tap", "sit")
"""Interfaces a person does not plug a cable into: not shown, never counted as "the network"."""


@dataclass(frozen=True)
class Interface:
    name: str
    mac: str
    up: bool
    """The link is up and has a carrier (a cable, or QEMU's virtual one)."""
    addresses: tuple[str, ...] = ()
    """Global addresses in CIDR form (``10.0.2.15/24``), IPv4 first."""


def parse_ip_json(text: str) -> list[Interface]:
    """Interfaces from ``ip -json address`` output; loopback and virtual ones left out.

    Anything that is not the expected shape is skipped, not an error: a field iproute2 renames
    must cost an address on the screen, never the TUI."""
    try:
        data = json.loads(text or "[]")
    except ValueError:
        return []
    if not isinstance(data, list):
        return []
    found = []
    for entry in data:
        if not isinstance(entry, dict):
            continue
        name = entry.get("ifname")
        if not isinstance(name, str) or not name or name.startswith(VIRTUAL_PREFIXES):
            continue
        if entry.get("link_type") not in (None, "ether"):
            continue
        flags = entry.get("flags")
        flags = flags if isinstance(flags, list) else []
        v4: list[str] = []
        v6: list[str] = []
        infos = entry.get("addr_info")
        for info in infos if isinstance(infos, list) else []:
            if not isinstance(info, dict) or info.get("scope") != "global":
                continue
            local, prefix = info.get("local"), info.get("prefixlen")
            if not isinstance(local, str) or not isinstance(prefix, int):
                continue
            (v4 if info.get("family") == "inet" else v6).append(f"{local}/{prefix}")
        mac = entry.get("address")
        found.append(
            Interface(
                name=name,
                mac=mac if isinstance(mac, str) else "",
                up="UP" in flags and "LOWER_UP" in flags,
                addresses=tuple(v4 + v6),
            )
        )
    return found


def interfaces() -> list[Interface]:
    """The wired interfaces now. Empty when iproute2 is missing (a machine without it has no
    network we manage)."""
    return parse_ip_json(tools.output(["ip", "-json", "address", "show"], timeout=10))


def summary(found: list[Interface]) -> str:
    """What the title bar says: the first IPv4 address (and how many more), "waiting for
    DHCP" while a cable is in and no address came yet, or "no network"."""
    addresses = [a.split("/")[0] for i in found for a in i.addresses]
    v4 = [a for a in addresses if ":" not in a]
    shown = v4 or addresses
    if shown:
        more = f" +{len(shown) - 1}" if len(shown) > 1 else ""
        return shown[0] + more
    if any(i.up for i in found):
        return "waiting for DHCP"
    return "no network"


def renew(name: str) -> None:
    """Ask for an address again on ``name``: the link goes down and up, which makes
    systemd-networkd drop its lease and start DHCP afresh (networkctl would need D-Bus, which
    the live system does not run)."""
    if not any(i.name == name for i in interfaces()):
        raise DeviceError(f"no network interface named {name}")
    for state in ("down", "up"):
        status, out = tools.run(["ip", "link", "set", "dev", name, state], timeout=10)
        if status != 0:
            raise DeviceError(f"could not set {name} {state}: {out or 'ip failed'}")


def set_static(settings: StaticAddress, directory: Path = NETWORKD_RUNTIME) -> None:
    """Give ``settings.interface`` its static address, gateway and DNS servers: the networkd
    file (:func:`recovery.core.network.network_file_text`) replaces any earlier one of that
    interface in one rename, then networkd takes it (:func:`_reconfigure`)."""
    _known(settings.interface)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / network_file_name(settings.interface)
    temporary = target.with_name("." + target.name + ".tmp")
    temporary.write_text(network_file_text(settings))
    os.replace(temporary, target)
    _reconfigure(settings.interface)


def use_dhcp(name: str, directory: Path = NETWORKD_RUNTIME) -> None:
    """Give ``name`` back to DHCP: its static file goes, networkd takes the ISO's DHCP file for
    it again and asks for a lease."""
    _known(name)
    (directory / network_file_name(name)).unlink(missing_ok=True)
    _reconfigure(name)


def static_interfaces(directory: Path = NETWORKD_RUNTIME) -> list[str]:
    """The interfaces the Network screen set a static address on (their files are there)."""
    if not directory.is_dir():
        return []
    names = (p.name for p in directory.iterdir())
    return sorted(
        n[len(STATIC_FILE_PREFIX) : -len(".network")]
        for n in names
        if n.startswith(STATIC_FILE_PREFIX) and n.endswith(".network")
    )


def _known(name: str) -> None:
    if not any(i.name == name for i in interfaces()):
        raise DeviceError(f"no network interface named {name}")


def _reconfigure(name: str) -> None:
    """Have networkd read its files again and configure ``name`` from them. ``networkctl
    reload`` would do it, but it talks D-Bus, which the live system does not run; systemctl
    reaches systemd through its private socket, and a restarted networkd reads every file.
    The interface's old global addresses are dropped first, so a leased address does not stay
    beside the static one (nor an old static one beside a new lease). The other interfaces
    keep their addresses: networkd takes them over where it left them."""
    status, out = tools.run(["ip", "address", "flush", "dev", name, "scope", "global"], timeout=10)
    if status != 0:
        raise DeviceError(f"could not clear the addresses of {name}: {out or 'ip failed'}")
    status, out = tools.run(["systemctl", "restart", "systemd-networkd.service"], timeout=60)
    if status != 0:
        raise DeviceError(f"systemd-networkd did not restart: {out or 'systemctl failed'}")
