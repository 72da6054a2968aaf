"""The Textual app: ``recovery`` with no arguments runs :func:`run_app`.

Called by :func:`recovery.cli.main`. The app owns the shared state every screen reads (the
current list of disks, kept fresh by the hot-plug watcher; whether work is running) and the
backends (:class:`recovery.tui.backends.Backends`): production uses the real disks, engine,
mounts and machine; tests pass fakes. On the Linux console (``TERM=linux``) it switches to the
terminal's own 16 ANSI colours and a style sheet that only uses glyphs the console font has.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import ClassVar

from textual import work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.scrollbar import ScrollBar, ScrollBarRender

from recovery.devices.model import Disk
from recovery.engine.progress import CancelToken
from recovery.tui.backends import Backends
from recovery.tui.messages import DisksUpdated
from recovery.tui.screens.dialogs import ConfirmScreen, ErrorScreen

HERE = Path(__file__).parent
APP_CSS = HERE / "app.tcss"
CONSOLE_CSS = HERE / "console.tcss"


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
        self.cursor_blink = cursor_blink
        """False in snapshot tests: a blinking cursor would make screenshots differ."""
        self.work: CancelToken | None = None
        """The token of the work running now (backup, restore, verify), or None."""
        self._stop_watch: Callable[[], None] | None = None
        self._old_scrollbar: type[ScrollBarRender] | None = None
        if self.console_mode:
            self.theme = "ansi-dark"

    def on_mount(self) -> None:
        from recovery.tui.screens.home import HomeScreen

        if self.console_mode:
            self._old_scrollbar = ScrollBar.renderer
            ScrollBar.renderer = ConsoleScrollBarRender
        self.push_screen(HomeScreen())
        self.refresh_disks()

        def hot_plug() -> None:
            self.post_message(HotPlug())

        self._stop_watch = self.backends.disks.watch(hot_plug)

    def on_unmount(self) -> None:
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
