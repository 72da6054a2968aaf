"""The file system registry: every home loads, or the program says which one did not."""

from __future__ import annotations

import subprocess
import sys

from recovery.filesystems.base import kind_of, kinds, readers
from recovery.filesystems.homes import HOMES


def _python(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` run by a fresh interpreter, so that only what it imports is registered."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_a_missing_home_is_an_error_not_silence() -> None:
    code = (
        "import sys\n"
        "sys.modules['recovery.filesystems.ntfs'] = None  # as if the build lost it\n"
        "from recovery.filesystems.base import readers\n"
        "readers()\n"
    )
    r = _python(code)
    assert r.returncode != 0
    assert "ModuleNotFoundError" in r.stderr and "recovery.filesystems.ntfs" in r.stderr


def test_every_home_registers_and_every_reader_has_a_kind() -> None:
    assert len(HOMES) == len(set(HOMES))
    names = {k.name for k in kinds()}
    assert {"ext2", "ext3", "ext4", "vfat", "ntfs", "swap", "BitLocker", "crypto_LUKS"} <= names
    for reader in readers():
        assert reader.name in names, reader


def test_an_unknown_type_gets_a_know_nothing_kind() -> None:
    k = kind_of("zfs_member")
    assert not k.can_grow and not k.encrypted and k.mount_type is None
    assert k.check("/dev/x", print) == ["/dev/x: zfs_member written, no check available"]
    assert kind_of(None).check("/dev/x", print) == [
        "/dev/x: unknown content written, no check available"
    ]


def test_each_home_registers_the_types_the_list_gives_it() -> None:
    """kind_of imports only the home filesystems/homes.py names for a type: that home must
    register it, and every registered kind must be named there."""
    assert {k.name for k in kinds()} == {t for types in HOMES.values() for t in types}
    for home, types in HOMES.items():
        code = (
            f"import recovery.filesystems.{home}\n"
            "from recovery.filesystems.base import _KINDS\n"
            "print(' '.join(sorted(_KINDS)))\n"
        )
        r = _python(code)
        assert r.returncode == 0, r.stderr
        assert set(types) <= set(r.stdout.split()), home


def test_asking_for_one_type_loads_only_its_home() -> None:
    code = (
        "import sys\n"
        "from recovery.filesystems.base import kind_of\n"
        "assert kind_of('ext4').can_grow\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('recovery.filesystems.'))))\n"
    )
    r = _python(code)
    assert r.returncode == 0, r.stderr
    loaded = set(r.stdout.split())
    assert "recovery.filesystems.ext4" in loaded
    assert not {"recovery.filesystems.ntfs", "recovery.filesystems.xfs"} & loaded
