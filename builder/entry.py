"""The frozen executable's entry point (builder/recovery.spec): the same ``main()`` as the
``recovery`` console script and ``python -m recovery``."""

import multiprocessing
import os
import sys

from recovery.cli import main


def _restore_library_path() -> None:
    """Give the tools we run (sfdisk, mkfs, e2fsck, ...) the system's libraries, not ours.

    PyInstaller's launcher prepends the bundle's _internal/ to LD_LIBRARY_PATH (keeping the old
    value in LD_LIBRARY_PATH_ORIG) and every child process would inherit it, loading our bundled
    libblkid, libuuid, libssl instead of the ones it was built against. The dynamic loader read
    the variable when this process started, so resetting it here changes only what children see.
    """
    if not getattr(sys, "frozen", False):
        return
    original = os.environ.pop("LD_LIBRARY_PATH_ORIG", None)
    if original:
        os.environ["LD_LIBRARY_PATH"] = original
    else:
        os.environ.pop("LD_LIBRARY_PATH", None)


if __name__ == "__main__":
    _restore_library_path()
    # A frozen program has no Python to start workers with: if the engine ever uses a "spawn" or
    # "forkserver" pool, the child re-runs this executable, and freeze_support() routes it.
    multiprocessing.freeze_support()
    raise SystemExit(main())
