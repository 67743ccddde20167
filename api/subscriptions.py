"""Which WebSocket subscriptions an entity id matches: exact ids, prefix patterns, everything.

A pattern is ``*`` (every entity), ``prefix*`` (ids starting with ``prefix``, e.g. ``acme/*``)
or an exact id. Lookups cost one dict probe for exact ids, one per distinct prefix, and the
``*`` set, so a change is routed without scanning every subscriber.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

WILDCARD = "*"

T = TypeVar("T")


@dataclass(frozen=True)
class Pattern:
    """A parsed subscription pattern."""

    text: str
    prefix: str | None  # None: exact id

    @classmethod
    def parse(cls, text: str) -> Pattern:
        """``*`` and ``prefix*`` are prefix patterns; anything else is an exact id."""
        if text.endswith(WILDCARD):
            return cls(text, text[:-1])
        return cls(text, None)

    def matches(self, entity_id: str) -> bool:
        """Whether ``entity_id`` is covered by this pattern."""
        if self.prefix is None:
            return entity_id == self.text
        return entity_id.startswith(self.prefix)


class SubscriptionIndex(Generic[T]):
    """Subscribers (any hashable values) by pattern."""

    def __init__(self) -> None:
        self._exact: dict[str, set[T]] = {}
        self._prefixes: dict[str, set[T]] = {}

    def add(self, pattern: Pattern, subscriber: T) -> None:
        """Subscribe ``subscriber`` to ``pattern``."""
        index = self._exact if pattern.prefix is None else self._prefixes
        index.setdefault(pattern.text if pattern.prefix is None else pattern.prefix, set()).add(subscriber)

    def remove(self, pattern: Pattern, subscriber: T) -> None:
        """Undo :meth:`add`; unknown pairs are ignored."""
        index = self._exact if pattern.prefix is None else self._prefixes
        key = pattern.text if pattern.prefix is None else pattern.prefix
        subscribers = index.get(key)
        if subscribers is not None:
            subscribers.discard(subscriber)
            if not subscribers:
                del index[key]

    def match(self, entity_id: str) -> Iterator[T]:
        """Every subscriber whose pattern covers ``entity_id`` (a subscriber may come once per pattern)."""
        exact = self._exact.get(entity_id)
        if exact:
            yield from exact
        for prefix, subscribers in self._prefixes.items():
            if entity_id.startswith(prefix):
                yield from subscribers

    def __len__(self) -> int:
        return sum(len(s) for s in self._exact.values()) + sum(len(s) for s in self._prefixes.values())
