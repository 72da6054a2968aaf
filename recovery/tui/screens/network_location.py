"""The network location form: an SMB share, an SFTP server, an S3 bucket or an NFS export, with
the login (none for NFS: the server decides by this machine's address).

Reached from the location picker (``n``, or its button) for a backup, a restore or opening
backups. Connect builds the address (:mod:`recovery.repository.address` checks it), hands the
password, key file or S3 keys to the TUI's secrets provider (memory only, for this session) and
opens the location in a worker: an SSH server not seen before is shown with its fingerprint to
accept or refuse (asked by the provider), and anything that goes wrong is one line under the
form. The address the person gets back never holds a secret.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Button, Input, RadioButton, RadioSet, Static

from recovery.errors import NotARepository, RecoveryError
from recovery.repository.address import parse_address
from recovery.repository.secrets import S3Keys
from recovery.tui.screens.base import StepScreen
from recovery.tui.secrets import NetworkLogin

KINDS: tuple[tuple[str, str], ...] = (
    ("smb", "SMB share"),
    ("sftp", "SFTP server"),
    ("s3", "S3 bucket"),
    ("s3+http", "S3, plain HTTP"),
    ("nfs", "NFS"),
)

# (place title, place placeholder, user title, secret title) per kind.
FIELDS: dict[str, tuple[str, str, str, str]] = {
    "smb": ("Share and folder", "backups/pc1", "User", "Password"),
    "sftp": ("Folder", "/srv/backups or ~/backups", "User", "Password or key passphrase"),
    "s3": ("Bucket and prefix", "my-bucket/pc1", "Access key", "Secret key"),
    "s3+http": ("Bucket and prefix", "my-bucket/pc1", "Access key", "Secret key"),
    "nfs": ("Export and folder", "export/pc1", "", ""),
}


class ConsoleRadioButton(RadioButton):
    """The Linux console font has no U+25CF: a plain asterisk marks the chosen kind."""

    BUTTON_INNER = "*"


class NetworkLocationScreen(StepScreen):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "Back")]

    def __init__(
        self, title: tuple[str, ...], on_pick: Callable[[str], None], *, for_backup: bool
    ) -> None:
        super().__init__(*title, "Network")
        self._on_pick = on_pick
        self.for_backup = for_backup
        self.kind = "smb"

    def compose_body(self) -> Iterable[Widget]:
        yield Static(
            "A NAS or Windows share (SMB), an SSH server (SFTP), S3 object storage or an NFS "
            "export. The password or keys stay in memory for this session only.",
            id="intro",
            markup=False,
        )
        button = ConsoleRadioButton if self.rapp.console_mode else RadioButton
        with RadioSet(id="kind"):
            for i, (kind, name) in enumerate(KINDS):
                yield button(name, value=i == 0, id=f"kind-{kind.replace('+', '-')}")
        with Horizontal(classes="form-row"):
            yield Input(placeholder="nas.local or 192.168.1.10:445", id="server")
            yield Input(id="place")
        with Horizontal(classes="form-row", id="login-row"):
            yield Input(id="user")
            yield Input(password=True, id="secret")
        with Horizontal(classes="form-row", id="identity-row"):
            yield Input(placeholder="empty: ~/.ssh/id_*", id="identity")
        yield Static("", id="status", markup=False)
        with Horizontal(id="form-buttons"):
            yield Button("Connect", id="connect", variant="primary")
            yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        for field in self.query(Input):
            field.cursor_blink = self.rapp.cursor_blink
        self.query_one("#server", Input).border_title = "Server"
        self.query_one("#identity", Input).border_title = "SSH key file (optional)"
        self.show_kind("smb")
        self.query_one("#server", Input).focus()

    def show_kind(self, kind: str) -> None:
        self.kind = kind
        place, example, user, secret = FIELDS[kind]
        self.query_one("#place", Input).border_title = place
        self.query_one("#place", Input).placeholder = example
        self.query_one("#user", Input).border_title = user
        self.query_one("#secret", Input).border_title = secret
        self.query_one("#identity-row").display = kind == "sftp"
        self.query_one("#login-row").display = kind != "nfs"

    def on_radio_set_changed(self, event: RadioSet.Changed) -> None:
        event.stop()
        self.show_kind(KINDS[event.index][0])

    def set_status(self, text: str, problem: bool = False) -> None:
        status = self.query_one("#status", Static)
        status.update(text)
        status.set_class(problem, "-problem")

    # Connecting -----------------------------------------------------------------------------

    def address(self) -> str:
        """The address the fields make; checked by :func:`parse_address` (raises UsageError)."""
        server = self.query_one("#server", Input).value.strip()
        place = self.query_one("#place", Input).value.strip().strip("/")
        user = self.query_one("#user", Input).value.strip()
        if not server:
            raise _Missing("Give the server's name or address.")
        if not place:
            raise _Missing(f"Give the {FIELDS[self.kind][0].lower()}.")
        at = f"{user}@" if user and self.kind in ("smb", "sftp") else ""
        return str(parse_address(f"{self.kind}://{at}{server}/{place}"))

    def login(self) -> NetworkLogin:
        user = self.query_one("#user", Input).value.strip()
        secret = self.query_one("#secret", Input).value
        if self.kind == "nfs":
            return NetworkLogin()
        if self.kind.startswith("s3"):
            if bool(user) != bool(secret):
                raise _Missing("Give both S3 keys, or neither (keys from the environment).")
            return NetworkLogin(s3_keys=S3Keys(user, secret) if user else None)
        identity = self.query_one("#identity", Input).value.strip() if self.kind == "sftp" else ""
        return NetworkLogin(password=secret or None, identity=identity or None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.connect()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "connect":
            self.connect()
        else:
            self.action_back()

    def connect(self) -> None:
        try:
            address = self.address()
            login = self.login()
        except (_Missing, RecoveryError) as e:
            self.set_status(e.message if isinstance(e, RecoveryError) else str(e), True)
            return
        self.rapp.secrets.remember(address, login)
        self.set_status(f"Connecting to {address}...")
        self.query_one("#connect", Button).disabled = True
        self.run_job(f"probe:{address}", self._probe, address)

    def _probe(self, address: str) -> int | None:
        """Runs in the worker: the number of images there, or None for a location that a
        backup will create (not a backup location yet, but the server let us in)."""
        try:
            return len(self.rapp.backends.engine.list_images(address))
        except NotARepository:
            if self.for_backup:
                return None
            raise

    def job_done(self, tag: str, result: object) -> None:
        self.query_one("#connect", Button).disabled = False
        self._on_pick(tag.partition(":")[2])

    def job_failed(self, tag: str, error: BaseException) -> None:
        """One line under the form; the form keeps what was typed, to correct it."""
        from recovery.tui.screens.dialogs import explain

        self.query_one("#connect", Button).disabled = False
        title, text = explain(error)
        self.set_status(text if isinstance(error, RecoveryError) else f"{title}: {text}", True)


class _Missing(Exception):
    pass
