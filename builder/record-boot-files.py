#!/usr/bin/env python3
"""Record iso/boot-files.txt: the files a boot of dist/recovery.iso reads from its squashfs layers.

Run as root from the repository after `make iso` (``.venv/bin/python builder/record-boot-files.py``,
about 2 minutes): boots the ISO from a CD under QEMU (tests/boot/qemu.py), waits until the TUI has
been up on tty1 for a while, and lists every file of each layer that has pages in the page cache
(util-linux's fincore, run inside the live system). Rebuild the ISO afterwards: build-iso.sh puts
those files at the front of their layer, where the initrd's prefetch reads them in one pass.
Re-record when the boot changes much (new services, a new Python, other libraries).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.boot.qemu import MODES, Machine  # noqa: E402

LAYERS = {"system": "filesystem.squashfs", "recovery": "recovery.squashfs"}
SETTLE = 15.0
"""Seconds after the serial shell before reading the page cache: the TUI is drawn by then."""


def main() -> int:
    iso = ROOT / "dist" / "recovery.iso"
    if not iso.exists():
        print(f"{iso} missing: run 'make iso' first", file=sys.stderr)
        return 2
    mode = next(m for m in MODES if m.name == "bios-cd")
    machine = Machine(mode, iso, ROOT / "build" / "boot-files")
    machine.start()
    lines: list[str] = []
    try:
        machine.serial.wait_for_shell(600)
        time.sleep(SETTLE)
        for name, layer in LAYERS.items():
            rc, out = machine.serial.run(
                f"cd /run/live/rootfs/{layer} && find . -xdev -type f -print0 "
                "| xargs -0 fincore -rnb -o RES,FILE | awk '$1 > 0 { print $2 }' "
                "| sed 's,^\\./,,' | sort",
                timeout=300,
            )
            if rc != 0:
                print(f"listing {layer} failed: {out}", file=sys.stderr)
                return 1
            lines += [f"{name} {p.strip()}" for p in out.splitlines() if p.strip()]
    finally:
        machine.kill()
    target = ROOT / "iso" / "boot-files.txt"
    header = [ln for ln in target.read_text().splitlines() if ln.startswith("#")]
    target.write_text("\n".join([*header, *lines]) + "\n")
    print(f"{target}: {len(lines)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
