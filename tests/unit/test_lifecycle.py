"""flux.lifecycle: parts start in order, stop in reverse, and one bad stop neither blocks nor hides the rest."""

from __future__ import annotations

import asyncio

import pytest

from flux.lifecycle import Services


class Part:
    """A service that notes its starts and stops in a shared journal."""

    def __init__(self, name: str, journal: list[str], stop_with: BaseException | None = None, hang: bool = False):
        self.name = name
        self.journal = journal
        self.stop_with = stop_with
        self.hang = hang

    async def start(self) -> None:
        self.journal.append(f"start {self.name}")

    async def stop(self) -> None:
        if self.hang:
            await asyncio.sleep(60)
        self.journal.append(f"stop {self.name}")
        if self.stop_with is not None:
            raise self.stop_with


def test_services_start_in_order_and_stop_in_reverse_with_closers_in_their_turn() -> None:
    journal: list[str] = []

    async def run() -> None:
        owner = Services()
        await owner.start(Part("publisher", journal), Part("relay", journal))

        async def close_client() -> None:
            journal.append("close client")

        owner.close_on_stop(close_client, "client")
        await owner.start(Part("http", journal))
        await owner.stop()

    asyncio.run(run())
    assert journal == [
        "start publisher",
        "start relay",
        "start http",
        "stop http",
        "close client",
        "stop relay",
        "stop publisher",
    ]


def test_a_failing_or_hanging_stop_is_logged_and_the_others_still_stop(caplog: pytest.LogCaptureFixture) -> None:
    journal: list[str] = []

    async def run() -> None:
        owner = Services(stop_timeout_s=0.05)
        await owner.start(
            Part("publisher", journal),
            Part("relay", journal, stop_with=RuntimeError("broker gone")),
            Part("ticker", journal, hang=True),
        )
        await owner.stop()

    asyncio.run(run())
    assert journal[-2:] == ["stop relay", "stop publisher"]
    assert "Part failed to stop" in caplog.text and "did not stop within" in caplog.text


def test_only_the_parts_that_started_are_stopped() -> None:
    journal: list[str] = []

    class Broken(Part):
        async def start(self) -> None:
            raise OSError("port taken")

    async def run() -> None:
        owner = Services()
        with pytest.raises(OSError):
            await owner.start(Part("publisher", journal), Broken("http", journal))
        await owner.stop()

    asyncio.run(run())
    assert journal == ["start publisher", "stop publisher"]
