"""Zombie fencing: a node that was frozen past the group's session timeout writes nothing stale.

Kafka fences a stale member's offset commits (its generation is old) but not its produce
requests: a node stopped (SIGSTOP, a VM pause, a long GC) past ``FLUX_SESSION_TIMEOUT_S`` has
been dropped from the consumer group and its partitions handed to other nodes, yet when it wakes
up it still holds fetched records and would fold them into state the new owner has moved past,
and send that stale state to the table's changelog, which is what every later recovery reads.

The fence notices the freeze: a ticker records the time every :data:`TICK_S`; when the reducer is
about to write and the last tick is older than half the session timeout, the event loop did not
run for that long. Before any write, the fence then asks the group coordinator (DescribeGroups)
whether this node's member id is still in the group. If it is not, the batch is dropped
(:class:`Fenced`): nothing is written, nothing is committed, and the records are folded again by
whoever owns their partitions after the rebalance that follows. (A rebalance this node takes
part in needs no fence: Faust lets the batch in flight finish before it gives partitions up.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

log = logging.getLogger(__name__)

TICK_S = 0.25
MEMBERS = 5  # the members array in a DescribeGroups response's group (v0-v5)


class Fenced(RuntimeError):
    """This node is no longer a member of the consumer group: do not write."""


class MembershipFence:
    """Confirms group membership before writes that follow a freeze of the event loop."""

    def __init__(self, app: Any, bootstrap: str, group_id: str, session_timeout_s: float, **client: Any) -> None:
        self._app = app
        self._bootstrap = bootstrap
        self._group_id = group_id
        self._gap_s = session_timeout_s / 2
        self._client = client
        self._last_tick = time.monotonic()
        self._frozen_for = 0.0  # the longest stand-still not yet confirmed
        self._fenced_member: str | None = None  # fenced until the consumer rejoins with a new member id
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the ticker on the running loop."""
        self._last_tick = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> None:
        """Stop the ticker."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _tick(self) -> None:
        while True:
            self._note_gap()
            await asyncio.sleep(TICK_S)

    def _note_gap(self) -> None:
        now = time.monotonic()
        gap = now - self._last_tick
        if gap > self._gap_s:
            self._frozen_for = max(self._frozen_for, gap)
        self._last_tick = now

    def frozen(self) -> bool:
        """Whether the event loop stood still for more than half the session timeout since the last check."""
        self._note_gap()
        return self._frozen_for > 0

    async def check(self) -> None:
        """Raise :class:`Fenced` if the loop was frozen and this node is no longer in the group."""
        if self._fenced_member is not None:
            if self._member_id() in (self._fenced_member, ""):
                raise Fenced("this node has not rejoined the group since it was fenced")
            self._fenced_member = None  # rejoined: the new assignment's records are its own
        if not self.frozen():
            return
        gap, self._frozen_for = self._frozen_for, 0.0
        member = self._member_id()
        members = await self._group_members()
        if member and member in members:
            log.warning("the event loop stood still for %.1f s; still a member of the group, writing on", gap)
            return
        self._fenced_member = member
        log.warning(
            "the event loop stood still for %.1f s and this node (member %r) is no longer in group %r: "
            "dropping the batch unwritten; its partitions are folded by their new owners",
            gap,
            member,
            self._group_id,
        )
        raise Fenced(f"member {member!r} left group {self._group_id!r} while this node was frozen")

    def _member_id(self) -> str:
        consumer = self._app.consumer._thread._ensure_consumer()
        return str(consumer._coordinator.member_id or "")

    async def _group_members(self) -> set[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap, **self._client)
        await admin.start()
        try:
            responses = await admin.describe_consumer_groups([self._group_id])
        finally:
            await admin.close()
        return {member[0] for response in responses for group in response.groups for member in group[MEMBERS]}
