"""Catching up with the log: a node is ready once each served partition folded up to its log end as of assignment."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agents.table.catch_up import CatchUp


def test_a_partition_whose_log_end_was_not_read_yet_is_behind_by_an_unknown_count() -> None:
    catch_up = CatchUp()
    assert catch_up.behind({0: 10}) == {0: None}
    assert catch_up.unread([0, 1]) == [0, 1]


def test_a_partition_is_behind_until_its_position_reaches_the_end_first_read() -> None:
    catch_up = CatchUp()
    catch_up.observe(0, position=4, end=10, lag_records=6)
    catch_up.observe(0, position=6, end=50, lag_records=44)  # records arriving later do not move the target
    assert catch_up.behind({0: 6}) == {0: 4}
    assert catch_up.behind({0: 10}) == {}
    assert catch_up.behind({0: 3}) == {}, "once caught up, later lag is lag, not recovery"


def test_only_transaction_markers_before_the_end_count_as_caught_up() -> None:
    catch_up = CatchUp()
    catch_up.observe(0, position=9, end=10, lag_records=0)  # offset 9 is a commit marker
    assert catch_up.behind({0: 9}) == {}


def test_a_rebalance_forgets_the_partitions_no_longer_served() -> None:
    catch_up = CatchUp()
    catch_up.observe(0, position=10, end=10, lag_records=0)
    catch_up.observe(1, position=10, end=10, lag_records=0)
    catch_up.keep([1])
    assert catch_up.behind({0: 10, 1: 10}) == {0: None}, "partition 0 assigned again: its new log end is needed"


@given(st.lists(st.tuples(st.integers(0, 100), st.integers(0, 100)), min_size=1, max_size=20))
def test_a_partition_is_caught_up_exactly_when_it_reached_the_first_end_read(rounds: list[tuple[int, int]]) -> None:
    catch_up = CatchUp()
    target = rounds[0][1]
    reached = False
    for position, end in rounds:
        catch_up.observe(0, position, max(end, target), max(end, target) - position)
        reached = reached or position >= target
        assert (catch_up.behind({0: position}) == {}) == reached


def test_a_transaction_left_open_by_a_crash_keeps_the_partition_behind_until_the_log_passes_the_target() -> None:
    catch_up = CatchUp()
    catch_up.aim(0, 42)  # the high watermark: committed records lie behind a transaction still open at 19
    catch_up.observe(0, position=19, end=19, lag_records=0)  # the last stable offset is stuck at 19
    assert catch_up.behind({0: 19}) == {0: 23}, "nothing to fold *yet* is not caught up"
    catch_up.observe(0, position=19, end=42, lag_records=23)  # aborted: the records after it show
    assert catch_up.behind({0: 19}) == {0: 23}
    catch_up.observe(0, position=42, end=42, lag_records=0)
    assert catch_up.behind({0: 42}) == {}


def test_aborted_records_up_to_the_target_count_as_caught_up_once_the_log_passed_them() -> None:
    catch_up = CatchUp()
    catch_up.aim(0, 30)
    catch_up.aim(0, 99)  # a target is read once per assignment
    catch_up.observe(0, position=20, end=31, lag_records=0)  # 20..29 were aborted, 30 a marker
    assert catch_up.behind({0: 20}) == {}
