"""recovery: image, restore and clone disks from a bootable recovery environment.

Layers, one direction only (checked by import-linter, see pyproject.toml):
``core`` (pure logic) <- ``devices``/``filesystems``/``repository`` (I/O) <- ``engine``
<- ``cli``/``commands``/``tui`` (people).
"""

__version__ = "0.1.0"
