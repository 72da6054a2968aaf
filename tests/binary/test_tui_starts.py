"""``recovery`` with no arguments starts the TUI, in a real terminal (tmux), package and binary.

Textual imports its widgets lazily and reads style sheets at run time, so a binary that answers
``--help`` can still die the moment the TUI starts. This draws the first screen, checks it is the
TUI and not a traceback, and quits with ctrl+q.
"""

from __future__ import annotations

import shlex
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from tests import loopdev

WIDTH, HEIGHT = 100, 30


class Tmux:
    """One private tmux server (its own socket), so nothing else on the machine is touched."""

    def __init__(self) -> None:
        self.socket = f"recovery-test-{uuid.uuid4().hex[:8]}"

    def __call__(self, *args: str) -> str:
        r = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True
        )
        return r.stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "tui")

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    if not loopdev.have("tmux"):
        pytest.skip("tmux is not installed (deps/debian-packages.txt)")
    t = Tmux()
    yield t
    t.kill()


def _drawn(screen: str) -> bool:
    """A full-screen app: its title on the first line and most rows painted."""
    rows = screen.splitlines()
    return bool(rows) and "recovery" in rows[0] and sum(1 for r in rows if r.strip()) >= 5


def test_tui_draws_its_first_screen_and_quits(recovery_cmd: list[str], tmux: Tmux) -> None:
    # remain-on-exit keeps the pane (and what it printed) after the program ends, so a crash
    # shows its traceback here instead of vanishing with the pane.
    argv = " ".join(shlex.quote(a) for a in recovery_cmd)
    size = ["-x", str(WIDTH), "-y", str(HEIGHT)]
    shell = f"{argv}; echo EXIT=$?; sleep 600"
    tmux(
        "-f",
        "/dev/null",
        "new-session",
        "-d",
        "-s",
        "tui",
        *size,
        "-e",
        "TERM=xterm-256color",
        shell,
    )
    screen = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        screen = tmux.screen()
        if "EXIT=" in screen or _drawn(screen):
            break
        time.sleep(0.5)
    time.sleep(1)  # let a crash right after the first frame show
    screen = tmux.screen()
    assert "Traceback" not in screen, screen
    assert "EXIT=" not in screen, f"the TUI ended by itself:\n{screen}"
    assert "usage: recovery" not in screen, f"help instead of the TUI:\n{screen}"
    assert _drawn(screen), screen

    tmux("send-keys", "-t", "tui", "C-q")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "EXIT=" not in screen:
        time.sleep(0.5)
        screen = tmux.screen()
    assert "EXIT=0" in screen, screen
