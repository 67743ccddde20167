"""Webhooks: registrations, the records of the webhooks topic, signing, backoff and the pause rule. Pure.

A webhook is a URL that gets every change of the entities a pattern matches (the WebSocket's
patterns: an exact id, ``prefix*`` or ``*``), POSTed as JSON and signed with the webhook's secret.
Every Flux process folds the compacted webhooks topic (one partition) into a :class:`Registry`;
its records are keyed by kind:

- ``w/<id>``: the registration (:class:`Webhook`, secret included), a tombstone deletes it;
- ``p/<id>``: the webhook is paused (:class:`Pause`: when and why), a tombstone resumes it;
- ``r/<id>/<node>``: a node's delivery report (:class:`Report`: failing since when, recent attempts).

The topic plumbing is :mod:`flux.kafka.webhook_log`, the deliveries :mod:`api.webhooks.delivery`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import random
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

HOOK = "w/"
PAUSE = "p/"
REPORT = "r/"

ACTIVE = "active"
FAILING = "failing"
PAUSED = "paused"

SIGNATURE_PREFIX = "sha256="
SECRET_RULE = "16-256 printable ASCII characters"
MAX_PATTERN_LENGTH = 1024


class InvalidWebhook(ValueError):
    """A registration that breaks a rule (the message says which)."""


class InvalidRecord(ValueError):  # a ValueError: the log skips it
    """A webhooks-topic record that cannot be read."""


@dataclass(frozen=True)
class Webhook:
    """One registration. ``namespace`` (name and id) is the namespace whose token registered it
    (None: the admin, or auth off)."""

    webhook_id: str
    url: str
    entity_id: str
    secret: str
    created_at: int  # Unix epoch ms
    namespace: str | None = None
    namespace_id: str | None = None

    def record(self) -> tuple[bytes, bytes]:
        """The topic record of this registration."""
        return f"{HOOK}{self.webhook_id}".encode(), orjson.dumps(asdict(self))


@dataclass(frozen=True)
class Pause:
    """Why and since when (Unix epoch ms) a webhook is paused."""

    at: int
    reason: str


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt, as ``GET /api/webhooks/{id}/deliveries`` shows it."""

    delivery: str
    at: int  # Unix epoch ms
    attempt: int  # 1 for the first try of a delivery
    changes: int
    status: int | None  # the receiver's HTTP status; None: no answer
    error: str | None  # None: delivered
    duration_ms: float


@dataclass(frozen=True)
class Report:
    """What one node knows of its deliveries to a webhook."""

    node: str
    at: int
    failing_since: int | None = None
    last_error: str | None = None
    last_success: int | None = None
    attempts: list[Attempt] = field(default_factory=list)


def new_webhook_id() -> str:
    """A fresh webhook id, e.g. ``wh_3f9a0c1b2d4e5f60``."""
    return f"wh_{secrets.token_hex(8)}"


def new_secret() -> str:
    """A fresh signing secret: 256 random bits, URL-safe."""
    return "whsec_" + secrets.token_urlsafe(32)


def check_secret(secret: Any) -> str:
    """``secret`` if it follows :data:`SECRET_RULE`, else :class:`InvalidWebhook`."""
    if not isinstance(secret, str) or not 16 <= len(secret) <= 256 or not secret.isascii() or not secret.isprintable():
        raise InvalidWebhook(f"secret must be {SECRET_RULE}")
    return secret


def check_pattern(pattern: Any) -> str:
    """A WebSocket pattern (exact id, ``prefix*``, ``*``), else :class:`InvalidWebhook`."""
    if not isinstance(pattern, str) or not pattern or len(pattern) > MAX_PATTERN_LENGTH or "\0" in pattern:
        raise InvalidWebhook(
            f"entity_id must be an entity id, a prefix pattern ending in '*' or '*' (1-{MAX_PATTERN_LENGTH} characters)"
        )
    if "*" in pattern[:-1]:
        raise InvalidWebhook("entity_id may hold '*' only at its end (a prefix pattern)")
    return pattern


def blocked_address(address: str) -> str | None:
    """Why ``address`` is not a public internet address (loopback, private, link-local...), or None."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for kind in ("loopback", "private", "link_local", "multicast", "reserved", "unspecified"):
        if getattr(ip, f"is_{kind}"):
            return f"{address} is a {kind.replace('_', '-')} address"
    if not ip.is_global:
        return f"{address} is not a public address"
    return None


def sign(secret: str, body: bytes) -> str:
    """The ``X-Flux-Signature`` of ``body``: ``sha256=`` and the hex HMAC-SHA256 of the raw body."""
    return SIGNATURE_PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str) -> bool:
    """Whether ``signature`` is :func:`sign` of ``body`` (constant-time comparison)."""
    return hmac.compare_digest(sign(secret, body).encode(), signature.encode())


Ranges = dict[int, tuple[int, int]]
"""Partition -> (first, last) offsets of the changes topic a delivery covers."""


def delivery_id(webhook_id: str, ranges: Ranges) -> str:
    """The ``X-Flux-Delivery`` of a delivery: the same for every attempt of it, and for the same changes
    read again after a restart (it is derived from the webhook and the change-feed offsets covered)."""
    spans = ",".join(f"{p}:{a}-{b}" for p, (a, b) in sorted(ranges.items()))
    return "dl_" + hashlib.sha256(f"{webhook_id}|{spans}".encode()).hexdigest()[:32]


def delivery_body(webhook_id: str, delivery: str, sent_at_s: int, ranges: Ranges, messages: list[str]) -> bytes:
    """The JSON body of a delivery: ``{"webhook", "delivery", "timestamp", "offsets", "changes"}``, the
    changes being the WebSocket's ``state_update`` / ``entity_deleted`` / ``property_removed`` messages
    (already JSON text), in feed order per partition."""
    head = orjson.dumps(
        {
            "webhook": webhook_id,
            "delivery": delivery,
            "timestamp": sent_at_s,
            "offsets": {str(p): [a, b] for p, (a, b) in sorted(ranges.items())},
        }
    )
    return head[:-1] + b',"changes":[' + ",".join(messages).encode() + b"]}"


def backoff(attempt: int, initial_s: float, maximum_s: float, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1, 2, ...): exponential (``initial_s``
    doubled each time, at most ``maximum_s``) with jitter, uniformly in the upper half of that."""
    ceiling = min(maximum_s, initial_s * 2.0 ** max(0, attempt - 1))
    return ceiling / 2 + rand() * ceiling / 2


class FailureStreak:
    """How long a webhook has been failing on this node: the pause rule."""

    def __init__(self) -> None:
        self.since: float | None = None  # when the first failure of the current streak happened

    def failed(self, now: float) -> None:
        """An attempt failed at ``now``."""
        if self.since is None:
            self.since = now

    def succeeded(self) -> None:
        """An attempt succeeded: the streak is over."""
        self.since = None

    def should_pause(self, now: float, max_failure_s: float) -> bool:
        """Whether the webhook has been failing for longer than ``max_failure_s`` seconds."""
        return self.since is not None and now - self.since > max_failure_s


def _load(value: bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidRecord(f"not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise InvalidRecord("not a JSON object")
    return obj


def pause_record(webhook_id: str, pause: Pause | None) -> tuple[bytes, bytes | None]:
    """The record pausing (``pause``) or resuming (None) a webhook."""
    return f"{PAUSE}{webhook_id}".encode(), None if pause is None else orjson.dumps(asdict(pause))


def report_record(webhook_id: str, report: Report | None, node: str) -> tuple[bytes, bytes | None]:
    """The record of ``node``'s delivery report of a webhook (None: forget it)."""
    return f"{REPORT}{webhook_id}/{node}".encode(), None if report is None else orjson.dumps(asdict(report))


def orphaned(hook: Webhook, holder_id: str | None) -> str | None:
    """Why ``hook`` may no longer be delivered, given the id of the namespace now holding its namespace's
    name (None: nobody): its namespace was deleted (and maybe registered again by someone else)."""
    if hook.namespace is None or holder_id == hook.namespace_id:
        return None
    return f"namespace {hook.namespace!r}, which registered it, was deleted; deliveries stopped"


class Registry:
    """The webhooks, their pauses and the nodes' delivery reports, folded from the webhooks topic."""

    def __init__(self) -> None:
        self.hooks: dict[str, Webhook] = {}
        self.pauses: dict[str, Pause] = {}
        self.reports: dict[str, dict[str, Report]] = {}

    def apply(self, key: bytes, value: bytes | None) -> str:
        """Fold one record; returns the id of the webhook it is about (:class:`InvalidRecord` if unreadable)."""
        text = key.decode("utf-8", "replace")
        try:
            if text.startswith(HOOK):
                webhook_id = text[len(HOOK) :]
                if value is None:
                    self.hooks.pop(webhook_id, None)
                    self.pauses.pop(webhook_id, None)
                    self.reports.pop(webhook_id, None)
                else:
                    self.hooks[webhook_id] = Webhook(**_load(value))
                return webhook_id
            if text.startswith(PAUSE):
                webhook_id = text[len(PAUSE) :]
                if value is None:
                    self.pauses.pop(webhook_id, None)
                else:
                    self.pauses[webhook_id] = Pause(**_load(value))
                return webhook_id
            if text.startswith(REPORT):
                webhook_id, _, node = text[len(REPORT) :].partition("/")
                if value is None:
                    self.reports.get(webhook_id, {}).pop(node, None)
                else:
                    obj = _load(value)
                    obj["attempts"] = [Attempt(**a) for a in obj.get("attempts", [])]
                    self.reports.setdefault(webhook_id, {})[node] = Report(**obj)
                return webhook_id
        except TypeError as exc:
            raise InvalidRecord(f"record {text!r} has unexpected fields: {exc}") from exc
        raise InvalidRecord(f"unknown record key {text!r}")

    def get(self, webhook_id: str) -> Webhook | None:
        """A webhook by id."""
        return self.hooks.get(webhook_id)

    def all(self) -> list[Webhook]:
        """Every webhook, oldest first."""
        return sorted(self.hooks.values(), key=lambda hook: (hook.created_at, hook.webhook_id))

    def status(self, webhook_id: str) -> str:
        """``paused``, ``failing`` (a node's deliveries fail, not for long enough to pause) or ``active``."""
        if webhook_id in self.pauses:
            return PAUSED
        if any(report.failing_since is not None for report in self.reports.get(webhook_id, {}).values()):
            return FAILING
        return ACTIVE

    def attempts(self, webhook_id: str) -> list[tuple[str, Attempt]]:
        """Every node's recent attempts, newest first, with the node that made each."""
        found = [
            (node, attempt) for node, report in self.reports.get(webhook_id, {}).items() for attempt in report.attempts
        ]
        return sorted(found, key=lambda pair: pair[1].at, reverse=True)
