"""Hostile partition tables (issue 8): the table a manifest or ``sfdisk --json`` gives us.

A manifest's ``table`` is untrusted (a backup location is read by whoever plugs it in), and a
disk's GPT partition names are whatever was written into them. Promises checked here:
:meth:`Table.from_json` gives a table or our own error; :func:`plan_layout` gives a layout that
fits the target, or refuses; :func:`sfdisk_script` writes one line per partition whatever the
names hold. Bounded for CI (a few seconds).

Inputs that once broke these functions are kept as plain examples.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from recovery.core.composed import PAGE, ComposedFile, OverlayFull
from recovery.core.layout import Alignment, fits_unchanged, plan_shrunk_layout
from recovery.core.table import Entry, Table, plan_layout, sfdisk_script
from recovery.errors import RecoveryError, Refused

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NO_SHRINK = settings(FUZZ, phases=[Phase.explicit, Phase.generate])
MiB = 1 << 20

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**66), 2**66)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)

GOOD = {
    "label": "gpt",
    "id": "0B3E1F42-7A7C-4B5E-9D55-2C1F0A8E4D11",
    "sectorsize": 512,
    "firstlba": 2048,
    "lastlba": 2097118,
    "partitions": [
        {"node": "/dev/sda1", "start": 2048, "size": 204800, "type": "uefi", "uuid": "U1"},
        {"number": 2, "start": 206848, "size": 1048576, "type": "linux", "name": "root"},
    ],
}


@st.composite
def mutated_table(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    d: dict[str, Any] = {k: v for k, v in GOOD.items() if k != "partitions"}
    d["partitions"] = [dict(p) for p in GOOD["partitions"]]  # type: ignore[attr-defined]
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            parts = d.get("partitions")
            entries = [e for e in parts if isinstance(e, dict)] if isinstance(parts, list) else []
            p = draw(st.sampled_from(entries)) if entries else {}
            key = draw(st.sampled_from(["node", "number", "start", "size", "type", "uuid", "name"]))
        else:
            p = d
            key = draw(st.sampled_from(["label", "id", "sectorsize", "firstlba", "partitions"]))
        if draw(st.booleans()):
            p[key] = draw(json_values)
        else:
            p.pop(key, None)
    return d


def test_good_table_round_trips() -> None:
    t = Table.from_json(GOOD)
    assert [e.number for e in t.entries] == [1, 2]
    assert Table.from_json(t.to_json()) == t


@NO_SHRINK
@given(mutated_table())
def test_fuzz_table_from_json(d: Any) -> None:
    try:
        t = Table.from_json(d)
    except RecoveryError:
        return
    assert all(isinstance(e.start, int) and isinstance(e.size, int) for e in t.entries)


@pytest.mark.parametrize(
    "d",
    [
        {"partitions": []},
        {"label": "gpt", "partitions": [{"node": "/dev/sdx", "start": 1, "size": 1, "type": "x"}]},
        {"label": "gpt", "sectorsize": "x"},
        {"label": "gpt", "partitions": 5},
        {"label": "gpt", "partitions": [{"number": 1, "start": 1e999, "size": 1, "type": "x"}]},
    ],
)
def test_table_from_json_examples_are_our_error(d: dict[str, Any]) -> None:
    with pytest.raises(RecoveryError):
        Table.from_json(d)


# -- layout ----------------------------------------------------------------------------------------


@st.composite
def tables(draw: st.DrawFn) -> tuple[Table, int, set[int]]:
    """Tables whose partitions lie inside a source disk (may overlap: tables are hostile)."""
    label = draw(st.sampled_from(["gpt", "dos"]))
    ss = draw(st.sampled_from([512, 4096]))
    disk_sectors = draw(st.integers(64, 1 << 24))
    end = disk_sectors - 33 if label == "gpt" else disk_sectors
    entries = []
    for n in range(1, draw(st.integers(0, 5)) + 1):
        start = draw(st.integers(34, max(34, end - 1)))
        size = draw(st.integers(1, max(1, end - start)))
        if start + size > end:
            continue
        typ = draw(st.sampled_from(["linux", "uefi", "swap", "5", "83"]))
        entries.append(Entry(n, start, size, typ))
    table = Table(label, None, ss, 34 if label == "gpt" else None, end - 1, tuple(entries))
    growable = {e.number for e in entries if draw(st.booleans())}
    return table, disk_sectors * ss, growable


@FUZZ
@given(tables(), st.integers(0, 1 << 36), st.booleans())
def test_fuzz_plan_layout_fits_or_refuses(
    t: tuple[Table, int, set[int]], target: int, fill: bool
) -> None:
    table, source_size, growable = t
    try:
        layout = plan_layout(table, source_size, target, growable, fill=fill)
    except Refused as e:
        assert "too small" in e.message
        return
    end = target - (33 * table.sector_size if table.label == "gpt" else 0)
    for m in layout.moves:
        assert m.new_start >= 0 and m.new_size >= m.old_size
        assert m.new_start + m.new_size <= end, (m, target)
    if target == source_size:
        assert all(m.new_start == m.old_start for m in layout.moves)


# -- the sfdisk script -------------------------------------------------------------------------

names = st.text(max_size=20) | st.sampled_from(['a"b', "a\nb", "x\n/dev/sda9 : start=1, size=1"])


@NO_SHRINK
@given(st.lists(st.tuples(names, names), min_size=1, max_size=4))
def test_fuzz_sfdisk_script_one_line_per_partition(fields: list[tuple[str, str]]) -> None:
    entries = tuple(
        Entry(i + 1, 2048 * (i + 1), 2048, "linux", uuid=None, name=name, attrs=attrs or None)
        for i, (name, attrs) in enumerate(fields)
    )
    script = sfdisk_script(Table("gpt", "ID", 512, 34, 100000, entries), "/dev/sdz")
    lines = script.splitlines()
    assert len(lines) == 6 + len(entries), script
    for i, line in enumerate(lines[6:]):
        assert line.startswith(f"/dev/sdz{i + 1} : start={2048 * (i + 1)}, size=2048, type=linux")


# -- the shrunk layout (core/layout.py) ------------------------------------------------------------


@FUZZ
@given(
    tables(),
    st.integers(0, 1 << 36),
    st.integers(0, 5),
    st.integers(0, 1 << 36),
    st.sampled_from([1, 8, 2048, 4096]),
    st.integers(0, 7),
)
def test_fuzz_plan_shrunk_layout_fits_or_refuses(
    t: tuple[Table, int, set[int]], target: int, pick: int, minimum: int, grain: int, offset: int
) -> None:
    table, _, _ = t
    if not table.entries or fits_unchanged(table, target):
        return
    main = table.entries[pick % len(table.entries)].number
    try:
        layout = plan_shrunk_layout(
            table, target, main, minimum, Alignment(grain, offset % grain), "t"
        )
    except Refused as e:
        assert "too small" in e.message
        return
    ss = table.sector_size
    end = (target // ss - (33 if table.label == "gpt" else 0)) * ss
    for m in layout.moves:
        assert m.new_start >= 0 and m.new_start + m.new_size <= end, (m, target)
        if m.number == main:
            assert minimum <= m.new_size < m.old_size
        else:
            assert m.new_size == m.old_size
    old = {e.number: e for e in table.entries}
    for e in layout.table.entries:
        assert (e.uuid, e.type, e.name, e.attrs, e.bootable) == (
            old[e.number].uuid,
            old[e.number].type,
            old[e.number].name,
            old[e.number].attrs,
            old[e.number].bootable,
        )


@NO_SHRINK
@given(
    st.integers(1, 40_000),
    st.integers(0, 40_000),
    st.lists(
        st.tuples(st.booleans(), st.integers(0, 45_000), st.binary(min_size=0, max_size=9000)),
        max_size=30,
    ),
)
def test_fuzz_composed_file_is_a_file(
    size: int, split: int, ops: list[tuple[bool, int, bytes]]
) -> None:
    """Random reads and writes give what a plain file of the same size would give, and a write
    into the tail past the overlay's bound changes nothing."""
    split = min(split, size)
    base = bytes((i * 13) % 256 for i in range(size))
    model = bytearray(base)
    front = bytearray(base[:split])

    def front_write(data: bytes, offset: int) -> None:
        assert offset + len(data) <= split
        front[offset : offset + len(data)] = data

    f = ComposedFile(
        size,
        split,
        lambda o, n: bytes(front[o : o + n]),
        front_write,
        lambda o, n: base[o : o + n],
        3 * PAGE,
    )
    for is_write, offset, data in ops:
        if is_write:
            try:
                f.write(data, offset)
            except OverlayFull:
                continue
            end = min(offset + len(data), size)
            if offset < end:
                model[offset:end] = data[: end - offset]
        else:
            assert f.read(offset, len(data)) == bytes(model[offset : offset + len(data)])
        assert f.overlay_bytes <= 3 * PAGE
