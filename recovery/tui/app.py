"""The Textual app: ``recovery`` with no arguments runs :func:`run_app`.

Called by :func:`recovery.cli.main`. The app owns the shared state every screen reads (the
current list of disks, kept fresh by the hot-plug watcher; whether work is running) and the
backends (:class:`recovery.tui.backends.Backends`): production uses the real disks, engine,
mounts and machine; tests pass fakes. On the Linux console (``TERM=linux``) it switches to the
terminal's own 16 ANSI colours and a style sheet that only uses glyphs the console font has.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import ClassVar

from textual import work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.scrollbar import ScrollBar, ScrollBarRender
from textual.theme import BUILTIN_THEMES

from recovery.devices import network
from recovery.devices.model import Disk
from recovery.devices.network import Interface
from recovery.engine.progress import CancelToken
from recovery.repository.secrets import Secrets
from recovery.tui.backends import Backends
from recovery.tui.messages import DisksUpdated, NetworkUpdated
from recovery.tui.screens.dialogs import ConfirmScreen, ErrorScreen
from recovery.tui.secrets import DialogSecrets

NETWORK_POLL_S = 3.0
"""How often the interfaces are read: DHCP answers a few seconds after boot, and a cable may be
plugged in at any time. Reading them is one ``ip`` call."""

HERE = Path(__file__).parent
APP_CSS = HERE / "app.tcss"
CONSOLE_CSS = HERE / "console.tcss"


CONSOLE_THEME = dataclasses.replace(
    BUILTIN_THEMES["ansi-dark"],
    name="recovery-console",
    variables={
        **BUILTIN_THEMES["ansi-dark"].variables,
        # ansi-dark draws the cursor row bold black on white: on the Linux console bold black is
        # dark grey and "white" is light grey, so the selected row was grey on grey. Bright white
        # on blue reads at a glance (the console has only the 8 dark background colours).
        "block-cursor-foreground": "ansi_bright_white",
        "block-cursor-background": "ansi_blue",
        "block-cursor-text-style": "bold",
        # The cursor of a list that has not the focus: still visible, plainly second.
        "block-cursor-blurred-foreground": "ansi_black",
        "block-cursor-blurred-background": "ansi_cyan",
        "block-cursor-blurred-text-style": "none",
    },
)
"""The Linux console's theme: the terminal's own 16 colours (ansi-dark) with a selection that
keeps its contrast there (checked on tty1 of the live ISO by tests/boot)."""


class ConsoleScrollBarRender(ScrollBarRender):
    """Scroll bars of whole cells: the eighth-block glyphs are not in the console font."""

    VERTICAL_BARS: ClassVar[list[str]] = [" "] * 8
    HORIZONTAL_BARS: ClassVar[list[str]] = [" "] * 8


class HotPlug(Message):
    """A disk came or went (posted from the watcher's thread)."""


class DisksListed(Message):
    def __init__(self, disks: list[Disk] | None, error: BaseException | None) -> None:
        super().__init__()
        self.disks = disks
        self.error = error


class NetworkListed(Message):
    def __init__(self, interfaces: list[Interface]) -> None:
        super().__init__()
        self.interfaces = interfaces


class RecoveryApp(App[int]):
    TITLE = "recovery"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+q", "quit_app", "Quit", show=False, priority=True),
        Binding("ctrl+c", "quit_app", "Quit", show=False, priority=True),
    ]

    def __init__(
        self,
        backends: Backends | None = None,
        *,
        console: bool | None = None,
        cursor_blink: bool = True,
    ) -> None:
        self.console_mode = os.environ.get("TERM") == "linux" if console is None else console
        css: list[str | PurePath] = [APP_CSS, CONSOLE_CSS] if self.console_mode else [APP_CSS]
        super().__init__(css_path=css, ansi_color=True if self.console_mode else None)
        self.backends = backends or Backends.system()
        self.disks: list[Disk] = []
        self.disks_loaded = False
        self.interfaces: list[Interface] = []
        self.network_summary = ""
        self._reading_network = False
        """The title bar's right end: an address, "waiting for DHCP" or "no network"; empty
        when the app does not watch the network (no network backend)."""
        self.cursor_blink = cursor_blink
        """False in snapshot tests: a blinking cursor would make screenshots differ."""
        self.work: CancelToken | None = None
        """The token of the work running now (backup, restore, verify), or None."""
        self._stop_watch: Callable[[], None] | None = None
        self._old_scrollbar: type[ScrollBarRender] | None = None
        self._old_secrets: Secrets | None = None
        self.secrets: DialogSecrets
        """The TUI's secrets provider (installed on mount): dialogs, and what the network
        location form gave, kept for the session."""
        if self.console_mode:
            self.register_theme(CONSOLE_THEME)
            self.theme = CONSOLE_THEME.name

    def on_mount(self) -> None:
        from recovery.repository import secrets
        from recovery.tui.screens.home import HomeScreen

        self._old_secrets = secrets.current()
        self.secrets = DialogSecrets(self)
        secrets.use(self.secrets)
        if self.console_mode:
            self._old_scrollbar = ScrollBar.renderer
            ScrollBar.renderer = ConsoleScrollBarRender
        self.push_screen(HomeScreen())
        self.refresh_disks()

        def hot_plug() -> None:
            self.post_message(HotPlug())

        self._stop_watch = self.backends.disks.watch(hot_plug)
        if self.backends.network is not None:
            self.refresh_network()
            self.set_interval(NETWORK_POLL_S, self.refresh_network)

    def on_unmount(self) -> None:
        from recovery.repository import secrets

        if self._old_secrets is not None:
            secrets.use(self._old_secrets)
        if self._stop_watch is not None:
            self._stop_watch()
        if self._old_scrollbar is not None:
            ScrollBar.renderer = self._old_scrollbar
        self.backends.locations.release_all()

    # Disks ------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="disks", exit_on_error=False)
    def refresh_disks(self) -> None:
        try:
            disks = self.backends.disks.list_disks()
        except Exception as e:
            self.post_message(DisksListed(None, e))
            return
        self.post_message(DisksListed(disks, None))

    def on_hot_plug(self, message: HotPlug) -> None:
        self.refresh_disks()

    def on_disks_listed(self, message: DisksListed) -> None:
        if message.error is not None:
            self.show_error(message.error)
            return
        assert message.disks is not None
        self.disks = message.disks
        self.disks_loaded = True
        for screen in self.screen_stack:
            screen.post_message(DisksUpdated(self.disks))

    # The network ----------------------------------------------------------------------------

    def refresh_network(self) -> None:
        """Read the interfaces in a worker, unless a read is under way (one at a time, and
        none cancelled: a slow ``ip`` only delays the next read)."""
        if self.backends.network is None or self._reading_network:
            return
        self._reading_network = True
        self._read_network()

    @work(thread=True, group="network", exit_on_error=False)
    def _read_network(self) -> None:
        """Never waits for DHCP: it reads what the interfaces have now, and the title bar
        follows when an address arrives."""
        source = self.backends.network
        try:
            found = source.interfaces() if source is not None else []
        except Exception:  # a failed read costs the address on screen, never the app
            found = []
        self.post_message(NetworkListed(found))

    def on_network_listed(self, message: NetworkListed) -> None:
        from recovery.tui.widgets.titlebar import TitleBar

        self._reading_network = False
        self.interfaces = message.interfaces
        summary = network.summary(message.interfaces)
        if summary != self.network_summary:
            self.network_summary = summary
            for screen in self.screen_stack:
                for bar in screen.query(TitleBar):
                    bar.network = summary
        for screen in self.screen_stack:
            screen.post_message(NetworkUpdated(message.interfaces))

    # Errors and quitting -------------------------------------------------------------------

    def show_error(self, error: BaseException) -> None:
        self.push_screen(ErrorScreen(error))

    def action_quit_app(self) -> None:
        if self.work is None:
            self.exit(0)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                if self.work is not None:
                    self.work.cancel()
                self.exit(0)

        self.push_screen(
            ConfirmScreen(
                "Quit while work is running?",
                [
                    "Quitting cancels what is running now.",
                    "A backup location stays valid; a disk being restored is left unusable",
                    "until it is restored again.",
                ],
                confirm="Cancel it and quit",
                cancel="Keep going",
            ),
            answered,
        )

    def go_home(self) -> None:
        from recovery.tui.screens.home import HomeScreen

        while len(self.screen_stack) > 1 and not isinstance(self.screen, HomeScreen):
            self.pop_screen()


def run_app() -> int:
    result = RecoveryApp().run()
    return result if isinstance(result, int) else 0
