"""A node that cannot go on leaves: its process ends in a bounded time, and it stops claiming readiness.

The process-level checks run a small Python program in a subprocess, as the node would: a
lingering non-daemon thread (what Faust's consumer thread is) must not keep it alive.
"""

from __future__ import annotations

import subprocess
import sys
import time
from types import SimpleNamespace
from typing import Any

from agents.table.store import EntityStore


def _run(program: str, timeout: float = 30.0) -> tuple[int, float, str]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=timeout)
    return done.returncode, time.monotonic() - started, done.stderr


def test_a_thread_that_outlives_the_worker_does_not_keep_the_process_alive() -> None:
    code, took, stderr = _run(
        "import logging, threading, time\nlogging.basicConfig()\n"
        "from api import server\n"
        "server.LINGER_S = 0.5\n"
        "threading.Thread(target=time.sleep, args=(60,), name='consumer-like').start()\n"
        "raise SystemExit(server._leave_process(1))\n"
    )
    assert code == 1
    assert took < 15, f"the process took {took:.1f} s to leave"
    assert "consumer-like" in stderr


def test_threads_that_end_in_time_let_the_process_exit_normally() -> None:
    code, _, stderr = _run(
        "import logging, threading, time\nlogging.basicConfig()\n"
        "from api import server\n"
        "threading.Thread(target=time.sleep, args=(0.2,)).start()\n"
        "raise SystemExit(server._leave_process(0))\n"
    )
    assert code == 0, stderr
    assert "outlived" not in stderr


def test_a_stop_that_hangs_after_a_crash_is_cut_short_with_code_1() -> None:
    code, took, stderr = _run(
        "import logging, time\nlogging.basicConfig()\n"
        "from api import server\nserver._exit_if_stuck(0.3, 1, 'crash')\ntime.sleep(60)\n"
    )
    assert code == 1
    assert took < 15
    assert "did not stop within" in stderr


def _store(app: Any) -> EntityStore:
    table = SimpleNamespace(
        changelog_topic=SimpleNamespace(get_topic_name=lambda: "t-entities-changelog"),
        data=SimpleNamespace(_db_for_partition=lambda partition: {}),  # empty stores
    )

    async def committed(partitions: list[int]) -> dict[int, int]:
        return dict.fromkeys(partitions, 0)

    return EntityStore(app, table, 4, read_committed=committed)


def _app(**state: Any) -> Any:
    actives = [SimpleNamespace(topic="t-entities-changelog", partition=p) for p in (0, 2)]
    app = SimpleNamespace(
        tables=SimpleNamespace(actives_ready=True),
        rebalancing=False,
        crash_reason=None,
        should_stop=False,
        assignor=SimpleNamespace(assigned_actives=lambda: actives),
    )
    for name, value in state.items():
        setattr(app, name, value)
    return app


async def test_a_folding_worker_is_ready_with_its_partitions_once_they_caught_up_with_the_log() -> None:
    store = _store(_app())
    for partition in (0, 2):
        store.catch_up.observe(partition, position=0, end=0, lag_records=0)
    readiness = await store.readiness()
    assert readiness.ready and readiness.partitions == [0, 2]


async def test_a_worker_still_folding_what_its_log_held_at_start_is_not_ready_and_says_how_far_behind() -> None:
    store = _store(_app())
    store.catch_up.observe(0, position=0, end=40, lag_records=40)  # partition 2's log end is not read yet
    readiness = await store.readiness()
    assert not readiness.ready and readiness.recovered and readiness.partitions == [0, 2]
    assert readiness.catching_up == {0: 40}
    assert "40 records left to fold in partitions [0]" in readiness.detail
    assert "the log end of partitions [2] not read yet" in readiness.detail


async def test_a_crashed_worker_is_not_ready_and_serves_no_partition_at_once() -> None:
    readiness = await _store(_app(crash_reason=RuntimeError("fenced"))).readiness()
    assert not readiness.ready
    assert readiness.partitions == []
    assert "crashed" in readiness.detail and "fenced" in readiness.detail


async def test_a_stopping_worker_is_not_ready() -> None:
    readiness = await _store(_app(should_stop=True)).readiness()
    assert not readiness.ready
    assert readiness.detail == "the worker is stopping"
