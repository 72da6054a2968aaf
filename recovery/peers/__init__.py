"""Images made by other tools: Clonezilla image folders and the partclone images in them
(docs/CLONEZILLA.md). Parsers only: everything read here is untrusted and checked field by
field; nothing here writes to a disk."""
