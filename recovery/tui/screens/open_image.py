"""An image's partitions and folders as a tree: tick files and folders, copy them somewhere.

Pushed by the Backups screen ("o Open"). The image is opened through the engine
(``open_image``: the same read-only view as ``recovery open``) in a private folder under
/run/recovery, and closed when the person leaves. A folder is read when it is expanded, in a
worker. Space ticks the highlighted file or folder; "c" asks where to copy (the location
picker, as for a backup: a partition mounted for you, or a typed folder) and copies the ticked
paths with the engine's ``extract`` on a progress screen.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widget import Widget
from textual.widgets import Static, Tree
from textual.widgets.tree import TreeNode

from recovery.engine.api import ImageInfo
from recovery.engine.locations import DEFAULT_FOLDER
from recovery.engine.progress import CancelToken, Progress
from recovery.tui.formatting import human_size
from recovery.tui.screens.base import StepScreen
from recovery.tui.screens.dialogs import InfoScreen

RUN_DIR = os.environ.get("RECOVERY_RUN_DIR", "/run/recovery")
"""Where the private view folders go (the engine keeps its state below it too)."""


@dataclass(frozen=True)
class Place:
    """A node of the tree: partition ``number`` and a path in its file system."""

    number: int
    path: str
    folder: bool
    label: str

    @property
    def ref(self) -> str:
        return f"p{self.number}:{self.path}"


DETAILS = 1 + 9 + 2 + 16
"""What a file's label has after its name: a space, the size, two spaces, the date."""


def entry_label(name: str, folder: bool, size: int, mtime: float, width: int = 36) -> str:
    """A file's name in ``width`` characters (cut with "~"), its size and date; a folder's name."""
    when = datetime.fromtimestamp(mtime, UTC).strftime("%Y-%m-%d %H:%M")
    shown = name if len(name) <= width else name[: width - 1] + "~"
    if folder:
        return f"{shown}/"
    return f"{shown:<{width}} {human_size(size):>9}  {when}"


def name_width(tree_width: int, path: str) -> int:
    """How wide the names in folder ``path`` may be for their sizes and dates to stay on
    screen: the tree indents each level by 4 and draws an expander and "[ ] " before a label
    (at 80 columns, 30 characters for a file three folders deep)."""
    depth = 0 if path == "/" else path.count("/")
    indent = 4 * (depth + 1) + 4
    return max(12, min(36, tree_width - indent - len("[ ] ") - DETAILS - 2))


def list_folder(root: str, number: int, path: str, width: int = 36) -> list[Place]:
    """The entries of one folder of a mounted partition, folders first (runs in a worker)."""
    where = os.path.join(root, f"p{number}") + (path if path != "/" else "")
    out = []
    with os.scandir(where) as it:
        for e in it:
            if path == "/" and e.name == "lost+found":
                continue
            st = e.stat(follow_symlinks=False)
            folder = e.is_dir(follow_symlinks=False)
            label = entry_label(e.name, folder, st.st_size, st.st_mtime, width)
            out.append(Place(number, os.path.join(path, e.name), folder, label))
    return sorted(out, key=lambda p: (not p.folder, p.path.lower()))


def copy_destination(picked: str, image: str) -> str:
    """Where "Copy to..." puts the files: a typed folder as it is; on a partition picked as for
    a backup (its backup folder or a backup location), a folder beside it named after the
    image, so files never land inside a backup location."""
    p = Path(picked)
    if p.name == DEFAULT_FOLDER or (p / "recovery-repo").exists():
        return str(p.parent / f"recovered-{image}")
    return picked


def close_view(engine: Any, directory: str, folder: str | None) -> None:
    """Close an open image and remove its private folder (runs in a worker)."""
    engine.close_image(directory)
    if folder is not None:
        with contextlib.suppress(OSError):
            os.rmdir(folder)


class OpenImageScreen(StepScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back (closes it)"),
        Binding("space", "tick", "Tick", priority=True),
        Binding("c", "copy", "Copy to..."),
    ]

    def __init__(self, title: tuple[str, ...], repo: str, image: ImageInfo) -> None:
        super().__init__(*title)
        self.repo = repo
        self.image = image
        self.folder: str | None = None
        self.view: Any = None
        self.ticked: dict[str, Place] = {}
        self._pending: dict[str, TreeNode[Place | None]] = {}
        """Folders being read, by node id, until their listing comes back."""

    def compose_body(self) -> Iterable[Widget]:
        yield Static(
            f"{self.image.name}: Enter opens a folder, Space ticks, c copies the ticked.",
            id="intro",
            markup=False,
        )
        tree: Tree[Place | None] = Tree(self.image.name, id="files")
        tree.show_root = False
        yield tree
        yield Static("Opening the image (read-only)...", id="status", markup=False)

    def on_mount(self) -> None:
        self.query_one("#files", Tree).focus()
        self.run_job("open", self._open)

    def _open(self) -> Any:
        os.makedirs(RUN_DIR, exist_ok=True)
        self.folder = tempfile.mkdtemp(prefix="tui-", dir=RUN_DIR)
        return self.rapp.backends.engine.open_image(self.repo, self.image.name, self.folder)

    def set_status(self, text: str) -> None:
        self.query_one("#status", Static).update(text)

    # The tree --------------------------------------------------------------------------

    def show_partitions(self) -> None:
        tree: Tree[Place | None] = self.query_one("#files", Tree)
        sizes = {p.number: p.size for p in self.image.partitions}
        for p in self.view.partitions:
            n = int(p["number"])
            size = human_size(sizes[n]) if n in sizes else ""
            what = f"p{n}  {p.get('fstype') or 'unknown'}  {size}"
            if p.get("mounted"):
                tree.root.add(Text(what), Place(n, "/", True, what))
            else:
                tree.root.add_leaf(Text(f"{what}  (no files: {p.get('reason')})"), None)
        tree.cursor_line = 0
        self.set_status("Enter opens a partition or folder.")

    def on_tree_node_expanded(self, event: Tree.NodeExpanded[Place | None]) -> None:
        event.stop()
        node = event.node
        place = node.data
        if place is None or not place.folder or node.children or self.view is None:
            return
        self.set_status(f"Reading {place.ref}...")
        self._pending[str(node.id)] = node
        tree = self.query_one("#files", Tree)
        width = name_width(tree.size.width or self.app.size.width, place.path)
        self.run_job(f"list:{node.id}", list_folder, self.view.dir, place.number, place.path, width)

    def fill(self, node: TreeNode[Place | None], places: list[Place]) -> None:
        for place in places:
            label = self.marked(place)
            if place.folder:
                node.add(label, place)
            else:
                node.add_leaf(label, place)
        if not places:
            node.add_leaf("(empty)", None)
        self.set_status(f"{len(self.ticked)} ticked. c copies them.")

    def marked(self, place: Place) -> Text:
        # Text, not a string: a label is markup otherwise, and "[x]" would vanish.
        return Text(("[x] " if place.ref in self.ticked else "[ ] ") + place.label)

    def action_tick(self) -> None:
        tree: Tree[Place | None] = self.query_one("#files", Tree)
        node = tree.cursor_node
        if node is None or node.data is None:
            return
        place = node.data
        if place.ref in self.ticked:
            del self.ticked[place.ref]
        else:
            self.ticked[place.ref] = place
        node.set_label(self.marked(place))
        self.set_status(f"{len(self.ticked)} ticked. c copies them.")

    # Copy ------------------------------------------------------------------------------

    def action_copy(self) -> None:
        if not self.ticked:
            self.app.push_screen(
                InfoScreen("Nothing ticked", ["Tick files or folders with Space first."])
            )
            return
        from recovery.tui.screens.location import LocationScreen

        self.app.push_screen(
            LocationScreen(("Backups", self.image.name, "Copy to"), self.copy_to, for_backup=True)
        )

    def copy_to(self, picked: str) -> None:
        from recovery.tui.screens.progress import ProgressScreen

        dest = copy_destination(picked, self.image.name)
        refs = sorted(self.ticked)
        engine = self.rapp.backends.engine
        repo, image = self.repo, self.image.name

        def job(progress: Progress, cancel: CancelToken) -> list[str]:
            plan = engine.extract_plan(repo, image, refs, dest)
            result = engine.extract_run(plan, progress, cancel)
            lines = [*result.copied, *(f"note: {n}" for n in result.notes)]
            lines += [f"not copied: {p}" for p in result.problems]
            lines.append(
                f"Copied {result.files} file(s), {result.folders} folder(s), "
                f"{human_size(result.bytes)} to {dest}."
            )
            return lines

        def close() -> None:
            # Back to this screen: the progress screen and the location picker go.
            while self.app.screen is not self and len(self.app.screen_stack) > 1:
                self.app.pop_screen()

        self.app.push_screen(
            ProgressScreen(
                ("Backups", image, "Copy"),
                f"Copying {len(refs)} item(s) from {image} to {dest}",
                job,
                what="the copy",
                cancel_note="What was copied so far stays.",
                on_close=close,
            )
        )

    # Jobs and leaving --------------------------------------------------------------------

    def job_done(self, tag: str, result: Any) -> None:
        if tag == "open":
            self.view = result
            self.show_partitions()
        elif tag.startswith("list:"):
            node = self._pending.pop(tag.partition(":")[2], None)
            if node is not None:
                self.fill(node, list(result))

    def job_failed(self, tag: str, error: BaseException) -> None:
        super().job_failed(tag, error)
        if tag == "open":
            self._forget_folder()
            self.set_status("The image could not be opened.")
        else:
            self.set_status("")

    def action_back(self) -> None:
        # The screen goes at once; the image is closed by an app worker, since a worker of a
        # screen being removed would never be waited for.
        view, folder = self.view, self.folder
        self.view = self.folder = None
        if view is not None:
            engine = self.rapp.backends.engine
            self.app.run_worker(
                lambda: close_view(engine, view.dir, folder),
                thread=True,
                group="close-image",
                exit_on_error=False,
            )
        elif folder is not None:
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        self.app.pop_screen()

    def _forget_folder(self) -> None:
        self.view = None
        if self.folder is not None:
            with contextlib.suppress(OSError):
                os.rmdir(self.folder)
            self.folder = None

    def on_unmount(self) -> None:
        # The app is quitting with the image still open: close it before the process ends.
        if self.view is not None:
            with contextlib.suppress(Exception):
                self.rapp.backends.engine.close_image(self.view.dir)
            self._forget_folder()
