"""Loop devices: over a byte range of a device (a logical volume's bytes without
device-mapper), and read-only ones with direct I/O, to mount a file system found in a file or
on a partition without writing to it.

Called by the LVM home (:mod:`recovery.filesystems.lvm`) to check and grow the file system of a
linear logical volume in place, on a kernel without device-mapper or with nothing activated
(the loop device exists only inside the ``with`` block), and by the image view and file backup
to mount what they read (:func:`attach_read_only`).
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


def attach_read_only(path: str) -> tuple[str | None, str]:
    """A new read-only loop device over ``path`` and ``""``, or None and why not.

    With direct I/O where the kernel and losetup allow it (else without): the file system's
    reads reach ``path`` exactly as asked, without the loop device's own read-ahead around
    them (on a failing disk a read-ahead that spans a bad sector fails a file whose own blocks
    are good), and the bytes are not cached twice, once for the loop device and once for
    ``path`` (bench/open_read.py: reading through an opened image went from 1.41-1.56x to
    1.27x of ``zstd -d``). The caller detaches it (``losetup -d``)."""
    argv = ["losetup", "--find", "--show", "--read-only"]
    code, out = tools.run([*argv, "--direct-io=on", path], timeout=120)
    if code != 0:  # a kernel or losetup without it
        code, out = tools.run([*argv, path], timeout=120)
    if code != 0:
        return None, f"no loop device: {out}"
    return out.strip().splitlines()[-1], ""
