"""Driving the TUI in tests with Textual's Pilot: run a scenario in an app at a terminal size,
and let the workers a key started finish before the next step."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from textual.app import App
from textual.pilot import Pilot

Scenario = Callable[[Pilot[Any]], Awaitable[None]]


def drive(app: App[Any], scenario: Scenario, size: tuple[int, int] = (80, 25)) -> None:
    """Run ``scenario`` in ``app`` (headless, ``size`` columns and rows), once it settled."""

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            await scenario(pilot)

    asyncio.run(main())


async def settle(pilot: Pilot[Any]) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


async def press(pilot: Pilot[Any], *keys: str) -> None:
    """Each key, then the workers it started."""
    for key in keys:
        await pilot.press(key)
        await settle(pilot)
