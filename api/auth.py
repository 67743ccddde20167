"""Who may do what: bearer tokens, namespace scopes and per-namespace rate limits.

With ``FLUX_AUTH_ENABLED=false`` (the default) everybody may do everything. With it on, entity
ids are ``namespace/entity``; a write needs the token of the entity's namespace (or the admin
token, ``FLUX_ADMIN_TOKEN``): no token is 401, another namespace's token 403. Reads are open
unless ``FLUX_PUBLIC_READS=false``, which scopes them to the token's namespace too. Tenants'
writes are rate limited per namespace and per process (see docs/security.md for why per process).
Another node reading on a caller's behalf is trusted as :mod:`api.cluster.node_calls` says.
"""

from __future__ import annotations

import hmac
import math
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from api.cluster.node_calls import SECRET_HEADER, NodeCalls
from api.errors import ApiError
from flux.config import Settings
from flux.kafka.namespace_log import NamespaceLog
from flux.model.namespaces import Namespace, namespace_of
from flux.rate_limit import RateLimiter

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="flux"'}


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the admin, a namespace's holder, or nobody known (``anonymous``)."""

    admin: bool = False
    namespace: Namespace | None = None

    @property
    def anonymous(self) -> bool:
        """No valid token came with the request."""
        return not self.admin and self.namespace is None

    def scope(self) -> str:
        """The id prefix this caller is limited to ('' for no limit)."""
        return "" if self.namespace is None else f"{self.namespace.name}/"


OPEN = Caller(admin=True)  # what everybody is when auth is disabled


def bearer_token(connection: HTTPConnection) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or of ``?token=`` on a WebSocket URL."""
    header = connection.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "Authorization must be 'Bearer <token>'", headers=CHALLENGE)
        return token.strip()
    if connection.scope.get("type") == "websocket":
        return connection.query_params.get("token") or None
    return None


class Guard:
    """Checks callers against the namespaces registry and charges their rate limits."""

    def __init__(self, settings: Settings, namespaces: NamespaceLog, calls: NodeCalls) -> None:
        self.enabled = settings.auth_enabled
        self.public_reads = settings.public_reads
        self._admin_token = settings.admin_token or ""
        self._namespaces = namespaces
        self._calls = calls
        self._limiter = RateLimiter(settings.rate_limit_per_minute)

    def node_call(self, connection: HTTPConnection) -> bool:
        """Whether ``connection`` is a call of another node (it shows FLUX_CLUSTER_SECRET); 403 when it
        shows another secret, so that nodes configured apart say so."""
        shown = self._calls.secret_shown(connection)
        if shown is False:
            raise ApiError(
                403, f"{SECRET_HEADER} does not match FLUX_CLUSTER_SECRET here: every node of an app needs the same"
            )
        return shown is True

    def identify(self, connection: HTTPConnection) -> Caller:
        """The caller; 401 for a token that is not valid (a missing token is ``anonymous``)."""
        if not self.enabled:
            return OPEN
        token = bearer_token(connection)
        if token is None:
            return Caller()
        if self._admin_token and hmac.compare_digest(token.encode(), self._admin_token.encode()):
            return Caller(admin=True)
        namespace = self._namespaces.registry.authenticate(token)
        if namespace is None:
            raise ApiError(401, "invalid token (unknown, rotated or of a deleted namespace)", headers=CHALLENGE)
        return Caller(namespace=namespace)

    def revoked(self, caller: Caller, token: str | None) -> str | None:
        """Why the namespace ``caller``, identified earlier by ``token``, is no longer who it was (its
        namespace deleted, its token replaced), or None while the token still stands."""
        if caller.namespace is None:
            return None  # the admin, or nobody in particular: nothing to void
        name = caller.namespace.name
        registry = self._namespaces.registry
        current = None if token is None else registry.authenticate(token)
        if current is not None and current.name == name:
            return None
        if registry.holder(name) is None:
            return f"namespace {name!r} was deleted: its token no longer works"
        return f"the token of namespace {name!r} was replaced (a rotation, or a purge under way)"

    def writer(self, connection: HTTPConnection) -> Caller:
        """The caller of a write; 401 without a valid token."""
        caller = self.identify(connection)
        if caller.anonymous:
            raise ApiError(401, "writes need 'Authorization: Bearer <namespace token>'", headers=CHALLENGE)
        return caller

    def admin(self, connection: HTTPConnection) -> Caller:
        """The caller of an admin operation; 401 without a token, 403 with a namespace's token."""
        caller = self.writer(connection)
        if not caller.admin:
            raise ApiError(403, "this needs the admin token (FLUX_ADMIN_TOKEN), not a namespace token")
        return caller

    def reader(self, connection: HTTPConnection) -> Caller:
        """The caller of a read; with private reads, 401 without a valid token."""
        if self.public_reads or not self.enabled:
            return OPEN
        if self.node_call(connection) and self._calls.asserts_admin(connection):
            return Caller(admin=True)  # another node reads on the admin's behalf (api.cluster.node_calls)
        caller = self.identify(connection)
        if caller.anonymous:
            raise ApiError(
                401, "reads need 'Authorization: Bearer <token>' (FLUX_PUBLIC_READS=false)", headers=CHALLENGE
            )
        return caller

    def entity_error(self, caller: Caller, entity_id: str, verb: str = "write") -> ApiError | None:
        """Why ``caller`` may not ``verb`` ``entity_id`` (a 403), or None when it may."""
        if not self.enabled or caller.admin:
            return None
        namespace = namespace_of(entity_id)
        if namespace is None:
            return ApiError(
                403,
                f"entity id {entity_id!r} has no namespace: with FLUX_AUTH_ENABLED=true ids are "
                "'namespace/entity-id' and a token covers its own namespace only",
            )
        if caller.namespace is not None and caller.namespace.name == namespace:
            return None
        held = caller.namespace.name if caller.namespace is not None else "none"
        return ApiError(403, f"the token of namespace {held!r} cannot {verb} {entity_id!r} (namespace {namespace!r})")

    def check_entity(self, caller: Caller, entity_id: str, verb: str = "write") -> None:
        """Raise :meth:`entity_error` if there is one."""
        error = self.entity_error(caller, entity_id, verb)
        if error is not None:
            raise error

    def check_prefix(self, caller: Caller, prefix: str, verb: str) -> None:
        """403 unless every id starting with ``prefix`` lies in ``caller``'s namespace."""
        scope = caller.scope()
        if self.enabled and not caller.admin and not prefix.startswith(scope):
            raise ApiError(403, f"the token of namespace {scope[:-1]!r} can {verb} ids starting with {scope!r} only")

    def charge(self, caller: Caller, events: int) -> None:
        """Take ``events`` from the caller's namespace allowance; 429 (or 413 if it never fits)."""
        if caller.namespace is None or events <= 0:
            return  # the admin and disabled auth are not limited
        wait = self._limiter.take(caller.namespace.name, events)
        if wait == 0:
            return
        limit = self._limiter.per_minute
        if math.isinf(wait):
            raise ApiError(
                413, f"{events} events in one request exceed the namespace's limit of {limit} per minute; split it"
            )
        seconds = max(1, math.ceil(wait))
        raise ApiError(
            429,
            f"rate limit: namespace {caller.namespace.name!r} may write {limit} events per minute "
            f"(FLUX_RATE_LIMIT_PER_MINUTE); retry in {seconds} s",
            {"retryAfterSeconds": seconds},
            headers={"Retry-After": str(seconds)},
        )
