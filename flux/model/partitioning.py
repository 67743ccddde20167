"""Which partition an entity lives on: Kafka's default partitioner (murmur2 of the key bytes)."""

from __future__ import annotations

from functools import lru_cache

from aiokafka.partitioner import murmur2


@lru_cache(maxsize=262_144)
def partition_for(entity_id: str, partitions: int) -> int:
    """The partition of ``entity_id`` among ``partitions``, as Java's and aiokafka's producers pick it."""
    hashed: int = murmur2(entity_id.encode())  # aiokafka's partitioner is untyped
    return (hashed & 0x7FFFFFFF) % partitions
