"""Namespaces and their tokens: name rules, token minting and checking, and the registry fold.

The registry is event-sourced: every change is one record of the compacted namespaces topic,
keyed by namespace name, and every Flux process folds the topic into a :class:`Registry`. This
module is pure (no I/O) so that the rules can be tested apart from Kafka; the topic plumbing is
:mod:`flux.kafka.namespace_log`.

Tokens are 256 random bits. Only their SHA-256 is stored: a fast hash is enough because a
random 256-bit secret cannot be guessed from its hash, unlike a password. A presented token is
hashed, looked up by its hash and then compared with :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

import orjson

from flux.model.reducer import rfc3339_ms

NAME_RULE = "3-32 characters of a-z, 0-9, '_' and '-'"
_NAME = re.compile(r"[a-z0-9_-]{3,32}")
TOKEN_PREFIX = "flux_"
TOKEN_BYTES = 32  # 256 bits


class InvalidName(ValueError):
    """A namespace name that breaks :data:`NAME_RULE`."""


class InvalidRecord(ValueError):  # a ValueError: the log skips it
    """A namespaces-topic record that cannot be read."""


def check_name(name: Any) -> str:
    """``name`` if it follows :data:`NAME_RULE`, else :class:`InvalidName` saying why."""
    if not isinstance(name, str):
        raise InvalidName(f"name must be a string of {NAME_RULE}")
    if not _NAME.fullmatch(name):
        raise InvalidName(f"invalid namespace name {name!r}: use {NAME_RULE}")
    return name


def new_namespace_id() -> str:
    """A fresh public namespace id, e.g. ``ns_a3f9b12c``."""
    return f"ns_{secrets.token_hex(4)}"


def new_token() -> str:
    """A fresh bearer token: :data:`TOKEN_PREFIX` and 256 random bits, URL-safe."""
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    """The stored form of a token (hex SHA-256)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def namespace_of(entity_id: str) -> str | None:
    """The namespace part of ``namespace/entity`` ids; None when there is no '/'."""
    head, slash, _ = entity_id.partition("/")
    return head if slash and head else None


@dataclass(frozen=True)
class Namespace:
    """A registered namespace: public id, name, creation time (Unix ms) and its token's hash."""

    namespace_id: str
    name: str
    created_at: int
    token_hash: str

    def public(self) -> dict[str, Any]:
        """The fields anybody may see (never the token hash)."""
        return {"namespaceId": self.namespace_id, "name": self.name, "createdAt": rfc3339_ms(self.created_at)}


def encode_record(namespace: Namespace) -> tuple[bytes, bytes]:
    """The (key, value) of the record that registers ``namespace`` or replaces its token."""
    value = {
        "namespaceId": namespace.namespace_id,
        "name": namespace.name,
        "createdAt": namespace.created_at,
        "tokenHash": namespace.token_hash,
    }
    return namespace.name.encode(), orjson.dumps(value)


def decode_record(value: bytes) -> Namespace:
    """The namespace a record value describes; raises :class:`InvalidRecord`."""
    try:
        raw = orjson.loads(value)
        namespace = Namespace(
            namespace_id=str(raw["namespaceId"]),
            name=check_name(raw["name"]),
            created_at=int(raw["createdAt"]),
            token_hash=str(raw["tokenHash"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InvalidRecord(f"unreadable namespaces record: {exc}") from exc
    return namespace


class Registry:
    """The namespaces as the topic says, folded record by record in log order.

    A name belongs to the first namespace registered under it until that one is deleted: a later
    record under the same name with another namespace id (two processes racing for the name) is
    ignored, and the process that wrote it learns it lost (:meth:`holder`).
    """

    def __init__(self) -> None:
        self._by_name: dict[str, Namespace] = {}
        self._by_hash: dict[str, Namespace] = {}

    def apply(self, key: bytes, value: bytes | None) -> None:
        """Fold one record: a namespace (registration or new token), or None (deletion)."""
        name = key.decode("utf-8", "replace")
        current = self._by_name.get(name)
        if value is None:
            if current is not None:
                del self._by_name[name]
                self._by_hash.pop(current.token_hash, None)
            return
        namespace = decode_record(value)
        if namespace.name != name:
            raise InvalidRecord(f"namespaces record key {name!r} does not match its name {namespace.name!r}")
        if current is not None:
            if current.namespace_id != namespace.namespace_id:
                return  # the name is taken: first registration wins
            self._by_hash.pop(current.token_hash, None)
        self._by_name[name] = namespace
        self._by_hash[namespace.token_hash] = namespace

    def holder(self, name: str) -> Namespace | None:
        """The namespace that holds ``name``, if any."""
        return self._by_name.get(name)

    def all(self) -> list[Namespace]:
        """Every namespace, by name."""
        return [self._by_name[name] for name in sorted(self._by_name)]

    def authenticate(self, token: str) -> Namespace | None:
        """The namespace whose token this is, or None; compared in constant time."""
        digest = hash_token(token)
        found = self._by_hash.get(digest)
        if found is None or not hmac.compare_digest(found.token_hash, digest):
            return None
        return found
