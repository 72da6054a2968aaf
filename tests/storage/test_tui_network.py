"""The TUI's network locations against real servers on 127.0.0.1 (tests/servers.py): a Disk
Backup into an SFTP server chosen in the location picker's network form, with the host-key
question (refused first: one line says why; then accepted) and the key's passphrase typed in the
form; and the images of an SMB share listed through the same form for a restore.

The app runs with its production backends, the disk list narrowed to the test's loop devices.
HOME is a fresh folder, so known_hosts starts empty (the host key must be asked) and no key of
the machine's own is offered.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, Static
from textual.worker import WorkerCancelled

from recovery.tui.app import RecoveryApp
from recovery.tui.screens.backups import BackupsScreen
from recovery.tui.screens.dialogs import ERROR_LOG, ConfirmScreen
from recovery.tui.screens.location import LocationScreen
from recovery.tui.screens.network_location import NetworkLocationScreen
from recovery.tui.screens.options import OptionsScreen
from recovery.tui.screens.plan import PlanScreen
from recovery.tui.screens.progress import ProgressScreen
from recovery.tui.widgets.disk_table import DiskTable
from tests.servers import (
    LOOPBACK,
    S3_ACCESS_KEY,
    S3_SECRET_KEY,
    SMB_PASSWORD,
    SMB_USER,
    SSH_PASSPHRASE,
    S3Server,
    SmbServer,
    SshServer,
    s3_server,  # noqa: F401 (a fixture)
    smb_server,  # noqa: F401 (a fixture)
    ssh_server,  # noqa: F401 (a fixture)
)
from tests.storage.disks import make_gpt_system_disk, run_recovery
from tests.storage.test_tui_storage import drive, real_backends, type_text, until

MiB = 1 << 20


async def press(pilot: Pilot[Any], *keys: str) -> None:
    """Each key, then the workers it started. A disk listing cancelled by a newer one (loop
    devices of other tests come and go on this machine) is not a failure of this test."""
    for key in keys:
        await pilot.press(key)
        await pilot.pause()
        with contextlib.suppress(WorkerCancelled):
            await pilot.app.workers.wait_for_complete()
        await pilot.pause()


async def pick_disk(pilot: Pilot[Any], path: str) -> None:
    table = pilot.app.screen.query_one(DiskTable)
    await until(pilot, lambda: table.disk(path) is not None, 60)
    await press(pilot, "home")
    for _ in range(table.row_count):
        if table.selected_path == path:
            break
        await press(pilot, "down")
    assert table.selected_path == path
    await press(pilot, "enter")


@pytest.fixture
def fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("RECOVERY_PASSWORD", "RECOVERY_ACCEPT_NEW_HOST_KEY", "RECOVERY_PASSPHRASE"):
        monkeypatch.delenv(name, raising=False)
    return home


async def fill_form(pilot: Pilot[Any], kind_steps: int, fields: list[str]) -> None:
    """On the network form: choose the kind (``kind_steps`` to the right of SMB), then type
    each field in order (server, place, user, secret[, key file])."""
    form = pilot.app.screen
    assert isinstance(form, NetworkLocationScreen)
    await press(pilot, "shift+tab")  # from the server field to the kinds
    await press(pilot, *(["right"] * kind_steps), "enter", "tab")
    for i, text in enumerate(fields):
        field = pilot.app.focused
        assert isinstance(field, Input), field
        field.value = ""
        await type_text(pilot, text)
        if i < len(fields) - 1:
            await press(pilot, "tab")


def status_of(screen: Any) -> str:
    return str(screen.query_one("#status", Static).render())


def test_backup_to_sftp_through_the_tui(loop, ssh_server: SshServer, fresh_home: Path) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    src, _ = make_gpt_system_disk(loop, 256 * MiB)
    folder = ssh_server.root / "tui-backup"
    app = RecoveryApp(real_backends({src}), cursor_blink=False)
    seen: dict[str, Any] = {}

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "2")
        await pick_disk(pilot, src)
        await press(pilot, "enter")  # the whole disk
        assert isinstance(pilot.app.screen, LocationScreen)
        await press(pilot, "n")
        form = pilot.app.screen
        assert isinstance(form, NetworkLocationScreen)
        fields = [
            f"{LOOPBACK}:{ssh_server.port}",
            str(folder),
            "root",
            SSH_PASSPHRASE,
            str(ssh_server.identity),
        ]
        await fill_form(pilot, 1, fields)
        seen["masked"] = form.query_one("#secret", Input).password

        # The server is unknown: its fingerprint is shown. Refused: one line says so.
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen), 60)
        seen["question"] = str(pilot.app.screen.query_one("#dialog-body").render())
        await pilot.press("enter")  # Refuse has the focus
        await until(pilot, lambda: pilot.app.screen is form and "unknown" in status_of(form), 60)
        seen["refused"] = status_of(form)

        # Again, and trusted this time: the form goes on to the backup's options.
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen), 60)
        await pilot.press("tab", "enter")  # "Trust this server"
        await until(pilot, lambda: isinstance(pilot.app.screen, OptionsScreen), 60)
        await type_text(pilot, "over-sftp")
        await press(pilot, "enter")
        plan = pilot.app.screen
        assert isinstance(plan, PlanScreen)
        await until(pilot, lambda: plan.plan is not None, 120)
        seen["plan"] = plan.plan.describe()
        await press(pilot, "enter")
        progress = pilot.app.screen
        assert isinstance(progress, ProgressScreen)
        await until(pilot, lambda: progress.finished, 600)
        seen["result"] = progress.outcome
        seen["status"] = str(progress.query_one("#step").render())

    drive(app, scenario)
    address = f"sftp://root@{LOOPBACK}:{ssh_server.port}{folder}"
    assert seen["masked"] is True
    assert "not known yet" in seen["question"] and "SHA256:" in seen["question"]
    assert "unknown" in seen["refused"] and "\n" not in seen["refused"].strip()
    assert seen["result"] == "done", seen
    assert "Verified" in seen["status"]
    assert any(address in line for line in seen["plan"]), seen["plan"]
    # Accepted means remembered.
    assert f"[{LOOPBACK}]:{ssh_server.port}" in (fresh_home / ".ssh" / "known_hosts").read_text()
    listed = run_recovery(
        "images", address, "--identity", str(ssh_server.identity),
        env={**os.environ, "RECOVERY_PASSWORD": SSH_PASSPHRASE},
    )  # fmt: skip
    assert "over-sftp" in listed.stdout
    # The passphrase typed in the form went nowhere else: not into the location, the plan, the
    # TUI's error log.
    secret = SSH_PASSPHRASE.encode()
    for path in folder.rglob("*"):
        if path.is_file():
            assert secret not in path.read_bytes(), path
    assert not any(SSH_PASSPHRASE in line for line in seen["plan"])
    if ERROR_LOG.exists():
        assert secret not in ERROR_LOG.read_bytes()


def test_restore_lists_an_smb_share_through_the_tui(
    loop,
    smb_server: SmbServer,  # noqa: F811
    fresh_home: Path,
) -> None:  # type: ignore[no-untyped-def]
    """Restore > n > SMB: a wrong password is one line under the form; the right one lists the
    share's images."""
    src, _ = make_gpt_system_disk(loop, 256 * MiB)
    address = smb_server.address("tui-restore")
    run_recovery(
        "backup", src, "--to", address, "--name", "on-the-nas", "--yes",
        env={**os.environ, "RECOVERY_PASSWORD": SMB_PASSWORD},
    )  # fmt: skip
    app = RecoveryApp(real_backends({src}), cursor_blink=False)
    seen: dict[str, Any] = {}

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "3")
        assert isinstance(pilot.app.screen, LocationScreen)
        await press(pilot, "n")
        form = pilot.app.screen
        assert isinstance(form, NetworkLocationScreen)
        server = f"{LOOPBACK}:{smb_server.port}"
        await fill_form(pilot, 0, [server, "backups/tui-restore", SMB_USER, "wrong-password"])
        await press(pilot, "enter")
        await until(pilot, lambda: "Connecting" not in status_of(form), 120)
        seen["wrong"] = status_of(form)
        secret = form.query_one("#secret", Input)
        secret.value = ""
        secret.focus()
        await type_text(pilot, SMB_PASSWORD)
        await press(pilot, "enter")
        await until(pilot, lambda: isinstance(pilot.app.screen, BackupsScreen), 120)
        images = pilot.app.screen
        assert isinstance(images, BackupsScreen)
        await until(pilot, lambda: bool(images.images), 120)
        seen["images"] = [i.name for i in images.images]

    drive(app, scenario)
    assert seen["images"] == ["on-the-nas"]
    assert seen["wrong"] and "\n" not in seen["wrong"].strip(), seen["wrong"]
    assert "wrong-password" not in seen["wrong"]


def test_restore_lists_an_s3_bucket_with_keys_typed_in_the_tui(
    loop,
    s3_server: S3Server,  # noqa: F811
    fresh_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # type: ignore[no-untyped-def]
    """Restore > n > S3 (plain HTTP): with no keys in the environment, the keys typed in the
    form open the bucket; a wrong secret key is one line that does not repeat it."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    src, _ = make_gpt_system_disk(loop, 256 * MiB)
    address = s3_server.address("tui-bucket", "pc1")
    run_recovery(
        "backup", src, "--to", address, "--name", "in-the-bucket", "--yes",
        env={**os.environ, **s3_server.env()},
    )  # fmt: skip
    app = RecoveryApp(real_backends({src}), cursor_blink=False)
    seen: dict[str, Any] = {}

    async def scenario(pilot: Pilot[Any]) -> None:
        await press(pilot, "3", "n")
        form = pilot.app.screen
        assert isinstance(form, NetworkLocationScreen)
        server = f"{LOOPBACK}:{s3_server.port}"
        await fill_form(pilot, 3, [server, "tui-bucket/pc1", S3_ACCESS_KEY, "wrong-secret-9"])
        await press(pilot, "enter")
        await until(pilot, lambda: "Connecting" not in status_of(form), 180)
        seen["wrong"] = status_of(form)
        secret = form.query_one("#secret", Input)
        secret.value = S3_SECRET_KEY
        secret.focus()
        await press(pilot, "enter")
        await until(pilot, lambda: isinstance(pilot.app.screen, BackupsScreen), 180)
        images = pilot.app.screen
        assert isinstance(images, BackupsScreen)
        await until(pilot, lambda: bool(images.images), 120)
        seen["images"] = [i.name for i in images.images]

    drive(app, scenario)
    assert seen["images"] == ["in-the-bucket"]
    assert seen["wrong"] and "\n" not in seen["wrong"].strip(), seen["wrong"]
    assert "wrong-secret-9" not in seen["wrong"]
