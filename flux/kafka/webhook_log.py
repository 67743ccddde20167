"""The webhooks topic: every Flux process follows it into a :class:`~flux.model.webhooks.Registry`.

Compacted, one partition, read from the beginning without a consumer group (as the namespaces
topic): registrations survive restarts and every node agrees on them. The HTTP processes write
registrations, deletions and resumptions; the reducer processes, which deliver, write pauses and
their delivery reports. A change returns once this process has read its own record back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from flux.config import Settings
from flux.kafka.compacted_log import CompactedLog
from flux.model.webhooks import HOOK, Pause, Registry, Report, Webhook, pause_record, report_record

log = logging.getLogger(__name__)

Listener = Callable[[str], None]
"""Called with a webhook's id after a record about it was folded."""


class UnknownWebhook(Exception):
    """No webhook has this id."""


class WebhookLog(CompactedLog):
    """Reads the webhooks topic into :attr:`registry`; writes registrations, pauses, reports, deletions."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.webhooks_topic, "webhooks")
        self.registry = Registry()
        self._changing = asyncio.Lock()  # one registration change at a time from this process
        self._listeners: list[Listener] = []

    def on_change(self, listener: Listener) -> None:
        """Call ``listener`` with the id of each webhook a folded record is about, whoever wrote it."""
        self._listeners.append(listener)

    def apply(self, key: bytes, value: bytes | None) -> None:
        """Fold one record into the registry, then tell the listeners."""
        webhook_id = self.registry.apply(key, value)
        for listener in self._listeners:
            try:
                listener(webhook_id)
            except Exception:  # a listener's failure must not stop the fold
                log.exception("a listener of webhook changes failed on %r", webhook_id)

    async def register(self, webhook: Webhook) -> Webhook:
        """Store a new registration."""
        async with self._changing:
            await self.write(*webhook.record())
            return webhook

    async def delete(self, webhook_id: str) -> Webhook:
        """Remove a webhook, its pause and its reports; returns what was removed."""
        async with self._changing:
            current = self.registry.get(webhook_id)
            if current is None:
                raise UnknownWebhook(webhook_id)
            nodes = list(self.registry.reports.get(webhook_id, {}))
            if webhook_id in self.registry.pauses:
                await self.write(*pause_record(webhook_id, None))
            for node in nodes:
                await self.write(*report_record(webhook_id, None, node))
            await self.write(f"{HOOK}{webhook_id}".encode(), None)
            return current

    async def pause(self, webhook_id: str, reason: str) -> None:
        """Pause a webhook: every node stops delivering to it (its positions stay where they are)."""
        if self.registry.get(webhook_id) is not None and webhook_id not in self.registry.pauses:
            await self.write(*pause_record(webhook_id, Pause(int(time.time() * 1000), reason)))

    async def resume(self, webhook_id: str) -> Webhook:
        """Resume a paused webhook (nothing to do for an active one); deliveries go on from where they stopped."""
        async with self._changing:
            current = self.registry.get(webhook_id)
            if current is None:
                raise UnknownWebhook(webhook_id)
            if webhook_id in self.registry.pauses:
                await self.write(*pause_record(webhook_id, None))
            return current

    async def report(self, webhook_id: str, report: Report) -> None:
        """Publish this node's delivery report of a webhook (skipped once the webhook is gone)."""
        if self.registry.get(webhook_id) is not None:
            await self.write(*report_record(webhook_id, report, report.node))
