"""The zombie fence (agents/membership_fence.py), without Kafka: when it asks, and what it decides."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

from agents import membership_fence
from agents.membership_fence import Fenced, MembershipFence


def fence_of(member: str, answers: list[Any]) -> tuple[MembershipFence, list[Any]]:
    """A fence whose consumer has ``member`` as its id and whose coordinator answers ``answers`` in turn."""
    coordinator = SimpleNamespace(member_id=member)
    consumer = SimpleNamespace(_coordinator=coordinator)
    app = SimpleNamespace(consumer=SimpleNamespace(_thread=SimpleNamespace(_ensure_consumer=lambda: consumer)))
    fence = MembershipFence(app, "unused:9092", "flux", session_timeout_s=6, heartbeat_interval_s=1)
    asked: list[Any] = []

    async def members() -> set[str]:
        answer = answers[len(asked)]
        asked.append(answer)
        if isinstance(answer, Exception):
            raise answer
        return set(answer)

    fence._group_members = members  # type: ignore[method-assign]
    return fence, asked


def freeze(fence: MembershipFence, seconds: float) -> None:
    fence._last_tick = time.monotonic() - seconds


def test_a_loop_that_never_stood_still_writes_without_asking() -> None:
    fence, asked = fence_of("m-1", [])
    asyncio.run(fence.check())
    assert asked == []


def test_after_a_freeze_a_node_still_in_the_group_writes_on_and_asks_once() -> None:
    fence, asked = fence_of("m-1", [{"m-1", "m-2"}])
    freeze(fence, 4)
    asyncio.run(fence.check())
    asyncio.run(fence.check())
    assert len(asked) == 1, "a freeze is confirmed once"


def test_after_a_freeze_a_node_dropped_from_the_group_is_fenced() -> None:
    fence, _ = fence_of("m-1", [{"m-2", "m-3"}])
    freeze(fence, 8)
    with pytest.raises(Fenced):
        asyncio.run(fence.check())


def test_a_consumer_that_already_reset_its_member_id_is_fenced() -> None:
    fence, _ = fence_of("", [{"m-2"}])
    freeze(fence, 8)
    with pytest.raises(Fenced):
        asyncio.run(fence.check())


def test_an_answer_that_does_not_settle_it_is_asked_again_then_fences(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(membership_fence, "RETRY_S", 0)
    fence, asked = fence_of("m-1", [RuntimeError("error code 16"), {"m-1"}])
    freeze(fence, 4)
    asyncio.run(fence.check())
    assert len(asked) == 2
    fence, asked = fence_of("m-1", [RuntimeError("error code 15")] * 3)
    freeze(fence, 4)
    with pytest.raises(Fenced):
        asyncio.run(fence.check())


def test_the_threshold_stays_below_what_the_session_allows() -> None:
    fence, asked = fence_of("m-1", [{"m-1"}])
    freeze(fence, 2.5)  # under session/2 = 3 s: nothing to ask
    asyncio.run(fence.check())
    assert asked == []
    tight = MembershipFence(None, "x", "g", session_timeout_s=6, heartbeat_interval_s=4.5)
    assert tight._gap_s == pytest.approx(1.5), "membership can expire after session - heartbeat"


def test_once_fenced_every_later_check_refuses_without_asking() -> None:
    fence, asked = fence_of("m-1", [{"m-2"}])
    freeze(fence, 8)
    with pytest.raises(Fenced):
        asyncio.run(fence.check())
    assert len(asked) == 1
    with pytest.raises(Fenced):  # no freeze now: a restarted agent's first batch is refused all the same
        asyncio.run(fence.check())
    assert len(asked) == 1
