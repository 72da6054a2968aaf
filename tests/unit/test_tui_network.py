"""The TUI's network parts over fakes: the title bar follows the address as it arrives, the
Network screen asks DHCP again on the highlighted interface, the network location form builds the
address and hands its secrets to the provider (never into the address), and iproute2's JSON is
read into plain data (captured output of ``ip -json address`` on a QEMU guest)."""

from __future__ import annotations

import json
from typing import Any

from textual.pilot import Pilot
from textual.widgets import Input

from recovery.devices.network import Interface, parse_ip_json, summary
from recovery.repository import secrets
from recovery.tui.app import RecoveryApp
from recovery.tui.screens.network import NetworkScreen
from recovery.tui.screens.network_location import NetworkLocationScreen
from recovery.tui.widgets.titlebar import TitleBar
from tests.pilot import drive, press, settle
from tests.unit.tui_fakes import FakeEngine, FakeNetwork, fake_backends, screen_text

IP_JSON = [
    {"ifindex": 1, "ifname": "lo", "flags": ["LOOPBACK", "UP", "LOWER_UP"],
     "link_type": "loopback", "address": "00:00:00:00:00:00",
     "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8, "scope": "host"}]},
    {"ifindex": 2, "ifname": "ens3", "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"],
     "link_type": "ether", "address": "52:54:00:12:34:56",
     "addr_info": [
         {"family": "inet6", "local": "fec0::5054:ff:fe12:3456", "prefixlen": 64,
          "scope": "site"},
         {"family": "inet", "local": "10.0.2.15", "prefixlen": 24, "scope": "global",
          "dynamic": True},
         {"family": "inet6", "local": "fe80::5054:ff:fe12:3456", "prefixlen": 64,
          "scope": "link"}]},
    {"ifindex": 3, "ifname": "enp1s0", "flags": ["NO-CARRIER", "BROADCAST", "UP"],
     "link_type": "ether", "address": "52:54:00:aa:bb:cc", "addr_info": []},
    {"ifindex": 4, "ifname": "docker0", "flags": ["UP", "LOWER_UP"], "link_type": "ether",
     "addr_info": [{"family": "inet", "local": "172.17.0.1", "prefixlen": 16, "scope": "global"}]},
]  # fmt: skip


def test_ip_json_becomes_plain_interfaces() -> None:
    found = parse_ip_json(json.dumps(IP_JSON))
    assert found == [
        Interface("ens3", "52:54:00:12:34:56", True, ("10.0.2.15/24",)),
        Interface("enp1s0", "52:54:00:aa:bb:cc", False, ()),
    ]
    assert summary(found) == "10.0.2.15"
    assert summary([Interface("ens3", "", True)]) == "waiting for DHCP"
    assert summary([Interface("ens3", "", False)]) == "no network"
    assert summary([]) == "no network"
    two = [Interface("a", "", True, ("10.0.0.2/8",)), Interface("b", "", True, ("10.1.0.2/8",))]
    assert summary(two) == "10.0.0.2 +1"


def test_ip_json_of_another_shape_is_no_interface_not_an_error() -> None:
    for text in ("", "{", "{}", "[1, null]", '[{"ifname": 3}]', '[{"ifname": "e", "flags": 1}]'):
        assert all(isinstance(i, Interface) for i in parse_ip_json(text))


def test_title_bar_shows_the_address_when_dhcp_answers() -> None:
    network = FakeNetwork([Interface("ens3", "52:54:00:12:34:56", True)])
    app = RecoveryApp(fake_backends(network=network), cursor_blink=False)
    seen: list[str] = []

    async def scenario(pilot: Pilot[Any]) -> None:
        seen.append(screen_text(pilot.app).splitlines()[0])
        network.found = [Interface("ens3", "52:54:00:12:34:56", True, ("10.0.2.15/24",))]
        pilot.app.refresh_network()
        await settle(pilot)
        seen.append(screen_text(pilot.app).splitlines()[0])
        await press(pilot, "n")
        seen.append(screen_text(pilot.app).splitlines()[0])

    drive(app, scenario)
    assert "net: waiting for DHCP" in seen[0]
    assert seen[1].rstrip().endswith("net: 10.0.2.15")
    assert "Network" in seen[2] and "net: 10.0.2.15" in seen[2]


def test_no_network_backend_shows_no_address() -> None:
    app = RecoveryApp(fake_backends(), cursor_blink=False)
    seen: list[str] = []

    async def scenario(pilot: Pilot[Any]) -> None:
        seen.append(str(pilot.app.screen.query_one(TitleBar).render()))

    drive(app, scenario)
    assert seen[0].strip() == "recovery"


def test_network_screen_asks_dhcp_again_on_the_highlighted_interface() -> None:
    network = FakeNetwork()
    app = RecoveryApp(fake_backends(network=network), cursor_blink=False)
    seen: list[str] = []

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "n")
        assert isinstance(pilot.app.screen, NetworkScreen)
        await press(pilot, "down", "r")
        seen.append(screen_text(pilot.app))

    drive(app, scenario)
    assert network.renewed == ["enp0s4"]
    assert "Asked DHCP again on enp0s4" in seen[0]


class RecordingEngine(FakeEngine):
    """Records which addresses were listed and what the secrets provider gives for them."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, str | None, str | None, Any]] = []

    def list_images(self, repo: str) -> Any:
        provider = secrets.current()
        if repo.startswith("s3"):  # asking a password here would open the dialog
            self.asked.append((repo, None, None, provider.s3_keys(repo)))
        elif repo.startswith("nfs"):  # the NFS backend asks for nothing
            self.asked.append((repo, None, None, None))
        else:
            self.asked.append((repo, provider.password(repo), provider.identity(repo), None))
        return super().list_images(repo)


async def fill(pilot: Pilot[Any], kind_steps: int, values: list[str]) -> None:
    await press(pilot, "shift+tab", *(["right"] * kind_steps), "enter", "tab")
    for i, text in enumerate(values):
        field = pilot.app.focused
        assert isinstance(field, Input)
        field.value = text
        if i < len(values) - 1:
            await press(pilot, "tab")


def test_network_form_builds_the_address_and_keeps_secrets_out_of_it() -> None:
    engine = RecordingEngine()
    app = RecoveryApp(fake_backends(engine=engine), cursor_blink=False)
    seen: list[str] = []

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "3", "n")
        form = pilot.app.screen
        assert isinstance(form, NetworkLocationScreen)
        # Nothing typed: one line says what is missing, nothing is asked of the engine.
        await press(pilot, "enter")
        seen.append(str(form.query_one("#status").render()))
        await fill(pilot, 1, ["nas.example:2222", "~/backups", "alice", "pw-1", "/keys/id"])
        await press(pilot, "enter")
        # Listed: the restore goes on to the images; the location is offered again later.
        await press(pilot, "escape")
        seen.append(screen_text(pilot.app))
        await press(pilot, "n")
        await fill(pilot, 2, ["s3.example", "bucket-1/pc", "AKIA1", "s3-secret-2"])
        await press(pilot, "enter")
        await press(pilot, "escape", "n")
        await fill(pilot, 0, ["bad host", "share", "", ""])
        await press(pilot, "enter")
        seen.append(str(pilot.app.screen.query_one("#status").render()))

    drive(app, scenario, size=(120, 40))
    assert "server" in seen[0]
    sftp = next(a for a in engine.asked if a[0].startswith("sftp"))
    s3 = next(a for a in engine.asked if a[0].startswith("s3"))
    assert sftp[:3] == ("sftp://alice@nas.example:2222/~/backups", "pw-1", "/keys/id")
    assert s3[0] == "s3://s3.example/bucket-1/pc"
    assert s3[3] is not None and (s3[3].access_key, s3[3].secret_key) == ("AKIA1", "s3-secret-2")
    assert "s3-secret-2" not in repr(s3[3])
    assert "sftp://alice@nas.example:2222/~/backups" in seen[1]  # offered again
    assert "\n" not in seen[2].strip() and seen[2]


def test_static_address_form_checks_each_field_then_sets_it() -> None:
    """Network screen > s on the first interface: wrong fields are named one line each and
    nothing is set; right ones reach the backend as checked settings, the form closes and the
    Network screen says what was done. DHCP gives the interface back."""
    from recovery.tui.screens.static_address import StaticAddressScreen

    network = FakeNetwork()
    app = RecoveryApp(fake_backends(network=network), cursor_blink=False)
    seen: list[str] = []

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "n", "s")
        form = pilot.app.screen
        assert isinstance(form, StaticAddressScreen)
        assert pilot.app.focused is form.query_one("#kind")
        await pilot.press("tab", *"10.0.2.500", "tab", *"10.0.3.1", "tab", *"10.0.2.3,x", "enter")
        await settle(pilot)
        seen.append(str(form.query_one("#status").render()))
        for field, text in (("address", "10.0.2.50/24"), ("gateway", "10.0.2.2")):
            form.query_one(f"#{field}", Input).value = text
        form.query_one("#dns", Input).value = "10.0.2.3"
        await press(pilot, "enter")
        seen.append(screen_text(pilot.app))
        assert isinstance(pilot.app.screen, NetworkScreen)
        await press(pilot, "s", "right", "enter", "tab", "enter")
        seen.append(screen_text(pilot.app))

    drive(app, scenario, size=(120, 40))
    assert seen[0].splitlines() == [
        "Address: 10.0.2.500 needs a prefix length, e.g. 10.0.2.500/24.",
        "DNS: 'x' is not an IP address (for example 10.0.2.3).",
    ]
    assert network.static[0].address.with_prefixlen == "10.0.2.50/24"
    assert str(network.static[0].gateway) == "10.0.2.2"
    assert [str(s) for s in network.static[0].dns] == ["10.0.2.3"]
    assert "enp0s3 set to 10.0.2.50/24" in seen[1]
    assert network.dhcp == ["enp0s3"], seen[2]
    assert "enp0s3 asks DHCP again" in seen[2]


def test_network_form_takes_an_nfs_export_without_a_login() -> None:
    engine = RecordingEngine()
    app = RecoveryApp(fake_backends(engine=engine), cursor_blink=False)

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "3", "n")
        form = pilot.app.screen
        assert isinstance(form, NetworkLocationScreen)
        await fill(pilot, 4, ["10.0.2.2", "export/pc1"])
        assert not form.query_one("#login-row").display
        await press(pilot, "enter")

    drive(app, scenario, size=(120, 40))
    assert engine.asked[0][0] == "nfs://10.0.2.2/export/pc1"
