"""How far a partition store's states reach: from the changelogged totals, not the local-only key."""

from __future__ import annotations

from pathlib import Path

import orjson
import rocksdict

from agents.table.store import HISTORY_OFFSET_KEY, STATS_KEY, stored_offset


def _store(tmp_path: Path, stats: list | None, local: int | None) -> rocksdict.Rdict:
    db = rocksdict.Rdict(str(tmp_path / "p.db"), options=rocksdict.Options(raw_mode=True))
    if stats is not None:
        db.put(STATS_KEY, orjson.dumps(stats))
    if local is not None:
        db.put(HISTORY_OFFSET_KEY, str(local).encode())
    return db


def test_the_changelogged_totals_say_how_far_the_states_reach_even_when_the_local_key_says_more(
    tmp_path: Path,
) -> None:
    # A crash cut a batch's changelog write short: recovery brought back older states and totals,
    # while the local key kept the lost batch's offset. Reading on from there would skip records.
    db = _store(tmp_path, [560, 8, True, 10], local=14)
    assert stored_offset(db) == 10
    db.close()


def test_a_store_whose_totals_do_not_carry_the_offset_falls_back_on_the_local_key(tmp_path: Path) -> None:
    db = _store(tmp_path, [560, 8, True], local=14)
    assert stored_offset(db) == 14
    db.close()


def test_a_store_without_totals_or_key_reaches_nothing(tmp_path: Path) -> None:
    db = _store(tmp_path, None, None)
    assert stored_offset(db) == -1
    db.close()
