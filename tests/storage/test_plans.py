"""A confirmed plan runs only on the disk it showed (engine.targets.check_still_same)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from recovery.engine import api
from recovery.errors import Refused
from tests import loopdev
from tests.storage.disks import MiB, make_gpt_system_disk, run_recovery


def read(dev: str, offset: int, length: int) -> bytes:
    with open(dev, "rb") as f:
        f.seek(offset)
        return f.read(length)


def backing_file(dev: str) -> Path:
    return Path(loopdev.run("losetup", "-n", "-O", "BACK-FILE", dev).stdout.strip())


def test_restore_refuses_a_target_that_changed_size_since_the_plan(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src, _ = make_gpt_system_disk(loop)
    repo = tmp_path / "repo"
    run_recovery("backup", src, "--to", str(repo), "--name", "t")
    dst = loop(512 * MiB)
    plan = api.restore_plan(str(repo), "t", dst)
    # Another disk at the same path: here the same loop device over a larger file.
    with open(backing_file(dst), "r+b") as f:
        f.truncate(600 * MiB)
    loopdev.run("losetup", "--set-capacity", dst)
    with pytest.raises(Refused) as e:
        api.restore_run(plan)
    assert e.value.message == (
        f"{dst} is no longer the disk the plan showed (size 512.0 MiB, now 600.0 MiB): "
        "plan again; nothing was written"
    )
    assert read(dst, 0, 4 * MiB) == bytes(4 * MiB)
    assert read(dst, 600 * MiB - MiB, MiB) == bytes(MiB)


def test_restore_and_clone_refuse_another_serial(loop, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src, _ = make_gpt_system_disk(loop)
    repo = tmp_path / "repo"
    run_recovery("backup", src, "--to", str(repo), "--name", "t")
    dst = loop(512 * MiB)

    refused = f"{dst} is no longer the disk the plan showed (serial WD-OTHER, now"

    restore = api.restore_plan(str(repo), "t", dst)
    swapped = replace(
        restore.target_info, identity={**restore.target_info.identity, "serial": "WD-OTHER"}
    )
    with pytest.raises(Refused) as e:
        api.restore_run(replace(restore, target_info=swapped))
    assert e.value.message.startswith(refused)
    assert e.value.message.endswith("plan again; nothing was written")

    clone = api.clone_plan(src, dst)
    with pytest.raises(Refused) as e:
        api.clone_run(replace(clone, target_info=swapped))
    assert e.value.message.startswith(refused)
    assert read(dst, 0, 4 * MiB) == bytes(4 * MiB)

    # The same plans, unchanged, still run.
    result = api.clone_run(clone)
    assert result.ok
    assert read(dst, 0, MiB) == read(src, 0, MiB)
