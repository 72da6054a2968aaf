"""Finding the system partitions of a disk (see :mod:`recovery.core.system` for the rule).

Looks inside file systems without mounting them, through each file system's home
(:meth:`recovery.filesystems.base.Kind.root_names`: ``debugfs`` for ext2/3/4, ``ntfsls`` for
NTFS, ``mdir`` for FAT). Called by ``backup --system`` and ``clone --system``.
"""

from __future__ import annotations

import os

from recovery.core.system import PartitionFacts, system_numbers
from recovery.core.table import partition_node
from recovery.devices import blockio
from recovery.devices.partitions import read_table
from recovery.devices.tools import require
from recovery.engine.sources import probe, resolve_sources
from recovery.errors import UsageError
from recovery.filesystems.base import kind_of


def partition_facts(disk: str) -> list[PartitionFacts]:
    table = read_table(disk)
    if table is None:
        return []
    facts = []
    fd = blockio.open_read(disk)
    try:
        for e in table.data_entries:
            node = partition_node(disk, e.number)
            info = probe(node, fd, e.start * table.sector_size, e.size * table.sector_size)
            fstype = info.get("TYPE")
            kind = kind_of(fstype)
            names: set[str] = set()
            if blockio.is_block_device(node):
                # A missing debugfs would quietly leave a Linux root behind: refuse instead.
                require(kind.inspect_needs())
                names = kind.root_names(node)
            lower = {n.lower() for n in names}
            facts.append(
                PartitionFacts(
                    bootable=e.bootable,
                    number=e.number,
                    parttype=e.type,
                    fstype=fstype,
                    encrypted=kind.encrypted,
                    has_windows="windows" in lower,
                    has_os_release="etc" in lower and kind.has_path(node, "/etc/os-release"),
                    has_boot_files=any(n.startswith("vmlinuz") for n in lower)
                    or bool({"grub", "bootmgr"} & lower),
                )
            )
    finally:
        os.close(fd)
    return facts


def system_partitions(sources: list[str]) -> list[int]:
    disk, _ = resolve_sources(sources)
    numbers = system_numbers(partition_facts(disk))
    if not numbers:
        raise UsageError(
            f"no system partitions found on {disk} (no EFI, Windows or Linux root): "
            "name the partitions to back up instead of --system"
        )
    return numbers
