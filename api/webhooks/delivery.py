"""Webhook deliveries: in the reducer process, one runner per active webhook, each in its own task.

A runner reads the changes topic in the consumer group ``FLUX_APP_ID-webhook-<id>``: the group
spreads the partitions over the nodes, so each change is delivered by one node, and its committed
offsets are the webhook's delivery positions, kept in Kafka. A partition the group never committed
starts at the first change written after the registration. The runner takes what is pending (at
most ``FLUX_WEBHOOK_BATCH_CHANGES`` messages, at least one change record), keeps the changes the
webhook's pattern matches, POSTs them as one signed delivery and commits past them only once the
receiver answered 2xx; a failed attempt is retried with exponential backoff and jitter, the same
body and ``X-Flux-Delivery`` each time, until it succeeds, the partitions move to another node (which
delivers them again from the committed offsets), or the webhook has been failing for longer than
``FLUX_WEBHOOK_MAX_FAILURE_S``: then it is paused (a record of the webhooks topic) and every node
stops delivering it until it is resumed. So a restart neither drops changes nor delivers more
than the batches in flight again: at least once.

Nothing is queued in memory beyond the batch being delivered: the topic is the queue. A slow
receiver holds only its own runner (own consumer, own HTTP client, ``FLUX_WEBHOOK_TIMEOUT_S`` per
attempt), never the fold, ingestion or another webhook. Each node publishes what it saw (failing
since when, its recent attempts) as a report record, read by ``GET /api/webhooks/{id}/deliveries``
on any node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.structs import ConsumerRecord

from api.live.hub import FORMAT_PROPERTY, change_messages
from api.live.subscriptions import Pattern
from api.webhooks.targets import TargetRefused, delivery_request
from flux import __version__
from flux.background import cancel
from flux.config import Settings
from flux.kafka.namespace_log import NamespaceLog
from flux.kafka.publisher import PublishFailed
from flux.kafka.security import client_options
from flux.kafka.webhook_log import WebhookLog
from flux.model.changes import InvalidChangeRecord, decode_record
from flux.model.webhooks import (
    Attempt,
    FailureStreak,
    Ranges,
    Report,
    Webhook,
    backoff,
    delivery_body,
    delivery_id,
    orphaned,
    sign,
)

log = logging.getLogger(__name__)

REPORT_INTERVAL_S = 1.0
RESTART_WAIT_S = 5.0  # after a runner's consumer failed unexpectedly
MAX_ERROR_LENGTH = 300


def group_id(settings: Settings, webhook_id: str) -> str:
    """The consumer group whose committed offsets are a webhook's delivery positions."""
    return f"{settings.app_id}-webhook-{webhook_id}"


@dataclass
class HookState:
    """What this node knows of its deliveries to one webhook (kept across runner restarts)."""

    attempts: deque[Attempt]
    streak: FailureStreak = field(default_factory=FailureStreak)
    last_error: str | None = None
    last_success: int | None = None
    dirty: bool = True  # a report is due

    def report(self, node: str) -> Report:
        """This state as the report record of ``node``."""
        since = None if self.streak.since is None else int(self.streak.since * 1000)
        return Report(node, int(time.time() * 1000), since, self.last_error, self.last_success, list(self.attempts))


@dataclass
class Batch:
    """Change records read for one delivery: the messages the webhook gets, the offsets they came from,
    and the offsets to commit once they are delivered."""

    messages: list[str] = field(default_factory=list)
    ranges: Ranges = field(default_factory=dict)
    ends: dict[TopicPartition, int] = field(default_factory=dict)


class _Positions(ConsumerRebalanceListener):  # type: ignore[misc]
    """Counts rebalances (a batch read before one is abandoned), and starts partitions the group never
    committed at the first change record written after the registration."""

    def __init__(self, runner: Runner, consumer: AIOKafkaConsumer) -> None:
        self._runner = runner
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self._runner.generation += 1

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._runner.generation += 1
        fresh = [tp for tp in assigned if await self._consumer.committed(tp) is None]
        if not fresh:
            return
        ends = await self._consumer.end_offsets(fresh)  # before the time lookup: nothing written after is missed
        found = await self._consumer.offsets_for_times({tp: self._runner.hook.created_at for tp in fresh})
        for tp in fresh:
            at = found.get(tp)
            self._consumer.seek(tp, ends[tp] if at is None else at.offset)


class Runner:
    """Delivers one webhook's changes from the partitions this node holds in its group."""

    def __init__(self, settings: Settings, hooks: WebhookLog, hook: Webhook, state: HookState) -> None:
        self.settings = settings
        self.hooks = hooks
        self.hook = hook
        self.state = state
        self.pattern = Pattern.parse(hook.entity_id)
        self.generation = 0
        self.task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()

    def start(self) -> None:
        """Start delivering in a task of its own."""
        self.task = asyncio.create_task(self._run(), name=f"flux-webhook-{self.hook.webhook_id}")

    def stop(self) -> None:
        """Stop delivering: cancel the task, and make sure it ends even if the cancellation is lost.

        Python 3.11's ``asyncio.wait_for`` drops a cancellation that arrives as the awaited thing
        completes. A runner that pauses its webhook is cancelled by the pause record it reads back,
        at the very moment the write it waits on (under a ``wait_for``) completes: the cancellation
        was lost, and the runner waited for ever with its consumer still in the group, holding
        partitions no new runner could read (a resumed webhook was never delivered).
        """
        self._stopped.set()
        if self.task is not None:
            self.task.cancel()

    def _check_stopped(self) -> None:
        if self._stopped.is_set():
            raise asyncio.CancelledError

    async def _run(self) -> None:
        while True:
            self._check_stopped()
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook %s: delivery failed unexpectedly; restarting", self.hook.webhook_id)
                await asyncio.sleep(RESTART_WAIT_S)

    async def _consume(self) -> None:
        settings = self.settings
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            client_id=f"{settings.app_id}-webhook-{settings.node_id}",
            group_id=group_id(settings, self.hook.webhook_id),
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # a position the retention passed: the oldest change kept
            fetch_max_wait_ms=200,
            **client_options(settings),
        )
        consumer.subscribe([settings.changes_topic], listener=_Positions(self, consumer))
        client = httpx.AsyncClient(
            timeout=settings.webhook_timeout_s,
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_connections=2, max_keepalive_connections=1),
        )
        try:
            await consumer.start()
            while True:
                self._check_stopped()
                fetched = await consumer.getmany(timeout_ms=1000)
                if not fetched:
                    continue
                batch = self._batch(consumer, fetched)
                if batch.messages and not await self._deliver(consumer, client, batch):
                    continue  # the partitions moved on: read again from the committed offsets
                await self._commit(consumer, batch)
        finally:
            await client.aclose()
            with contextlib.suppress(Exception):
                await consumer.stop()

    def _batch(self, consumer: AIOKafkaConsumer, fetched: dict[TopicPartition, list[ConsumerRecord]]) -> Batch:
        """The messages of the fetched records, up to the batch bound (the rest is read again next time)."""
        batch = Batch()
        budget = self.settings.webhook_batch_changes
        for tp in sorted(fetched, key=lambda tp: tp.partition):
            for record in fetched[tp]:
                if len(batch.messages) >= budget:
                    consumer.seek(tp, record.offset)
                    break
                batch.ends[tp] = record.offset + 1
                try:
                    changes = decode_record(record.value or b"").changes
                except InvalidChangeRecord as exc:
                    log.warning(
                        "webhook %s: skipping change record %s@%d: %s", self.hook.webhook_id, tp, record.offset, exc
                    )
                    continue
                size = len(batch.messages)
                for change in changes:
                    if self.pattern.matches(change.id):
                        batch.messages.extend(change_messages(change, FORMAT_PROPERTY))
                if len(batch.messages) > size:
                    first = batch.ranges.get(tp.partition, (record.offset, record.offset))[0]
                    batch.ranges[tp.partition] = (first, record.offset)
        return batch

    async def _deliver(self, consumer: AIOKafkaConsumer, client: httpx.AsyncClient, batch: Batch) -> bool:
        """Deliver ``batch`` until the receiver takes it (True), or the partitions move on (False)."""
        generation = self.generation
        delivery = delivery_id(self.hook.webhook_id, batch.ranges)
        attempt = 0
        while True:
            self._check_stopped()
            attempt += 1
            if await self._attempt(client, batch, delivery, attempt):
                return True
            now = time.time()
            if self.state.streak.should_pause(now, self.settings.webhook_max_failure_s) and await self._pause():
                await self._stopped.wait()  # no attempt more: stopped once the pause is read back
                raise asyncio.CancelledError
            wait = backoff(attempt, self.settings.webhook_retry_initial_s, self.settings.webhook_retry_max_s)
            if not await self._idle(consumer, wait, generation):
                return False

    async def _attempt(self, client: httpx.AsyncClient, batch: Batch, delivery: str, attempt: int) -> bool:
        """POST the batch once; records the attempt; whether the receiver answered 2xx."""
        hook = self.hook
        sent_at = int(time.time())
        body = delivery_body(hook.webhook_id, delivery, sent_at, batch.ranges, batch.messages)
        headers = {
            "content-type": "application/json",
            "user-agent": f"flux-webhooks/{__version__}",
            "x-flux-webhook": hook.webhook_id,
            "x-flux-delivery": delivery,
            "x-flux-timestamp": str(sent_at),
            "x-flux-signature": sign(hook.secret, body),
        }
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            target = await delivery_request(hook.url, self.settings.webhook_allow_private)
            async with client.stream(
                "POST", target.url, content=body, headers={**headers, **target.headers}, extensions=target.extensions
            ) as response:  # the answer's body is never read: a receiver cannot make Flux hold a large one
                status = response.status_code
            if not 200 <= status < 300:
                error = f"the receiver answered HTTP {status}"
        except TargetRefused as exc:
            error = str(exc)
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        state = self.state
        now = time.time()
        state.attempts.appendleft(
            Attempt(
                delivery,
                int(now * 1000),
                attempt,
                len(batch.messages),
                status,
                None if error is None else error[:MAX_ERROR_LENGTH],
                round((time.monotonic() - started) * 1000, 1),
            )
        )
        state.dirty = True
        if error is None:
            state.streak.succeeded()
            state.last_success = int(now * 1000)
            state.last_error = None
            return True
        log.info("webhook %s: delivery %s attempt %d failed: %s", hook.webhook_id, delivery, attempt, error)
        state.streak.failed(now)
        state.last_error = error[:MAX_ERROR_LENGTH]
        return False

    async def _pause(self) -> bool:
        """Pause the webhook everywhere (whether the record was written); this runner is stopped
        once the record is read back, and makes no attempt meanwhile."""
        limit = self.settings.webhook_max_failure_s
        reason = f"deliveries failed for more than {limit:g} s (FLUX_WEBHOOK_MAX_FAILURE_S); last error: "
        reason += self.state.last_error or "unknown"
        try:
            await self.hooks.pause(self.hook.webhook_id, reason)
        except PublishFailed as exc:
            log.warning("webhook %s: could not pause it: %s", self.hook.webhook_id, exc)
            return False
        log.warning("webhook %s paused: %s", self.hook.webhook_id, reason)
        return True

    async def _idle(self, consumer: AIOKafkaConsumer, seconds: float, generation: int) -> bool:
        """Wait ``seconds`` while staying in the group (polling paused partitions); False if a rebalance
        happened meanwhile (or before)."""
        consumer.pause(*consumer.assignment())
        try:
            deadline = time.monotonic() + seconds
            while self.generation == generation and (left := deadline - time.monotonic()) > 0:
                await consumer.getmany(timeout_ms=max(1, int(min(left, 1.0) * 1000)))
        finally:
            consumer.resume(*consumer.assignment())
        return self.generation == generation

    async def _commit(self, consumer: AIOKafkaConsumer, batch: Batch) -> None:
        """Commit past the batch (a failure only means it may be delivered again)."""
        if not batch.ends:
            return
        try:
            await consumer.commit(dict(batch.ends))
        except Exception as exc:
            log.warning("webhook %s: could not commit %s: %r", self.hook.webhook_id, batch.ends, exc)


class WebhookDelivery:
    """The node's webhook deliveries: a :class:`Runner` for every webhook that is registered and not
    paused, started and stopped as the webhooks topic says; and this node's delivery reports."""

    def __init__(self, settings: Settings, hooks: WebhookLog, namespaces: NamespaceLog) -> None:
        self._settings = settings
        self._hooks = hooks
        self._namespaces = namespaces
        self._node = f"{settings.node_id}:{settings.port}"
        self._runners: dict[str, Runner] = {}
        self._states: dict[str, HookState] = {}
        self._reporter: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        """Start a runner per active webhook, and follow the webhooks topic for changes."""
        self._hooks.on_change(self._changed)
        self._namespaces.on_change(lambda _: self._changed_all())  # a deleted namespace's webhooks stop
        self._changed_all()
        self._reporter = asyncio.create_task(self._report_loop(), name="flux-webhook-reports")

    async def stop(self) -> None:
        """Stop every runner (what they had not committed is delivered again after a restart)."""
        self._stopping = True
        runners, self._runners = list(self._runners.values()), {}
        for runner in runners:
            runner.stop()
        await asyncio.gather(*(cancel(runner.task) for runner in runners))
        await cancel(self._reporter)
        await self._report()

    def runner(self, webhook_id: str) -> Runner | None:
        """The runner of a webhook on this node, if it runs."""
        return self._runners.get(webhook_id)

    def _changed_all(self) -> None:
        for hook in self._hooks.registry.all():
            self._changed(hook.webhook_id)

    def _orphaned(self, hook: Webhook) -> bool:
        holder = None if hook.namespace is None else self._namespaces.registry.holder(hook.namespace)
        return orphaned(hook, None if holder is None else holder.namespace_id) is not None

    def _changed(self, webhook_id: str) -> None:
        registry = self._hooks.registry
        hook = registry.get(webhook_id)
        wanted = (
            not self._stopping and hook is not None and webhook_id not in registry.pauses and not self._orphaned(hook)
        )
        runner = self._runners.get(webhook_id)
        if runner is not None and (not wanted or runner.hook != hook):
            del self._runners[webhook_id]
            runner.stop()
            runner = None
        if hook is None:
            self._states.pop(webhook_id, None)
            return
        if wanted and runner is None:
            state = self._states.get(webhook_id)
            if state is None:
                state = self._states[webhook_id] = HookState(deque(maxlen=self._settings.webhook_deliveries_kept))
            state.streak = FailureStreak()  # a resumed webhook starts a new streak
            state.dirty = True
            runner = self._runners[webhook_id] = Runner(self._settings, self._hooks, hook, state)
            runner.start()

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(REPORT_INTERVAL_S)
            await self._report()

    async def _report(self) -> None:
        """Publish the reports of the webhooks whose state changed since the last one."""
        for webhook_id, state in list(self._states.items()):
            if not state.dirty or (webhook_id not in self._runners and not state.attempts):
                continue
            state.dirty = False
            try:
                await self._hooks.report(webhook_id, state.report(self._node))
            except PublishFailed as exc:
                state.dirty = True
                log.warning("could not publish the delivery report of webhook %s: %s", webhook_id, exc)
