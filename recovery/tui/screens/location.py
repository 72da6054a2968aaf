"""Pick a backup location: a partition of a detected disk, a repository found on one, a typed
folder, or a network location (an SMB share, an SFTP server, an S3 bucket: ``n`` opens the form
of :mod:`recovery.tui.screens.network_location`; those used before in this session are listed
again, their login kept in memory).

For a backup the chosen partition is mounted read-write and the image goes into the repository
found there, or into ``recovery-backups`` at its top. To open existing backups, a partition is
mounted read-only and searched; the repositories found appear under it. Partitions that are
sources of the backup are not offered: they stay unmounted.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import ClassVar

from rich.cells import cell_len
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Button, DataTable, Input, Static
from textual.widgets.data_table import RowDoesNotExist

from recovery.engine.locations import DEFAULT_FOLDER, Location
from recovery.errors import RecoveryError
from recovery.tui.formatting import human_size
from recovery.tui.messages import DisksUpdated
from recovery.tui.screens.base import StepScreen
from recovery.tui.screens.dialogs import InfoScreen
from recovery.tui.widgets.fitted_table import Column, FittedTable

COLUMNS = (
    Column("device", "Partition", cut_start=True),
    Column("label", "Label"),
    Column("fs", "FS"),
    Column("size", "Size"),
    Column("free", "Free"),
    Column("repos", "Backups"),
)
LABEL_FLOOR = 10
"""A label cut to fit 80 columns keeps this much; partition names and the rest stay whole."""


class LocationScreen(StepScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("s", "search_all", "Search all"),
        Binding("f5", "refresh", "Refresh"),
        Binding("ctrl+t", "type_path", "Type a path"),
        Binding("n", "network", "Network location"),
    ]

    def __init__(
        self,
        title: tuple[str, ...],
        on_pick: Callable[[str], None],
        *,
        for_backup: bool,
        exclude: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(*title)
        self._on_pick = on_pick
        self.for_backup = for_backup
        self._exclude = exclude
        self._locations: list[Location] = []
        self._network: list[str] = []
        """Network locations used before in this session (their login is kept in memory)."""
        self._busy = False
        self._searched: set[str] = set()
        """Partitions this screen mounted read-only to look into; unmounted again when the
        person has picked, unless the pick is on them (a restore target must not be mounted)."""

    def compose_body(self) -> Iterable[Widget]:
        if self.for_backup:
            intro = (
                "Where should the backup go? Pick a partition (it is mounted for you) or a "
                "backup location found on one, or type a folder below."
            )
        else:
            intro = (
                "Where are the backups? Pick a partition to search it (mounted read-only), "
                "or type a folder below."
            )
        yield Static(intro, id="intro", markup=False)
        yield FittedTable(COLUMNS, shrink=("label", "device"), id="locations")
        yield Static("", id="status", markup=False)
        with Horizontal(id="path-row"):
            yield Input(placeholder="/path/to/folder", id="path")
            yield Button("Use folder", id="use-path")
            yield Button("Network...", id="network")

    def on_mount(self) -> None:
        for field_id in ("path",):
            self.query_one(f"#{field_id}", Input).cursor_blink = self.rapp.cursor_blink
        table = self.query_one("#locations", FittedTable)
        self.action_refresh()
        table.focus()

    def on_screen_resume(self) -> None:
        """Back from the network form or a later step: a network location used meanwhile is
        offered in the table."""
        if not self._busy and self._network != self.rapp.secrets.known_locations():
            self.show(self._locations)

    def on_disks_updated(self, message: DisksUpdated) -> None:
        if not self._busy:
            self.action_refresh()

    def action_refresh(self) -> None:
        self.set_status("Looking for partitions...")
        self.run_job("candidates", self.rapp.backends.locations.candidates, list(self.rapp.disks))

    def action_search_all(self) -> None:
        if self._busy or not self._locations:
            return
        self.start_busy("Mounting every partition read-only and searching it...")
        self.run_job("search-all", self._search_all, list(self._locations))

    def _search_all(self, locations: list[Location]) -> tuple[list[Location], list[str]]:
        """Runs in the worker: one partition that cannot be opened does not stop the rest."""
        finder = self.rapp.backends.locations
        found, failed = [], []
        for loc in locations:
            try:
                found.append(finder.search(loc))
            except RecoveryError as e:
                found.append(loc)
                failed.append(f"{loc.name}: {e.message}")
        return found, failed

    def finish(self, repo: str) -> None:
        """The person picked ``repo``: unmount what was only searched, then go on."""
        keep = [
            loc
            for loc in self._locations
            if loc.mountpoint and (repo + "/").startswith(loc.mountpoint.rstrip("/") + "/")
        ]
        release = [
            loc
            for loc in self._locations
            if loc.device in self._searched and loc not in keep and loc.mountpoint
        ]
        if not release:
            self._on_pick(repo)
            return
        finder = self.rapp.backends.locations
        self.start_busy("Unmounting the partitions that were only searched...")
        self.run_job(f"finish:{repo}", lambda: [finder.unmount(loc) for loc in release])

    def action_type_path(self) -> None:
        self.query_one("#path", Input).focus()

    def set_status(self, text: str) -> None:
        self.query_one("#status", Static).update(text)

    # The table ---------------------------------------------------------------------------

    def show(self, locations: list[Location], cursor: str | None = None) -> None:
        self._locations = [loc for loc in locations if loc.device not in self._exclude]
        self._network = self.rapp.secrets.known_locations()
        table = self.query_one("#locations", FittedTable)
        rows: list[tuple[str, tuple[str, ...]]] = []
        for i, loc in enumerate(self._locations):
            free = human_size(loc.free) if loc.free is not None else "-"
            repos = str(len(loc.repositories)) if loc.mountpoint else "not searched"
            name = loc.device or loc.mountpoint or "?"
            size = human_size(loc.size) if loc.size else ""
            rows.append((f"loc:{i}", (name, loc.label or "", loc.fstype or "", size, free, repos)))
            for j, repo in enumerate(loc.repositories):
                short = f"\u2514 {_short(repo, loc)}"  # └ under its partition
                rows.append((f"repo:{i}:{j}", (short, "", "", "", "", "backups")))
        # Network locations used before in this session, their login kept in memory.
        for k, address in enumerate(self._network):
            rows.append((f"net:{k}", (address, "network", "", "", "", "")))
        # A location's path may be cut (at its start) to fit; a partition's name never is.
        names = [cell_len(cells[0]) for key, cells in rows if key.startswith("loc:")]
        labels = [cell_len(cells[1]) for _, cells in rows]
        floors = {
            "device": max(names, default=0),
            "label": min(max(labels, default=0), LABEL_FLOOR),
        }
        table.set_rows(rows, floors)
        if cursor is not None:
            with contextlib.suppress(RowDoesNotExist):
                table.move_cursor(row=table.get_row_index(cursor))
        if not self._locations and not self._network:
            self.set_status(
                "No partitions that can hold backups. Type a folder below, or n for a network "
                "location."
            )
        else:
            self.set_status(
                "Enter: use the highlighted line."
                + ("" if self.for_backup else " A partition is searched when you pick it;")
                + ("" if self.for_backup else " s searches them all.")
            )

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        key = event.row_key.value or ""
        kind, _, rest = key.partition(":")
        if kind == "loc":
            self.pick_location(int(rest))
        elif kind == "repo":
            i, j = (int(x) for x in rest.split(":"))
            self.pick_repository(i, j)
        elif kind == "net":
            self.finish(self._network[int(rest)])

    def pick_location(self, index: int) -> None:
        loc = self._locations[index]
        if self.for_backup:
            self.start_busy(f"Mounting {loc.name} read-write...")
            self.run_job(f"mount-for-backup:{index}", self.rapp.backends.locations.mount, loc, True)
        else:
            self.start_busy(f"Mounting {loc.name} read-only and searching it...")
            self.run_job(f"search:{index}", self.rapp.backends.locations.mount, loc, False)

    def pick_repository(self, index: int, repo_index: int) -> None:
        loc = self._locations[index]
        repo = loc.repositories[repo_index]
        if self.for_backup and not loc.writable:
            self.start_busy(f"Mounting {loc.name} read-write...")
            self.run_job(
                f"mount-repo:{index}:{repo_index}", self.rapp.backends.locations.mount, loc, True
            )
            return
        self.finish(repo)

    def start_busy(self, text: str) -> None:
        self._busy = True
        self.set_status(text)

    # The typed path ----------------------------------------------------------------------

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.use_typed_path()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "use-path":
            self.use_typed_path()
        elif event.button.id == "network":
            self.action_network()

    def action_network(self) -> None:
        from recovery.tui.screens.network_location import NetworkLocationScreen

        def picked(address: str) -> None:
            self.app.pop_screen()
            self.finish(address)

        self.app.push_screen(
            NetworkLocationScreen(self.title_parts, picked, for_backup=self.for_backup)
        )

    def use_typed_path(self) -> None:
        text = self.query_one("#path", Input).value.strip()
        if not text:
            self.app.push_screen(InfoScreen("No folder", ["Type the full path of a folder."]))
            return
        path = os.path.abspath(os.path.expanduser(text))
        self.start_busy(f"Looking at {path}...")
        self.run_job(f"directory:{path}", self.rapp.backends.locations.directory, path)

    # Jobs ---------------------------------------------------------------------------------

    def job_done(self, tag: str, result: object) -> None:
        self._busy = False
        kind, _, rest = tag.partition(":")
        if kind == "candidates":
            assert isinstance(result, list)
            self.show(result)
            return
        if kind == "finish":
            self._on_pick(rest)
            return
        if kind == "search-all":
            assert isinstance(result, tuple)
            self.searched_all(*result)
            return
        assert isinstance(result, Location)
        if kind == "directory":
            self.typed_directory(rest, result)
        elif kind == "mount-for-backup":
            self.replace_location(int(rest), result)
            if len(result.repositories) == 1:
                self.finish(result.repositories[0])
            else:
                assert result.mountpoint
                self.finish(str(Path(result.mountpoint) / DEFAULT_FOLDER))
        elif kind == "mount-repo":
            i, j = (int(x) for x in rest.split(":"))
            self.replace_location(i, result)
            self.finish(self._locations[i].repositories[j])
        elif kind == "search":
            index = int(rest)
            if result.device:
                self._searched.add(result.device)
            self.replace_location(index, result)
            if result.repositories:
                self.set_status(
                    f"Found {len(result.repositories)} backup location(s) on {result.name}: "
                    "pick one."
                )
            else:
                self.set_status(f"No backups on {result.name}.")

    def job_failed(self, tag: str, error: BaseException) -> None:
        super().job_failed(tag, error)
        self._busy = False
        self.set_status("")

    def searched_all(self, locations: list[Location], failed: list[str]) -> None:
        self._searched.update(loc.device for loc in locations if loc.device and loc.mountpoint)
        first = next((i for i, loc in enumerate(locations) if loc.repositories), None)
        self.show(locations, cursor=f"repo:{first}:0" if first is not None else None)
        count = sum(len(loc.repositories) for loc in locations)
        status = f"Searched {len(locations)} partition(s): {count} backup location(s) found."
        if failed:
            status += " Could not open: " + "; ".join(failed)
        self.set_status(status)

    def replace_location(self, index: int, loc: Location) -> None:
        locations = list(self._locations)
        locations[index] = loc
        cursor = f"repo:{index}:0" if loc.repositories else f"loc:{index}"
        self.show(locations, cursor=cursor)

    def typed_directory(self, path: str, loc: Location) -> None:
        if self.for_backup:
            self.finish(path)
            return
        if len(loc.repositories) == 1:
            self.finish(loc.repositories[0])
            return
        if not loc.repositories:
            self.set_status("")
            self.app.push_screen(
                InfoScreen(
                    "No backups there",
                    [
                        f"No backup location in {path} or the folders in it.",
                        "A backup location is a folder holding a file named recovery-repo.",
                    ],
                )
            )
            return
        self.show([*self._locations, loc], cursor=f"repo:{len(self._locations)}:0")
        self.set_status(f"{len(loc.repositories)} backup locations in {path}: pick one.")


def _short(repo: str, loc: Location) -> str:
    if loc.mountpoint and repo.startswith(loc.mountpoint.rstrip("/") + "/"):
        return repo[len(loc.mountpoint.rstrip("/")) + 1 :]
    return repo
