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
        self._prefix_lengths: dict[int, int] = {}  # length -> how many prefixes have it

    def add(self, pattern: Pattern, subscriber: T) -> None:
        """Subscribe ``subscriber`` to ``pattern``."""
        if pattern.prefix is None:
            self._exact.setdefault(pattern.text, set()).add(subscriber)
            return
        if pattern.prefix not in self._prefixes:
            length = len(pattern.prefix)
            self._prefix_lengths[length] = self._prefix_lengths.get(length, 0) + 1
        self._prefixes.setdefault(pattern.prefix, set()).add(subscriber)

    def remove(self, pattern: Pattern, subscriber: T) -> None:
        """Undo :meth:`add`; unknown pairs are ignored."""
        index = self._exact if pattern.prefix is None else self._prefixes
        key = pattern.text if pattern.prefix is None else pattern.prefix
        subscribers = index.get(key)
        if subscribers is not None:
            subscribers.discard(subscriber)
            if not subscribers:
                del index[key]
                if pattern.prefix is not None:
                    length = len(pattern.prefix)
                    self._prefix_lengths[length] -= 1
                    if not self._prefix_lengths[length]:
                        del self._prefix_lengths[length]

    def match(self, entity_id: str) -> Iterator[T]:
        """Every subscriber whose pattern covers ``entity_id`` (a subscriber may come once per pattern)."""
        exact = self._exact.get(entity_id)
        if exact:
            yield from exact
        if self._prefixes:  # one dict lookup per distinct prefix length, not one test per prefix
            for length in self._prefix_lengths:
                if length <= len(entity_id):
                    subscribers = self._prefixes.get(entity_id[:length])
                    if subscribers:
                        yield from subscribers

    def __bool__(self) -> bool:
        return bool(self._exact or self._prefixes)

    def __len__(self) -> int:
        return sum(len(s) for s in self._exact.values()) + sum(len(s) for s in self._prefixes.values())
