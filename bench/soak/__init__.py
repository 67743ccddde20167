"""Issue 18's soak (``make soak``, not in CI): a cluster under a mixed load and random ``kill -9`` for a while.

- :mod:`~bench.soak.cluster`: local brokers and ``flux serve`` nodes to kill and start again, and their memory;
- :mod:`~bench.soak.load`: writers owning disjoint entities, each request sent again until acknowledged;
- :mod:`~bench.soak.ledger`: every acknowledged event (``acked.ndjson``) and what was noted;
- :mod:`~bench.soak.watch`: a reader noting entities that disappear or go back, WebSocket subscribers;
- :mod:`~bench.soak.chaos`: the faults, the node supervisor and the replays;
- :mod:`~bench.soak.check`: the end: the log holds every acknowledged event, every node serves their fold;
- :mod:`~bench.soak.report`: the figures; :mod:`~bench.soak.cli`: the command.
"""
