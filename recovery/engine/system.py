"""Finding the system partitions of a disk (see :mod:`recovery.core.system` for the rule).

Looks inside file systems without mounting them: ``debugfs`` for ext2/3/4, ``ntfsls`` for
NTFS, ``mdir`` (mtools) for FAT. Called by ``backup --system`` and ``clone --system``.
"""

from __future__ import annotations

import os
import subprocess

from recovery.core.system import PartitionFacts, system_numbers
from recovery.core.table import partition_node
from recovery.devices import blockio
from recovery.devices.partitions import read_table
from recovery.engine.sources import probe, resolve_sources
from recovery.errors import UsageError


def _run(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return ""
    return r.stdout if r.returncode == 0 else ""


def _root_names(node: str, fstype: str | None) -> set[str]:
    if fstype in ("ext2", "ext3", "ext4"):
        out = _run(["debugfs", "-R", "ls -p /", node])
        return {line.split("/")[5] for line in out.splitlines() if line.count("/") >= 6}
    if fstype == "ntfs":
        return set(_run(["ntfsls", "-f", node]).split())
    if fstype == "vfat":
        env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
        r = subprocess.run(
            ["mdir", "-b", "-i", node, "::/"], capture_output=True, text=True, env=env, check=False
        )
        return {line.rstrip("/").split("/")[-1] for line in r.stdout.split()}
    return set()


def _has(node: str, fstype: str | None, path: str) -> bool:
    if fstype in ("ext2", "ext3", "ext4"):
        return bool(_run(["debugfs", "-R", f"stat {path}", node]).strip())
    return False


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
            names = _root_names(node, fstype) if blockio.is_block_device(node) else set()
            lower = {n.lower() for n in names}
            facts.append(
                PartitionFacts(
                    bootable=e.bootable,
                    number=e.number,
                    parttype=e.type,
                    fstype=fstype,
                    has_windows="windows" in lower,
                    has_os_release="etc" in lower and _has(node, fstype, "/etc/os-release"),
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
