"""Device I/O: udev, partition tables on devices, block reads and writes, external tools.

Library objects (pyudev devices) are turned into the plain dataclasses of
:mod:`recovery.devices.model` here; nothing above this package sees them.
"""
