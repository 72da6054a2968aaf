"""Loop devices over a byte range of a device: a logical volume's bytes without device-mapper.

Called by the LVM home (:mod:`recovery.filesystems.lvm`) to check and grow the file system of a
linear logical volume in place, on a kernel without device-mapper or with nothing activated.
The loop device exists only inside the ``with`` block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from recovery.devices import tools
from recovery.errors import DeviceError


@contextlib.contextmanager
def range_device(node: str, offset: int, size: int, read_only: bool) -> Iterator[str]:
    """A loop device showing ``size`` bytes of ``node`` from byte ``offset``."""
    argv = ["losetup", "--find", "--show", "--offset", str(offset), "--sizelimit", str(size)]
    code, out = tools.run([*argv, *(["--read-only"] if read_only else []), node])
    if code != 0:
        raise DeviceError(f"cannot attach a loop device to {node} at byte {offset}: {out}")
    loop = out.strip().splitlines()[-1]
    try:
        yield loop
    finally:
        tools.run(["losetup", "--detach", loop])
