"""The form that sets one interface's address: DHCP, or a static address, gateway and DNS.

Reached from the Network screen (``s`` on the highlighted interface). The typed fields are
checked by :func:`recovery.core.network.check_static`, which names each wrong field in one line;
those lines show under the form, which keeps what was typed. Applying runs in a worker through
the TUI's network backend (:meth:`NetworkSource.set_static` / ``use_dhcp``), then the form
closes and the Network screen says what was done; the new address appears there and in the
title bar when the app next reads the interfaces.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Button, Input, RadioButton, RadioSet, Static

from recovery.core.network import InvalidSettings, check_static
from recovery.devices.network import Interface
from recovery.errors import RecoveryError
from recovery.tui.screens.base import StepScreen
from recovery.tui.screens.network_location import ConsoleRadioButton


class StaticAddressScreen(StepScreen):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "Back")]

    def __init__(self, interface: Interface, static: bool = True) -> None:
        super().__init__("Network", interface.name)
        self.interface = interface
        self.static = static

    def compose_body(self) -> Iterable[Widget]:
        now = ", ".join(self.interface.addresses) or "no address"
        yield Static(
            f"How {self.interface.name} ({self.interface.mac or 'no MAC'}) gets its address; "
            f"now: {now}. DNS servers: commas or spaces between them. Kept until the next boot.",
            id="intro",
            markup=False,
        )
        button = ConsoleRadioButton if self.rapp.console_mode else RadioButton
        with RadioSet(id="kind"):
            yield button("Static address", value=self.static, id="mode-static")
            yield button("DHCP", value=not self.static, id="mode-dhcp")
        v4 = next((a for a in self.interface.addresses if ":" not in a), "192.168.1.20/24")
        with Horizontal(classes="form-row"):
            yield Input(placeholder=v4, id="address")
            yield Input(placeholder=_gateway_example(v4), id="gateway")
        with Horizontal(classes="form-row"):
            yield Input(placeholder=_gateway_example(v4), id="dns")
        yield Static("", id="status", markup=False)
        with Horizontal(id="form-buttons"):
            yield Button("Apply", id="apply", variant="primary")
            yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        for field, title in (
            ("address", "Address/prefix"),
            ("gateway", "Gateway (optional)"),
            ("dns", "DNS servers (optional)"),
        ):
            widget = self.query_one(f"#{field}", Input)
            widget.border_title = title
            widget.cursor_blink = self.rapp.cursor_blink
        self.show_mode(self.static)
        # The choice first, and Tab from it to the fields: the Linux console's keymap sends
        # Shift+Tab as a plain Tab, so nothing must need a way back.
        self.query_one("#kind").focus()

    def show_mode(self, static: bool) -> None:
        self.static = static
        for row in self.query(".form-row"):
            row.display = static

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        event.stop()
        self.show_mode(event.index == 0)
        self.set_status("")

    def set_status(self, text: str, problem: bool = False) -> None:
        status = self.query_one("#status", Static)
        status.update(text)
        status.set_class(problem, "-problem")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.apply()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "apply":
            self.apply()
        else:
            self.action_back()

    def apply(self) -> None:
        source = self.rapp.backends.network
        if source is None:
            return
        name = self.interface.name
        if not self.static:
            self._start(f"dhcp:{name}", f"Asking DHCP on {name}...", source.use_dhcp, name)
            return
        try:
            settings = check_static(
                name,
                self.query_one("#address", Input).value,
                self.query_one("#gateway", Input).value,
                self.query_one("#dns", Input).value,
            )
        except InvalidSettings as e:
            self.set_status("\n".join(e.problems), True)
            return
        address = settings.address.with_prefixlen
        self._start(
            f"static:{address}", f"Setting {address} on {name}...", source.set_static, settings
        )

    def _start(self, tag: str, saying: str, fn: Callable[..., object], arg: object) -> None:
        self.set_status(saying)
        self.query_one("#apply", Button).disabled = True
        self.run_job(tag, fn, arg)

    def job_done(self, tag: str, result: object) -> None:
        from recovery.tui.screens.network import NetworkScreen

        kind, _, value = tag.partition(":")
        name = self.interface.name
        said = (
            f"{name} set to {value}; DHCP is off on it until you choose DHCP again."
            if kind == "static"
            else f"{name} asks DHCP again; the address appears here when the server answers."
        )
        self.app.pop_screen()
        if isinstance(self.app.screen, NetworkScreen):
            self.app.screen.tell(said)
        self.rapp.refresh_network()

    def job_failed(self, tag: str, error: BaseException) -> None:
        """One line under the form; the form keeps what was typed."""
        from recovery.tui.screens.dialogs import explain

        self.query_one("#apply", Button).disabled = False
        title, text = explain(error)
        self.set_status(text if isinstance(error, RecoveryError) else f"{title}: {text}", True)


def _gateway_example(address: str) -> str:
    """The first host of the address's network, the usual place of a router (10.0.2.1 for
    10.0.2.15/24), as an example in the empty field."""
    import ipaddress

    try:
        network = ipaddress.ip_interface(address).network
    except ValueError:
        return "192.168.1.1"
    return str(next(network.hosts(), network.network_address))
