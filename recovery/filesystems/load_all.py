"""Importing this module registers every reader (the registry's only list of modules)."""

import contextlib
import importlib

for _name in ("ext4", "fat", "swap", "ntfs"):
    with contextlib.suppress(ModuleNotFoundError):
        importlib.import_module(f"recovery.filesystems.{_name}")
