"""Importing this module registers every file system home (the registry's only list of modules:
:data:`recovery.filesystems.homes.HOMES`).

A home that fails to import is an error, not a file system that quietly is not there: a build
that lost a module would otherwise image that file system every byte and never grow or check it.
"""

import importlib

from recovery.filesystems.homes import HOMES

for _name in HOMES:
    importlib.import_module(f"recovery.filesystems.{_name}")
