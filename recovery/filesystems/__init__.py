"""File system readers: one narrow interface per file system, chosen from a registry.

Only the modules in this package know on-disk layouts of file systems. Each reader answers two
questions, as partclone's do: the geometry, and which byte ranges the file system uses. The
engine images only those ranges; everything else is unused and not stored.
"""
