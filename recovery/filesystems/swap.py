"""Linux swap: only the header page is kept; restore recreates the swap area.

Called through the registry of :mod:`recovery.filesystems.base` by the imaging engine. Swap holds
nothing worth keeping once the system is shut down, so the used extents are just the first page
(the header: signature, size, UUID, label). :meth:`Swap.restore_note` answers ``"recreate"``:
restore runs ``mkswap`` on the restored partition with the UUID and label from
:attr:`Geometry.uuid` and :attr:`Geometry.label` (``mkswap -U UUID -L LABEL``), so that
``/etc/fstab`` and ``resume=`` entries that name the swap by UUID still find it: the engine
calls :meth:`SwapKind.after_write` for that, which also names ``mkswap`` for plans to require.

Header (version 1, ``union swap_header`` in the kernel): the signature ``SWAPSPACE2`` in the last
10 bytes of the first page; at byte 1024 ``version`` (u32, 1), ``last_page`` (u32), the count of
bad pages (u32), the UUID (16 bytes) and the label (16 bytes, NUL-padded). The integers are in
the byte order of the machine that made it; both orders are accepted. The page size is that of
the machine that ran mkswap: 4 KiB on x86, up to 64 KiB elsewhere; each is tried.

A swap area that holds a hibernation image (signatures ``S1SUSPEND``, ``S2SUSPEND``,
``ULSUSPEND``, ``LINHIB0001``; blkid calls it ``swsuspend``) is not read as swap: recreating it
would lose the hibernated session, so it raises NotThisFileSystem and is imaged whole.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator
from typing import NamedTuple

from recovery.core.extents import Extent
from recovery.devices import tools
from recovery.devices.tools import Need
from recovery.errors import DamagedFileSystem, DeviceError, NotThisFileSystem
from recovery.filesystems.base import (
    BlockSource,
    FileSystem,
    Geometry,
    Kind,
    Step,
    register,
    register_kind,
    result_line,
)

SIGNATURE = b"SWAPSPACE2"
OLD_SIGNATURE = b"SWAP-SPACE"
HIBERNATION_SIGNATURES = (b"S1SUSPEND", b"S2SUSPEND", b"ULSUSPEND", b"LINHIB0001")
PAGE_SIZES = (4096, 8192, 16384, 32768, 65536)
HEADER_OFFSET = 1024
MIN_PAGES = 10
"""mkswap refuses fewer pages than this."""

RESTORE_RECREATE = "recreate"


class SwapHeader(NamedTuple):
    version: int
    last_page: int
    nr_badpages: int
    uuid: bytes
    volume_name: bytes


def _header_struct(order: str) -> struct.Struct:
    return struct.Struct(order + "III16s16s")


_HEADERS = (_header_struct("<"), _header_struct(">"))


def _read(source: BlockSource, offset: int, length: int) -> bytes:
    try:
        return source.pread(offset, length)
    except OSError as e:
        raise DeviceError(f"cannot read the swap header at byte {offset}: {e}") from e


@register
class Swap(FileSystem):
    """A Linux swap area (version 1 header)."""

    name = "swap"

    def __init__(self, source: BlockSource, geometry: Geometry, page_size: int) -> None:
        super().__init__(source, geometry)
        self.page_size = page_size

    @classmethod
    def open(cls, source: BlockSource) -> Swap:
        first = _read(source, 0, min(source.size, max(PAGE_SIZES)))
        for page_size in PAGE_SIZES:
            if len(first) < page_size:
                break
            tail = first[page_size - 10 : page_size]
            # The kernel writes e.g. "S1SUSPEND\0" where "SWAPSPACE2" was.
            if any(sig in tail for sig in HIBERNATION_SIGNATURES):
                raise NotThisFileSystem(
                    "a swap area holding a hibernation image (swsuspend): imaged whole, since "
                    "recreating it would lose the hibernated session"
                )
            if tail == OLD_SIGNATURE:
                raise DamagedFileSystem(
                    "an old version 0 swap area (SWAP-SPACE): not supported; run mkswap on it"
                )
            if tail == SIGNATURE:
                return cls._from_header(source, first, page_size)
        raise NotThisFileSystem("no swap signature SWAPSPACE2 at the end of the first page")

    @classmethod
    def _from_header(cls, source: BlockSource, first: bytes, page_size: int) -> Swap:
        for layout in _HEADERS:
            header = SwapHeader(*layout.unpack_from(first, HEADER_OFFSET))
            if header.version == 1:
                break
        else:
            raise DamagedFileSystem(
                "swap header: version is not 1 in either byte order; run mkswap on it"
            )
        pages = header.last_page + 1
        if pages < MIN_PAGES:
            raise DamagedFileSystem(f"swap header: last_page is {header.last_page}")
        size = pages * page_size
        if size > source.size:
            raise DamagedFileSystem(
                f"swap header: last_page {header.last_page} makes {size} bytes, but the "
                f"partition has only {source.size}"
            )
        label = header.volume_name.split(b"\0", 1)[0].decode("utf-8", "replace") or None
        swap_uuid = None if not any(header.uuid) else str(uuid.UUID(bytes=header.uuid))
        geometry = Geometry(block_size=page_size, fs_size=size, label=label, uuid=swap_uuid)
        return cls(source, geometry, page_size)

    def used_extents(self) -> Iterator[Extent]:
        yield Extent(0, self.page_size)

    def restore_note(self) -> str:
        """Restore recreates the area: ``mkswap -U geometry.uuid -L geometry.label``."""
        return RESTORE_RECREATE


class SwapKind(Kind):
    """Swap for the engine: only the header is imaged, the area is recreated after writing."""

    header_only = True

    def after_write_needs(self) -> list[Need]:
        return [Need("mkswap", "to recreate swap on the target")]

    def after_write(self, node: str, uuid: str | None, label: str | None) -> list[str]:
        args = ["mkswap", "-f"]
        if uuid:
            args += ["-U", uuid]
        if label:
            args += ["-L", label]
        code, out = tools.run([*args, node])
        return [result_line(node, "swap recreated", code, out)]

    def check(self, node: str, step: Step) -> list[str]:
        return []  # mkswap just made it: nothing to check


register_kind(SwapKind("swap"))
