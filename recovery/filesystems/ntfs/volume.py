"""An NTFS volume's MFT: records by number, their attribute lists, and streams gathered
from all their segments.

Part of the NTFS home (:mod:`recovery.filesystems.ntfs`). Reads are bounded by the volume and
by Windows' own limits; the records of the system files are cached, others read and dropped.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

from recovery.filesystems.base import BlockSource
from recovery.filesystems.ntfs.layout import (
    AT_ATTRIBUTE_LIST,
    AT_DATA,
    AT_FILE_NAME,
    ATTR_LIST_ENTRY,
    CACHED_RECORDS,
    MAX_ATTRIBUTE_LIST,
    RECORD_IN_USE,
    RECORD_MFT,
    RECORD_ROOT,
    REF_MASK,
    Attribute,
    BootSector,
    Damage,
    Record,
    Run,
    file_names,
    parse_record,
)


@dataclass(frozen=True)
class DataStream:
    """A non-resident or resident stream gathered from all its attribute segments."""

    what: str
    resident_value: bytes | None
    runs: tuple[Run, ...]
    data_size: int
    initialized_size: int

    @cached_property
    def vcns(self) -> list[int]:
        """The first VCN of each run (for bisection)."""
        return [r.vcn for r in self.runs]

    def clusters(self) -> Iterator[tuple[int, int]]:
        """(lcn, count) of the allocated runs, in VCN order."""
        for r in self.runs:
            if r.lcn is not None:
                yield r.lcn, r.length


class Volume:
    """Random access to the MFT and to attribute data of one NTFS volume."""

    def __init__(self, source: BlockSource, boot: BootSector) -> None:
        self.source = source
        self.boot = boot
        self.clusters = boot.total_clusters
        self.mft: DataStream | None = None
        self._records: dict[int, Record] = {}
        self._lists: dict[int, bytes] = {}

    def read(self, offset: int, length: int, what: str) -> bytes:
        data = self.source.pread(offset, length)
        if len(data) != length:
            raise Damage(f"{what} lies beyond the end of the partition")
        return data

    def read_stream(self, stream: DataStream, offset: int, length: int) -> bytes:
        """Bytes of a stream; sparse runs and bytes past the initialized size read as zeros."""
        if stream.resident_value is not None:
            return stream.resident_value[offset : offset + length].ljust(length, b"\0")
        cs = self.boot.cluster_size
        if offset + length > stream.data_size:
            raise Damage(f"a read of {stream.what} goes past its end")
        out = bytearray()
        vcns = stream.vcns
        pos = offset
        end = offset + length
        while pos < end:
            vcn = pos // cs
            i = bisect.bisect_right(vcns, vcn) - 1
            if i < 0 or vcn >= stream.runs[i].vcn + stream.runs[i].length:
                raise Damage(f"{stream.what} has no cluster for byte {pos}")
            run = stream.runs[i]
            run_end = (run.vcn + run.length) * cs
            n = min(end, run_end) - pos
            if run.lcn is None or pos >= stream.initialized_size:
                out += bytes(n)
            else:
                out += self.read((run.lcn - run.vcn) * cs + pos, n, stream.what)
            pos += n
        if end > stream.initialized_size:
            keep = max(0, stream.initialized_size - offset)
            out[keep:] = bytes(len(out) - keep)
        return bytes(out)

    def record(self, number: int) -> Record:
        cached = self._records.get(number)
        if cached is not None:
            return cached
        rs = self.boot.record_size
        if self.mft is None:
            raise AssertionError("the MFT is read before any other record")
        if (number + 1) * rs > self.mft.data_size:
            raise Damage(f"MFT record {number} lies beyond the end of the MFT")
        buf = bytearray(self.read_stream(self.mft, number * rs, rs))
        rec = parse_record(buf, number, self.clusters)
        if number < CACHED_RECORDS:
            self._records[number] = rec  # the system records, read again and again
        return rec

    def stream(self, base: Record, type_: int, name: str, what: str) -> DataStream | None:
        """The whole attribute ``type_``/``name`` of a file, following $ATTRIBUTE_LIST."""
        segments = self._segments(base, type_, name, what)
        if not segments:
            return None
        first = segments[0]
        if first.resident:
            if len(segments) > 1:
                raise Damage(f"{what} is both resident and split over records")
            return DataStream(what, first.value, (), len(first.value), len(first.value))
        runs: list[Run] = []
        expect = 0
        for seg in segments:
            if seg.resident or seg.lowest_vcn != expect:
                raise Damage(f"the pieces of {what} do not follow each other")
            runs.extend(seg.runs)
            expect = seg.highest_vcn + 1
        if first.allocated_size > expect * self.boot.cluster_size:
            raise Damage(f"{what} has fewer clusters than its allocated size")
        return DataStream(what, None, tuple(runs), first.data_size, first.initialized_size)

    def all_attributes(self, base: Record, type_: int) -> list[Attribute]:
        """Every attribute of ``type_`` of a file, in its base record and extension records."""
        records = [base]
        if base.find(AT_ATTRIBUTE_LIST) is not None:
            refs = {ref for _lowest, ref in self._list_entries(base, type_, None)}
            records += [self._extension(base, ref) for ref in sorted(refs - {base.number})]
        return [a for r in records for a in r.attributes if a.type == type_]

    def _extension(self, base: Record, ref: int) -> Record:
        rec = self.record(ref)
        if rec.base_reference != base.number or not rec.flags & RECORD_IN_USE:
            raise Damage(f"MFT record {ref} does not belong to record {base.number}")
        return rec

    def _segments(self, base: Record, type_: int, name: str, what: str) -> list[Attribute]:
        local = [a for a in base.attributes if a.type == type_ and a.name == name]
        if base.find(AT_ATTRIBUTE_LIST) is None:
            return sorted(local, key=lambda a: a.lowest_vcn)
        wanted = sorted(self._list_entries(base, type_, name))
        segments: list[Attribute] = []
        for lowest, ref in wanted:
            rec = base if ref == base.number else self._extension(base, ref)
            for a in rec.attributes:
                if a.type == type_ and a.name == name and a.lowest_vcn == lowest:
                    segments.append(a)
                    break
            else:
                raise Damage(f"{what}: MFT record {ref} lacks the piece the list points at")
            if base.number == RECORD_MFT and not a.resident:
                # The MFT maps itself: each piece makes the next extension record reachable.
                self._extend_mft(a)
        return segments

    def _list_entries(self, base: Record, type_: int, name: str | None) -> list[tuple[int, int]]:
        """(lowest VCN, record number) of the attribute list entries for ``type_``/``name``
        (any name when ``name`` is None)."""
        alist = base.find(AT_ATTRIBUTE_LIST)
        assert alist is not None
        raw = self._lists.get(base.number)
        if raw is not None:
            pass
        elif alist.resident:
            raw = alist.value
        else:
            if alist.data_size > MAX_ATTRIBUTE_LIST:
                raise Damage(f"the attribute list of MFT record {base.number} is too large")
            list_stream = DataStream(
                f"the attribute list of MFT record {base.number}",
                None,
                alist.runs,
                alist.data_size,
                alist.initialized_size,
            )
            raw = self.read_stream(list_stream, 0, alist.data_size)
        self._lists[base.number] = raw
        wanted: list[tuple[int, int]] = []
        pos = 0
        while pos + ATTR_LIST_ENTRY.size <= len(raw):
            t, length, name_len, name_off, lowest, ref, _inst = ATTR_LIST_ENTRY.unpack_from(
                raw, pos
            )
            if length < ATTR_LIST_ENTRY.size or pos + length > len(raw):
                raise Damage(f"the attribute list of MFT record {base.number} is malformed")
            entry_name = ""
            if name_len:
                if name_off + 2 * name_len > length:
                    raise Damage(f"an attribute list entry of MFT record {base.number} is bad")
                entry_name = raw[pos + name_off : pos + name_off + 2 * name_len].decode(
                    "utf-16-le", "replace"
                )
            if t == type_ and (name is None or entry_name == name):
                wanted.append((lowest, ref & REF_MASK))
            pos += length
        return wanted

    def _extend_mft(self, seg: Attribute) -> None:
        assert self.mft is not None
        if seg.lowest_vcn == 0:
            return  # the piece in record 0 is already mapped
        last = self.mft.runs[-1] if self.mft.runs else None
        if last is not None and seg.lowest_vcn == last.vcn + last.length:
            self.mft = DataStream(
                self.mft.what,
                None,
                self.mft.runs + seg.runs,
                self.mft.data_size,
                self.mft.initialized_size,
            )

    def open_mft(self) -> DataStream:
        """Read record 0 straight from the boot sector's MFT cluster, then map the whole MFT."""
        rs = self.boot.record_size
        buf = bytearray(self.read(self.boot.mft_lcn * self.boot.cluster_size, rs, "MFT record 0"))
        base = parse_record(buf, RECORD_MFT, self.clusters)
        if not base.flags & RECORD_IN_USE:
            raise Damage("MFT record 0 ($MFT) is not in use")
        first = base.find(AT_DATA)
        if first is None or first.resident or first.lowest_vcn != 0:
            raise Damage("MFT record 0 ($MFT) has no usable data attribute")
        self.mft = DataStream("$MFT", None, first.runs, first.data_size, first.initialized_size)
        stream = self.stream(base, AT_DATA, "", "$MFT")
        assert stream is not None
        if stream.data_size < 16 * rs:
            raise Damage(f"the MFT is only {stream.data_size} bytes long")
        if not stream.runs or stream.runs[0].lcn != self.boot.mft_lcn:
            raise Damage("the MFT's data does not start where the boot sector says")
        self.mft = stream
        self._records[RECORD_MFT] = base
        return stream

    def system_record(self, number: int, name: str) -> Record:
        rec = self.record(number)
        if not rec.flags & RECORD_IN_USE:
            raise Damage(f"MFT record {number} ({name}) is not in use")
        names = [
            n for p, n in file_names(self.all_attributes(rec, AT_FILE_NAME)) if p == RECORD_ROOT
        ]
        if names and name not in names:
            raise Damage(f"MFT record {number} should be {name} but is named {names[0]}")
        return rec
