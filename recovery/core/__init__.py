"""Pure logic: format structures, extent arithmetic, partition-table parsing, layout planning.

Nothing here opens a device or a file; everything is unit-tested without root.
"""
