"""Zombie fencing: a node that was frozen past the group's session timeout writes nothing stale.

Kafka fences a stale member's offset commits (its generation is old) but not its produce
requests: a node stopped (SIGSTOP, a VM pause, a long GC) past ``FLUX_SESSION_TIMEOUT_S`` has
been dropped from the consumer group and its partitions handed to other nodes, yet when it wakes
up it still holds fetched records and would fold them into state the new owner has moved past,
and send that stale state to the table's changelog, which is what every later recovery reads.

The fence notices the freeze: a ticker records the time every :data:`TICK_S`; when the reducer is
about to write and the last tick is older than half the session timeout, the event loop did not
run for that long. Before any write, the fence then asks the group coordinator (DescribeGroups)
whether this node's member id is still in the group. If it is not (or the answer does not settle
it), the batch is not written (:class:`Fenced`) and the worker stops, as on any failed write:
acknowledging the batch's records would let Faust commit past events nobody folded (an empty
group accepts a commit of a member that has left it). A restarted worker rejoins the group and
reads on from the committed offsets; meanwhile the partitions' new owners fold them. (A rebalance this node takes
part in needs no fence: Faust lets the batch in flight finish before it gives partitions up.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from flux.background import cancel

log = logging.getLogger(__name__)

TICK_S = 0.25
ERROR_CODE = 0  # fields of a group in a DescribeGroups response (v0-v3, as aiokafka sends them)
MEMBERS = 5
ATTEMPTS = 3
RETRY_S = 0.5


class Fenced(RuntimeError):
    """This node is no longer a member of the consumer group: do not write."""


class MembershipFence:
    """Confirms group membership before writes that follow a freeze of the event loop."""

    def __init__(
        self,
        app: Any,
        bootstrap: str,
        group_id: str,
        session_timeout_s: float,
        heartbeat_interval_s: float,
        **client: Any,
    ) -> None:
        self._app = app
        self._bootstrap = bootstrap
        self._group_id = group_id
        # Membership can expire after a freeze of session - heartbeat interval; check well before.
        self._gap_s = max(TICK_S * 2, min(session_timeout_s / 2, session_timeout_s - heartbeat_interval_s))
        self._client = client
        self._last_tick = time.monotonic()
        self._frozen_for = 0.0  # the longest stand-still not yet confirmed
        self._fenced: Fenced | None = None  # once fenced, this process never writes again
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the ticker on the running loop."""
        self._last_tick = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> None:
        """Stop the ticker."""
        await cancel(self._task)

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
        """Raise :class:`Fenced` if the loop was frozen and this node is no longer in the group.

        An answer that does not settle it (the coordinator moving, an error) is asked again, and
        after :data:`ATTEMPTS` it counts as fenced: writing stale state is the worse outcome. Once
        fenced, every later check raises too: Faust's supervisor restarts a crashed agent at once,
        and that agent's first batch must not be written while the worker is on its way down.
        """
        if self._fenced is not None:
            raise self._fenced
        if not self.frozen():
            return
        gap, self._frozen_for = self._frozen_for, 0.0
        member = self._member_id()
        members: set[str] | None = None
        for attempt in range(ATTEMPTS):
            try:
                members = await self._group_members()
                break
            except Exception as exc:  # no answer, or an error code: ask again
                log.warning("could not confirm group membership (attempt %d): %r", attempt + 1, exc)
                await asyncio.sleep(RETRY_S)
        if members is not None and member and member in members:
            log.warning("the event loop stood still for %.1f s; still a member of the group, writing on", gap)
            return
        log.warning(
            "the event loop stood still for %.1f s and this node (member %r) is not confirmed in group %r: "
            "the batch in hand is not written, and the worker stops (a supervisor restarts it; it then "
            "rejoins and reads on from the group's committed offsets)",
            gap,
            member,
            self._group_id,
        )
        self._fenced = Fenced(
            f"member {member!r} is not confirmed in group {self._group_id!r} after a {gap:.1f} s freeze"
        )
        raise self._fenced

    def _member_id(self) -> str:
        consumer = self._app.consumer._thread._ensure_consumer()
        return str(consumer._coordinator.member_id or "")

    async def _group_members(self) -> set[str]:
        """The member ids of the group; raises on an error answer (which lists no members)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap, **self._client)
        await admin.start()
        try:
            responses = await admin.describe_consumer_groups([self._group_id])
        finally:
            await admin.close()
        members: set[str] = set()
        for response in responses:
            for group in response.groups:
                if group[ERROR_CODE] != 0:
                    raise RuntimeError(f"DescribeGroups answered error code {group[ERROR_CODE]}")
                members.update(member[0] for member in group[MEMBERS])
        return members
