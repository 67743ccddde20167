"""How far the reducer wrote each partition, shared with the node's HTTP processes through memory.

The reducer process writes, after every batch it stores, the partition's applied offset (the next
events-topic offset to fold) into one 8-byte slot per partition of a small memory-mapped file, and
bumps a second slot, the partition's epoch, when it rewrites state without moving that offset (a
replay's switch): readers then catch up whatever offsets say.
The HTTP processes read the slots, without a system call, to know what their view of the table
must reach before a read may answer: a read sees every event folded before it arrived, whichever
process folded or published it (see :mod:`agents.table.replica`). Aligned 8-byte stores and loads
are atomic on the platforms Flux runs on, so no lock is needed.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

SLOT_BYTES = 8


class AppliedBoard:
    """Two int64 slots per partition in a shared file: the applied offset (-1: nothing written yet)
    and the epoch (0 until the first rewrite)."""

    def __init__(self, path: Path, partitions: int, create: bool) -> None:
        self.path = path
        self._partitions = partitions
        size = 2 * partitions * SLOT_BYTES
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as out:
                out.write((-1).to_bytes(SLOT_BYTES, "little", signed=True) * partitions)
                out.write((0).to_bytes(SLOT_BYTES, "little", signed=True) * partitions)
        fd = os.open(path, os.O_RDWR if create else os.O_RDONLY)
        try:
            access = mmap.ACCESS_WRITE if create else mmap.ACCESS_READ
            self._map = mmap.mmap(fd, size, access=access)
        finally:
            os.close(fd)
        self._slots = memoryview(self._map).cast("q")

    @classmethod
    def create(cls, path: Path, partitions: int) -> AppliedBoard:
        """A new board (every slot -1), for the reducer process to write."""
        return cls(path, partitions, create=True)

    @classmethod
    def open(cls, path: Path, partitions: int) -> AppliedBoard:
        """The reducer's board, read-only, for an HTTP process."""
        return cls(path, partitions, create=False)

    def set(self, partition: int, applied: int) -> None:
        """Record that ``partition`` is written up to ``applied`` (never moves back within a process)."""
        if applied > self._slots[partition]:
            self._slots[partition] = applied

    def reset(self, partition: int, applied: int) -> None:
        """Set ``partition``'s slot to ``applied`` whatever it held (a partition assigned anew)."""
        self._slots[partition] = applied

    def get(self, partition: int) -> int:
        """The offset ``partition`` is written up to (-1: unknown)."""
        return int(self._slots[partition])

    def bump(self, partition: int) -> None:
        """Record that ``partition``'s state was rewritten without its offset moving."""
        self._slots[self._partitions + partition] += 1

    def epoch(self, partition: int) -> int:
        """How many rewrites ``partition`` has had."""
        return int(self._slots[self._partitions + partition])

    def close(self) -> None:
        """Unmap the file."""
        self._slots.release()
        self._map.close()
