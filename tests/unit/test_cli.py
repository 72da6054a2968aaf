"""The CLI's own rules: a missing part of the build is an error that says so, never silence."""

from __future__ import annotations

import sys

import pytest

from recovery import cli


def test_a_missing_command_module_fails_loudly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, ("ghost", "ghost", "not shipped")))
    assert cli.main(["--help"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "recovery: this build lacks the 'ghost' command (module recovery.commands.ghost is "
        "missing): reinstall recovery or rebuild it\n"
    )


def test_a_missing_tui_is_an_error_not_the_help(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "recovery.tui.app", None)
    assert cli.main([]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("recovery: the text UI cannot start: recovery.tui.app is missing")
