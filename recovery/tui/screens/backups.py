"""The images at a backup location, with their status; verify, restore or remove one.

Lists through the engine (``list_images``) in a worker; the highlighted image's partitions are
shown under the table. Clonezilla image folders at the location are listed too, marked [CZ];
they restore and verify like ours (through the same plan and progress screens) but cannot be
opened or removed here. Removing asks first (a modal focused on Cancel) and says that the space
only this image used is freed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.widget import Widget
from textual.widgets import DataTable, Static
from textual.widgets.data_table import CellDoesNotExist

from recovery.engine.plans import ImageInfo, RemoveResult
from recovery.tui.formatting import human_size, short_date
from recovery.tui.screens.base import StepScreen
from recovery.tui.screens.dialogs import ConfirmScreen, InfoScreen

CLONEZILLA_MARK = "[CZ] "
"""Before the name of a Clonezilla image in the list (its Status column says so too)."""


def image_status(image: ImageInfo) -> str:
    return "Clonezilla" if image.clonezilla else image.status


def image_label(image: ImageInfo) -> str:
    name = (CLONEZILLA_MARK if image.clonezilla else "") + image.name
    return name if len(name) <= 22 else name[:21] + "~"


def image_source(image: ImageInfo) -> str:
    return " ".join(x for x in (image.source_path, image.source_model or "") if x)


def image_details(image: ImageInfo) -> list[str]:
    if image.kind == "files":
        lines = [
            f"{image.name}: files of {image.source_path}: {image.files} file(s), "
            f"{human_size(image.data_size)}, {human_size(image.stored_size)} stored",
            "A file image: open it (o) to copy files out; it is not restored onto a disk.",
        ]
        if image.verified_at:
            lines.append(f"Last verified {short_date(image.verified_at)} UTC.")
        return lines
    lines = [
        f"{image.name}: from {image_source(image)} ({human_size(image.source_size)}, "
        f"{image.table or 'no table'}), {human_size(image.data_size)} of data, "
        f"{human_size(image.stored_size)} stored",
    ]
    if image.clonezilla:
        lines.append(
            "Made by Clonezilla: restore (whole disk) and verify work here; it cannot be opened "
            "or removed here (recovery import copies it into a location of ours)."
        )
    if image.verified_at:
        lines.append(f"Last verified {short_date(image.verified_at)} UTC.")
    for p in image.partitions:
        what = " ".join(x for x in (p.fstype or "raw", p.label or "") if x)
        size, stored = human_size(p.size), human_size(p.stored)
        lines.append(f"  {p.number:>2}  {size:>10}  {what:<24} {stored:>10} saved")
    return lines


class BackupsScreen(StepScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("enter", "restore", "Restore", show=True),
        Binding("v", "verify", "Verify"),
        Binding("o", "open", "Open"),
        Binding("x,delete", "remove", "Remove"),
        Binding("f5", "refresh", "Refresh"),
    ]

    def __init__(
        self,
        title: tuple[str, ...],
        repo: str,
        on_restore: Callable[[str, ImageInfo], None],
        on_verify: Callable[[BackupsScreen, str, ImageInfo], None],
        *,
        manage: bool = True,
    ) -> None:
        super().__init__(*title)
        self.repo = repo
        self._on_restore = on_restore
        self._on_verify = on_verify
        self._manage = manage
        self.images: list[ImageInfo] = []

    def compose_body(self) -> Iterable[Widget]:
        intro = f"Backups in {self.repo}\n"
        if self._manage:
            intro += "Enter restores the highlighted image, v verifies it, x removes it."
        else:
            intro += "Pick the image to restore and press Enter."
        yield Static(intro, id="intro", markup=False)
        yield DataTable(id="images", cursor_type="row")
        yield Static("", id="details", markup=False)

    def on_mount(self) -> None:
        table = self.query_one("#images", DataTable)
        table.add_column("Image", key="name")
        table.add_column("Date (UTC)", key="date")
        table.add_column("Source", key="source")
        table.add_column("Size", key="size")
        table.add_column("Status", key="status")
        table.focus()
        self.action_refresh()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("remove", "open") and self.images:
            image = self.selected
            if image is not None and image.clonezilla:
                return False  # hidden: Clonezilla's folders are not ours to remove or open
        return self._manage or action not in ("verify", "remove", "open")

    def action_refresh(self) -> None:
        self.query_one("#details", Static).update("Reading the backup location...")
        self.run_job("list", self.rapp.backends.engine.list_images, self.repo)

    def job_done(self, tag: str, result: object) -> None:
        if tag == "list":
            assert isinstance(result, list)  # engine.list_images
            self.show([i for i in result if isinstance(i, ImageInfo)])
        elif tag.startswith("remove:"):
            name = tag.partition(":")[2]
            freed = result.freed_bytes if isinstance(result, RemoveResult) else 0
            self.app.push_screen(
                InfoScreen("Removed", [f"Image {name} is gone; {human_size(freed)} freed."])
            )
            self.action_refresh()

    def job_failed(self, tag: str, error: BaseException) -> None:
        super().job_failed(tag, error)
        self.query_one("#details", Static).update("")

    def show(self, images: list[ImageInfo], select: str | None = None) -> None:
        self.images = sorted(images, key=lambda i: i.created, reverse=True)
        table = self.query_one("#images", DataTable)
        current = select or (self.selected.name if self.selected else None)
        table.clear()
        for image in self.images:
            table.add_row(
                image_label(image),
                short_date(image.created),
                image.source_path[:14],
                human_size(image.data_size),
                image_status(image),
                key=image.name,
            )
        if current and any(i.name == current for i in self.images):
            table.move_cursor(row=table.get_row_index(current))
        self.show_details()

    @property
    def selected(self) -> ImageInfo | None:
        table = self.query_one("#images", DataTable)
        if not self.images or table.row_count == 0:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except CellDoesNotExist:
            return None
        return next((i for i in self.images if i.name == key), None)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self.show_details()
        self.refresh_bindings()

    def show_details(self) -> None:
        details = self.query_one("#details", Static)
        image = self.selected
        if image is None:
            details.update("No images here yet." if not self.images else "")
            return
        details.update("\n".join(image_details(image)))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_restore()

    def action_restore(self) -> None:
        image = self.selected
        if image is not None:
            self._on_restore(self.repo, image)

    def action_verify(self) -> None:
        image = self.selected
        if image is not None:
            self._on_verify(self, self.repo, image)

    def action_remove(self) -> None:
        image = self.selected
        if image is None or image.clonezilla:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.query_one("#details", Static).update(f"Removing {image.name}...")
                self.run_job(
                    f"remove:{image.name}", self.rapp.backends.engine.remove, self.repo, image.name
                )

        self.app.push_screen(
            ConfirmScreen(
                f"Remove image {image.name}?",
                [
                    f"From {image_source(image)}, saved {short_date(image.created)} UTC.",
                    "The space only this image uses is freed; other images stay complete.",
                    "This cannot be undone.",
                ],
                confirm="Remove it",
            ),
            answered,
        )

    def action_open(self) -> None:
        image = self.selected
        if image is None or image.clonezilla:
            return
        from recovery.tui.screens.open_image import OpenImageScreen

        self.app.push_screen(OpenImageScreen(("Backups", image.name), self.repo, image))
