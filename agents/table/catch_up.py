"""Catching up: whether each served partition's table has folded its log up to where the log ended
when the partition was assigned to this node.

A node that starts (after a crash, say) or takes a partition over recovers its table from the
local store or the changelog, then folds the records its group had not committed yet. Until it
has, the table may lack recent events: it is not ready (``/ready`` says how many records each
partition is behind). The target of a partition is the log's end offset (its high watermark) as
first read after the assignment (by :mod:`agents.applied_lag`, once a second): past the records of
transactions still open then, which a crashed process of this node may have left behind, and
which hide the committed records after them until they are aborted. The partition has caught up
once its position (:meth:`agents.table.store.EntityStore.positions`) reaches that target, or when
the log's last stable offset has passed it with only transaction markers or aborted records
left to fold (a lag of 0 records). A caught
up partition stays so until it is assigned again: later arrivals are lag, not recovery.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class CatchUp:
    """The catch-up targets of the served partitions and which of them were reached."""

    def __init__(self) -> None:
        self._targets: dict[int, int] = {}
        self._reached: set[int] = set()

    def keep(self, partitions: Iterable[int]) -> None:
        """After a rebalance: forget every partition but ``partitions`` (still served, folded on)."""
        kept = set(partitions)
        self._targets = {p: t for p, t in self._targets.items() if p in kept}
        self._reached &= kept

    def aim(self, partition: int, end: int) -> None:
        """Set ``partition``'s target, unless it has one: the log's end offset (its high watermark,
        past any transaction still open) as read after the assignment."""
        self._targets.setdefault(partition, end)

    def observe(self, partition: int, position: int, end: int, lag_records: int) -> None:
        """A measurement of ``partition``: its position, the log's last stable offset and the lag
        in records found for them (0 when nothing but markers lies between). Without a target
        yet, that last stable offset becomes it."""
        target = self._targets.setdefault(partition, end)
        if position >= target or (lag_records == 0 and end >= target):
            self._reached.add(partition)

    def unread(self, partitions: Iterable[int]) -> list[int]:
        """The partitions of ``partitions`` whose target has not been read yet."""
        return [p for p in partitions if p not in self._targets and p not in self._reached]

    def behind(self, positions: Mapping[int, int]) -> dict[int, int | None]:
        """The partitions of ``positions`` (partition -> position) not caught up yet, with the
        records left to their target (None: the target has not been read yet)."""
        left: dict[int, int | None] = {}
        for partition, position in positions.items():
            if partition in self._reached:
                continue
            target = self._targets.get(partition)
            if target is not None and position >= target:
                self._reached.add(partition)
                continue
            left[partition] = None if target is None else target - position
        return left
