"""How far each partition's table is relayed, and how often rewritten, shared by a node's processes
through memory.

A small memory-mapped file of 8-byte slots, per partition:

- the epoch, bumped by the reducer process when it rewrites state without moving that offset (a
  replay's switch): readers then catch up whatever offsets say;
- one *relayed* slot per HTTP process: the newest applied offset that process may have shown a
  client, through its change relay (to its WebSocket subscribers and ``?wait=true`` waiters) or
  through its reads (its secondary's offset after a catch-up). Each process writes only its own slot.

A read in an HTTP process must reflect at least the newest offset any process of the node may
have shown when the read arrived (the largest relayed slot): whatever a client was told, by a
``?wait=true`` answer, a WebSocket message or a read from any process, a read sent afterwards sees
it, never an older state (:mod:`agents.table.replica`). Aligned 8-byte stores and loads are atomic on the platforms Flux
runs on, and no slot has two writers, so no lock is needed.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

SLOT_BYTES = 8
MAX_READERS = 64  # relayed slots per partition: FLUX_HTTP_PROCESSES is at most 64


class AppliedBoard:
    """The shared slots (see the module docstring): epochs (0 until the first rewrite) and relayed
    offsets (-1: nothing relayed yet)."""

    def __init__(self, path: Path, partitions: int, create: bool) -> None:
        self.path = path
        size = (1 + MAX_READERS) * partitions * SLOT_BYTES
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as out:
                out.write((0).to_bytes(SLOT_BYTES, "little", signed=True) * partitions)
                out.write((-1).to_bytes(SLOT_BYTES, "little", signed=True) * partitions * MAX_READERS)
        fd = os.open(path, os.O_RDWR)
        try:
            self._map = mmap.mmap(fd, size, access=mmap.ACCESS_WRITE)
        finally:
            os.close(fd)
        self._slots = memoryview(self._map).cast("q")
        self._relayed = partitions  # the first relayed slot

    @classmethod
    def create(cls, path: Path, partitions: int) -> AppliedBoard:
        """A new board, for the reducer process to write."""
        return cls(path, partitions, create=True)

    @classmethod
    def open(cls, path: Path, partitions: int) -> AppliedBoard:
        """The reducer's board, for an HTTP process (which writes only its own relayed slots)."""
        return cls(path, partitions, create=False)

    def bump(self, partition: int) -> None:
        """Record that ``partition``'s state was rewritten without its offset moving."""
        self._slots[partition] += 1

    def epoch(self, partition: int) -> int:
        """How many rewrites ``partition`` has had."""
        return int(self._slots[partition])

    def relayed(self, partition: int, reader: int, applied: int) -> None:
        """Record that HTTP process ``reader`` may show ``partition`` up to ``applied`` (relayed or read)."""
        slot = self._relayed + partition * MAX_READERS + reader
        if applied > self._slots[slot]:
            self._slots[slot] = applied

    def target(self, partition: int) -> int:
        """The newest offset of ``partition`` any HTTP process may have shown (-1: none)."""
        start = self._relayed + partition * MAX_READERS
        return max(self._slots[start : start + MAX_READERS])

    def close(self) -> None:
        """Unmap the file."""
        self._slots.release()
        self._map.close()
