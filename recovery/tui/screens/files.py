"""File Backup's own steps: pick the partition to save files from, then tick its folders and
give exclude patterns.

The folder tree comes from the engine (``source_folders``: the partition mounted read-only for
the look, a few levels deep); on a Windows or Linux system partition the user-data preset's
folders come ticked. The person changes ticks with the space bar and types patterns to leave
out; the screen hands back plain data (folders, patterns, whether the preset stayed as it was).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Button, Input, OptionList, Static, Tree
from textual.widgets.option_list import Option
from textual.widgets.tree import TreeNode

from recovery.devices.model import Disk, Partition
from recovery.engine.plans import SourceFolders
from recovery.tui.formatting import human_size
from recovery.tui.screens.base import StepScreen
from recovery.tui.screens.dialogs import InfoScreen
from recovery.tui.selection import partition_roles

FILE_SYSTEMS = frozenset({"ext2", "ext3", "ext4", "ntfs", "vfat", "xfs", "btrfs"})


def file_partitions(disks: list[Disk]) -> list[tuple[Disk, Partition, str]]:
    """Partitions whose files can be saved, with their role (``Windows``, ``Linux root``...)."""
    out = []
    for d in disks:
        if d.boot_medium:
            continue
        roles = partition_roles(d)
        for p in d.partitions:
            if p.fstype in FILE_SYSTEMS:
                out.append((d, p, roles[p.number].name))
    return out


class FileSourceScreen(StepScreen):
    """One partition with a file system, the system partition first under the cursor."""

    def __init__(self, title: tuple[str, ...], on_pick: Callable[[str, str], None]) -> None:
        super().__init__(*title)
        self._on_pick = on_pick

    def compose_body(self) -> Iterable[Widget]:
        rows = file_partitions(self.rapp.disks)
        yield Static(
            "Pick the partition to save files from (Enter). It is only read, never written.",
            id="intro",
        )
        options = []
        for _d, p, role in rows:
            label = (p.label or p.partlabel or "")[:16]
            text = f"{p.path:<16} {human_size(p.size):>9}  {p.fstype or '-':<6} {role:<17} {label}"
            options.append(Option(Text(text), id=p.path))
        if not options:
            yield Static("No partition with a file system recovery can read was found.")
        yield OptionList(*options, id="sources")
        self._roles = {p.path: role for _, p, role in rows}

    def on_mount(self) -> None:
        ol = self.query_one(OptionList)
        ol.focus()
        for i, (_, _p, role) in enumerate(file_partitions(self.rapp.disks)):
            if role in ("Windows", "Linux root"):
                ol.highlighted = i
                break

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id:
            self._on_pick(event.option.id, self._roles.get(event.option.id, ""))


@dataclass(frozen=True)
class FolderChoice:
    folders: list[str]
    """Ticked folders, absolute in the partition's file system."""
    excludes: list[str]
    preset: bool
    """True when the ticks are the user-data preset's, unchanged (its excludes then apply)."""


class FolderTree(Tree[str]):
    """Space ticks a folder (with all it holds), Enter opens or closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "tick", "Tick", show=True),
        Binding("enter", "toggle_node", "Open", show=False),
    ]

    def __init__(self, ticked: set[str]) -> None:
        super().__init__("/", data="/", id="folders")
        self.ticked = ticked

    def render_label(self, node: TreeNode[str], base_style: Style, style: Style) -> Text:
        path = node.data or "/"
        mark = "[x] " if path in self.ticked else "[ ] "
        name = path.rsplit("/", 1)[-1] or "/"
        return Text(mark + name, style=style)

    def action_tick(self) -> None:
        node = self.cursor_node
        if node is None or node.data is None:
            return
        if node.data in self.ticked:
            self.ticked.discard(node.data)
        else:
            self.ticked.add(node.data)
        self._refresh_node(node)
        self.refresh()


class FolderTreeScreen(StepScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("ctrl+n,f2", "next", "Next"),
    ]

    def __init__(
        self,
        title: tuple[str, ...],
        source: str,
        load: Callable[[], SourceFolders],
        on_pick: Callable[[FolderChoice], None],
    ) -> None:
        super().__init__(*title)
        self._source = source
        self._load = load
        self._on_pick = on_pick
        self._folders: SourceFolders | None = None

    def compose_body(self) -> Iterable[Widget]:
        yield Static(f"Looking at the folders of {self._source}...", id="intro", markup=False)
        yield FolderTree(set())
        yield Static("Leave out (patterns, separated by spaces):", id="excludes-label")
        yield Input(placeholder="*.tmp node_modules/ /Users/*/AppData", id="excludes")
        with Horizontal(id="buttons"):
            yield Button("Next", id="next", variant="primary")

    def on_mount(self) -> None:
        self.run_job("folders", self._load)

    def job_done(self, tag: str, result: object) -> None:
        assert isinstance(result, SourceFolders)
        self._folders = result
        tree = self.query_one(FolderTree)
        tree.ticked = set(result.preset) if result.preset else set()
        nodes: dict[str, TreeNode[str]] = {"/": tree.root}
        for path in result.folders:
            parent = nodes.get(path.rsplit("/", 1)[0] or "/", tree.root)
            nodes[path] = parent.add(path.rsplit("/", 1)[-1], data=path)
        for path in result.preset:
            node = nodes.get(path)
            while node is not None and node.parent is not None:
                node.parent.expand()
                node = node.parent
        tree.root.expand()
        intro = self.query_one("#intro", Static)
        if result.system:
            intro.update(
                f"A {result.system.capitalize()} system: its users' folders are ticked (caches, "
                "temporary files, the recycle bin and the page file left out). Space ticks, "
                "Enter opens a folder, Ctrl+N goes on."
            )
        else:
            intro.update(
                "Tick the folders to save with the space bar (Enter opens a folder), then "
                "Ctrl+N. Nothing ticked saves the whole partition."
            )
        tree.focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_next()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_next()

    def action_next(self) -> None:
        if self._folders is None:
            return
        ticked = sorted(self.query_one(FolderTree).ticked)
        # A folder inside a ticked folder adds nothing.
        folders = [f for f in ticked if not any(f.startswith(t + "/") for t in ticked if t != f)]
        excludes = self.query_one("#excludes", Input).value.split()
        preset = bool(self._folders.preset) and set(folders) == set(self._folders.preset)
        if not folders and self._folders.preset:
            self.app.push_screen(
                InfoScreen(
                    "Nothing ticked",
                    ["Tick at least one folder with the space bar, or tick / for everything."],
                )
            )
            return
        self._on_pick(FolderChoice(folders or ["/"], excludes, preset))
