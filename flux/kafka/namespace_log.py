"""The namespaces topic: every Flux process follows it into a :class:`~flux.model.namespaces.Registry`.

The topic is compacted, has one partition and is keyed by namespace name; a record is the
namespace with its token hash (registration, new token) or a tombstone (deletion). Each process
reads it from the beginning without a consumer group, so all of them agree on the namespaces
and a restart loses none. A change returns once this process has read its own record back, so
the answer reflects the registry's verdict (e.g. who won a name two processes raced for).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from flux.config import Settings
from flux.kafka.compacted_log import CompactedLog
from flux.model.namespaces import (
    Namespace,
    Registry,
    check_name,
    encode_record,
    hash_token,
    new_namespace_id,
    new_token,
)

log = logging.getLogger(__name__)

Listener = Callable[[str], None]
"""Called with a namespace's name after a record about it was folded (registration, new token, deletion)."""


class NamespaceTaken(Exception):
    """The name is registered already."""


class UnknownNamespace(Exception):
    """No namespace has this name."""


class NamespaceLog(CompactedLog):
    """Reads the namespaces topic into :attr:`registry`; writes registrations, new tokens, deletions."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.namespaces_topic, "namespaces")
        self.registry = Registry()
        self._changing = asyncio.Lock()  # one change at a time from this process
        self._listeners: list[Listener] = []

    def on_change(self, listener: Listener) -> None:
        """Call ``listener`` with the name of each namespace a record changes, once it is folded, whichever
        process wrote the record (e.g. to close WebSockets whose token it voided)."""
        self._listeners.append(listener)

    def apply(self, key: bytes, value: bytes | None) -> None:
        """Fold one namespaces record into the registry, then tell the listeners."""
        self.registry.apply(key, value)
        name = key.decode("utf-8", "replace")
        for listener in self._listeners:
            try:
                listener(name)
            except Exception:  # a listener's failure must not stop the fold
                log.exception("a listener of namespace changes failed on %r", name)

    async def register(self, name: str) -> tuple[Namespace, str]:
        """Register ``name``; returns the namespace and its token (shown once, stored only as a hash)."""
        check_name(name)
        async with self._changing:
            if self.registry.holder(name) is not None:
                raise NamespaceTaken(name)
            token = new_token()
            namespace = Namespace(new_namespace_id(), name, int(time.time() * 1000), hash_token(token))
            await self.write(*encode_record(namespace))
            holder = self.registry.holder(name)
            if holder is None or holder.namespace_id != namespace.namespace_id:
                if holder is not None:  # lost a race: restate the winner, so compaction keeps it
                    await self.write(*encode_record(holder))
                raise NamespaceTaken(name)
            return namespace, token

    async def rotate_token(self, name: str) -> tuple[Namespace, str]:
        """Give ``name`` a new token; the old one stops working. Returns the namespace and the token."""
        async with self._changing:
            current = self.registry.holder(name)
            if current is None:
                raise UnknownNamespace(name)
            token = new_token()
            namespace = Namespace(current.namespace_id, name, current.created_at, hash_token(token))
            await self.write(*encode_record(namespace))
            if self.registry.holder(name) != namespace:
                raise UnknownNamespace(name)  # deleted meanwhile
            return namespace, token

    async def delete(self, name: str) -> Namespace:
        """Remove ``name``; its token stops working. Returns what was removed."""
        async with self._changing:
            current = self.registry.holder(name)
            if current is None:
                raise UnknownNamespace(name)
            await self.write(name.encode(), None)
            return current
