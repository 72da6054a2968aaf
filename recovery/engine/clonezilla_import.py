"""``import``: a Clonezilla image folder turned into one of our images (docs/FORMAT.md).

Called by the ``import`` command. The result is an ordinary image, deduplicated with everything
else in the repository: the disk's layout stream holds the boot area Clonezilla saved (the MBR,
the primary GPT and, on MBR disks, the hidden data after the MBR) and the backup GPT at the
disk's end; each partition stream holds the used blocks from its partclone image, cut into
cells as a backup cuts them (cells with no used block are UNUSED, all-zero cells ZERO); a swap
partition becomes a ``swap-header`` stream holding a header made by mkswap from the UUID and
label Clonezilla noted (restore recreates the area from them; export needs the page). Every
partclone checksum is checked while reading; the manifest is written last, so a failed import
leaves no image behind (its chunks are swept by the next removal, as after an interrupted
backup).
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recovery.core.units import human_size
from recovery.devices import tools
from recovery.engine.clonezilla import find_image, our_fstype, partition_runs
from recovery.engine.plans import BackupResult
from recovery.engine.progress import CancelToken, Progress
from recovery.errors import PeerImageError, UsageError
from recovery.peers.clonezilla import ClonezillaImage, read_text
from recovery.repository.images import commit_image
from recovery.repository.maps import DATA, UNUSED, ZERO, MapWriter
from recovery.repository.store import Repository, check_name

CELL_SIZE = 4 << 20
SWAP_PAGE = 4096
GPT_HEAD = 34 * 512


@dataclass
class ImportPlan:
    location: str
    image: ClonezillaImage
    repo: str
    name: str
    level: int

    def describe(self) -> list[str]:
        lines = [
            f"Import Clonezilla image '{self.image.name}' from {self.location} into {self.repo} "
            f"as image '{self.name}'"
        ]
        for p in self.image.partitions:
            lines.append(
                f"  partition {p.number}: {our_fstype(p.fstype)}, "
                f"{human_size(p.stored_size)} in Clonezilla's files"
            )
        for s in self.image.swaps:
            lines.append(f"  partition {s.number}: swap (recreated on restore)")
        return lines


def plan_import(
    location: str, name: str, repo: str, image_name: str | None = None, level: int = 3
) -> ImportPlan:
    image = find_image(location, name)
    if image.table is None:
        raise PeerImageError(f"Clonezilla image {name} holds no partition table")
    target_name = check_name(image_name or re.sub(r"[^A-Za-z0-9._-]", "-", name)[:100])
    r = Repository.open(repo, create=True)
    if r.has_image(target_name):
        raise UsageError(
            f"an image named '{target_name}' already exists in {repo}: choose another --name"
        )
    return ImportPlan(location, image, repo, target_name, level)


def _blkid_fields(image: ClonezillaImage) -> dict[str, dict[str, str]]:
    """blkid.list of the folder: LABEL, UUID, TYPE per partition name (best effort)."""
    path = image.path / "blkid.list"
    out: dict[str, dict[str, str]] = {}
    if not path.is_file():
        return out
    for line in read_text(path).splitlines():
        dev, _, rest = line.partition(":")
        fields = dict(re.findall(r'\b([A-Z_]+)="([^"]{0,256})"', rest))
        out[dev.removeprefix("/dev/")] = fields
    return out


class _CellWriter:
    """Cuts a stream of ``(offset, bytes)`` runs into cells and stores them."""

    def __init__(self, repo: Repository, size: int, level: int, progress: Progress) -> None:
        self.repo = repo
        self.size = size
        self.level = level
        self.progress = progress
        self.maps = MapWriter(repo, level)
        self.cells = -(-size // CELL_SIZE)
        self.next_cell = 0
        self.buf: bytearray | None = None
        self.data_bytes = 0
        self.new_bytes = 0

    def _length(self, cell: int) -> int:
        return min(CELL_SIZE, self.size - cell * CELL_SIZE)

    def _flush(self) -> None:
        if self.buf is None:
            return
        data = bytes(self.buf)
        if data.count(0) == len(data):
            self.maps.add(ZERO, len(data))
        else:
            # The repository's hash: keyed in an encrypted location.
            digest = self.repo.hash(data)
            self.new_bytes += self.repo.put_chunk(digest, data, self.level)
            self.maps.add(DATA, len(data), digest)
            self.data_bytes += len(data)
        self.buf = None
        self.next_cell += 1

    def add(self, offset: int, data: bytes) -> None:
        if offset < 0 or offset + len(data) > self.size:
            raise PeerImageError(f"data at byte {offset} lies beyond its partition")
        view = memoryview(data)
        while view:
            cell, within = divmod(offset, CELL_SIZE)
            if cell < self.next_cell:
                raise PeerImageError("the image's blocks are not in increasing order")
            if cell > self.next_cell:
                self._flush()
                while self.next_cell < cell:
                    self.maps.add(UNUSED, self._length(self.next_cell))
                    self.next_cell += 1
            if self.buf is None:
                self.buf = bytearray(self._length(cell))
            n = min(len(view), len(self.buf) - within)
            self.buf[within : within + n] = view[:n]
            view = view[n:]
            offset += n
            self.progress.advance(n)

    def finish(self) -> dict[str, Any]:
        self._flush()
        while self.next_cell < self.cells:
            self.maps.add(UNUSED, self._length(self.next_cell))
            self.next_cell += 1
        hashes = self.maps.finish()
        self.new_bytes += self.maps.new_bytes
        return {"cells": self.cells, "map": hashes, "data_bytes": self.data_bytes}


def _read_file(path: Path, limit: int) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise PeerImageError(f"cannot read {path}: {e.strerror}") from e
    if len(data) > limit:
        raise PeerImageError(f"{path} is larger than Clonezilla writes it")
    return data


def _layout_runs(image: ClonezillaImage, disk_size: int, first: int) -> Iterator[tuple[int, bytes]]:
    """The boot area and the backup GPT, as runs of the layout stream."""
    assert image.table is not None
    ss = image.table.sector_size
    head = bytearray()
    gpt1 = image.path / f"{image.disk}-gpt-1st"
    if image.table.label == "gpt" and gpt1.is_file():
        head += _read_file(gpt1, min(first, 64 * ss))
    if image.mbr is not None:
        mbr = _read_file(image.mbr, ss)
        head[: len(mbr)] = mbr
    if image.hidden_after_mbr is not None and image.table.label == "dos":
        hidden = _read_file(image.hidden_after_mbr, 1 << 30)[: max(0, first - ss)]
        head[ss : ss + len(hidden)] = hidden
    if head:
        yield 0, bytes(head[:first])
    gpt2 = image.path / f"{image.disk}-gpt-2nd"
    if image.table.label == "gpt" and gpt2.is_file() and len(head) >= 34 * ss:
        # Clonezilla's -gpt-2nd holds only the last 32 sectors: the backup header and 31 of
        # the 32 sectors of backup entries. The entries equal the primary ones, so the backup
        # GPT is rebuilt from the primary entries and the saved backup header.
        header = _read_file(gpt2, 64 * ss)[-ss:]
        tail = bytes(head[2 * ss : 34 * ss]) + header
        if header[:8] == b"EFI PART" and len(tail) <= disk_size - first:
            yield disk_size - len(tail), tail


def _swap_header(size: int, uuid: str | None, label: str | None) -> bytes:
    """The first page of a swap area of ``size`` bytes with this UUID and label (made by
    mkswap on a sparse file), so that an exported disk has a working swap partition too;
    empty when mkswap is missing or refuses (restore recreates the swap area anyway)."""
    args = ["mkswap", "-f"] + (["-U", uuid] if uuid else []) + (["-L", label] if label else [])
    with tempfile.NamedTemporaryFile() as f:
        try:
            f.truncate(size)
        except OSError:
            return b""
        code, _ = tools.run([*args, f.name])
        if code != 0:
            return b""
        return f.read(SWAP_PAGE)


def run_import(plan: ImportPlan, progress: Progress, cancel: CancelToken) -> BackupResult:
    started = time.monotonic()
    image = plan.image
    table = image.table
    assert table is not None
    ss = table.sector_size
    disk_size = image.disk_size
    first = min((e.start * ss for e in table.data_entries), default=disk_size)
    blkid_of = _blkid_fields(image)
    parts = {p.number: p for p in image.partitions}
    swaps = {s.number: s for s in image.swaps}
    repo = Repository.open(plan.repo, create=True)
    with repo.locked(f"import {plan.name}"):
        if repo.has_image(plan.name):
            raise UsageError(f"an image named '{plan.name}' already exists in {plan.repo}")
        streams: list[dict[str, Any]] = []
        new_bytes = 0
        progress.step("saving the partition table and boot area", 0)
        w = _CellWriter(repo, disk_size, plan.level, progress)
        used = 0
        for off, data in _layout_runs(image, disk_size, first):
            w.add(off, data)
            used += len(data)
        streams.append(
            {"id": "disk", "start": 0, "size": disk_size, "method": "layout", **w.finish()}
            | {"used_bytes": used}
        )
        new_bytes += w.new_bytes
        for e in table.data_entries:
            cancel.check()
            part, swap = parts.get(e.number), swaps.get(e.number)
            if part is None and swap is None:
                continue
            size = e.size * ss
            name = part.name if part else swap.name if swap else ""
            info = blkid_of.get(name, {})
            desc: dict[str, Any] = {
                "id": f"p{e.number}",
                "number": e.number,
                "start": e.start * ss,
                "size": size,
                "fstype": our_fstype(part.fstype) if part else "swap",
                "label": info.get("LABEL") or (swap.label if swap else None),
                "uuid": info.get("UUID") or (swap.uuid if swap else None),
                "partuuid": e.uuid,
                "parttype": e.type,
                "partlabel": e.name,
            }
            w = _CellWriter(repo, size, plan.level, progress)
            if part is not None:
                _size, data_bytes, runs, stream = partition_runs(part)
                progress.step(f"importing partition {e.number} ({desc['fstype']})", data_bytes)
                used = 0
                with stream:
                    for off, data in runs:
                        w.add(off, data)
                        used += len(data)
                        cancel.check()
                desc["method"] = "used-blocks" if part.kind == "partclone" else "raw"
            else:
                desc["method"] = "swap-header"
                header = _swap_header(size, desc["uuid"], desc["label"])
                if header:
                    w.add(0, header)
                used = len(header)
            desc.update(w.finish())
            desc["used_bytes"] = used
            new_bytes += w.new_bytes
            streams.append(desc)
        progress.step("flushing the backup location", 0)
        body = commit_image(
            repo,
            plan.name,
            cell_size=CELL_SIZE,
            source={
                "path": f"/dev/{image.disk}",
                "model": None,
                "serial": None,
                "size": disk_size,
                "logical_sector_size": ss,
                "clonezilla_image": image.name,
                "clonezilla_created": image.created,
            },
            table=table.to_json(),
            whole_disk=True,
            streams=streams,
            unreadable=[],
        )
    from recovery.engine.images import image_info

    return BackupResult(image_info(repo, plan.name, body), new_bytes, time.monotonic() - started)
