"""The machine's network interfaces: what they are, which addresses they have, and asking DHCP
again.

Called by the TUI (the title bar's address, the Network screen) through its backends, from
worker threads. The live system brings every wired interface up by DHCP on its own
(systemd-networkd, iso/rootfs/etc/systemd/network/); nothing here waits for it. Interfaces come
from ``ip -json address`` and are turned into plain data in :func:`parse_ip_json`, the one place
that reads iproute2's output.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from recovery.devices import tools
from recovery.errors import DeviceError

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
