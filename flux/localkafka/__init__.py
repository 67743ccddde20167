"""A local Apache Kafka broker (KRaft, no ZooKeeper, no Docker) for development and tests.

Apache Kafka's own jars are resolved once from Maven Central with ``mvn`` into a cache directory,
then a combined broker+controller JVM is started in the background on ``127.0.0.1``::

    kafka = LocalKafka(Path(".flux/kafka"), port=9092, controller_port=9093)
    bootstrap = kafka.start()      # "127.0.0.1:9092", once the broker answers metadata requests
    kafka.stop()                   # SIGTERM, clean shutdown (SIGKILL after 30 s)

The data directory keeps the KRaft log across restarts (it is formatted only once), the generated
``server.properties`` / ``log4j2.properties``, the broker's console log ``kafka.log`` and a pid file.

Command line (also ``flux kafka ...``)::

    python -m flux.localkafka start|stop|status|kill [--brokers N] [--data-dir DIR] [--port N] [--controller-port N]

``--brokers 3`` starts a :class:`LocalKafkaCluster` instead: three such nodes, each a voter of one
static KRaft quorum, on ports 9092/9093, 9094/9095, 9096/9097 with data under ``.flux/kafka-cluster``;
topics get three replicas and ``acks=all`` writes need two. ``stop``, ``kill`` and ``status`` without
``--data-dir`` act on both the single broker and the cluster.

Environment: ``FLUX_KAFKA_HOME``, ``FLUX_KAFKA_DATA_DIR``, ``FLUX_KAFKA_PORT``, ``FLUX_KAFKA_CONTROLLER_PORT``,
``FLUX_KAFKA_HEAP_OPTS``, ``FLUX_KAFKA_CLUSTER_DIR``, ``JAVA_HOME`` / ``JAVA`` and ``MVN``: see
:class:`~flux.localkafka.settings.LocalKafkaSettings` (and ``docs/configuration.md``).

The parts: :mod:`~flux.localkafka.settings` (the environment), :mod:`~flux.localkafka.jars` (Maven),
:mod:`~flux.localkafka.listeners` (secured listeners), :mod:`~flux.localkafka.probe` (ports and the
readiness probe), :mod:`~flux.localkafka.process` (one node), :mod:`~flux.localkafka.cluster` (several)
and :mod:`~flux.localkafka.cli` (the command line).

Several nodes can share one cluster: give each its own ``node_id``, ports and data dir, the same
``cluster_id`` and the same ``quorum_voters`` (see :func:`quorum_voters`); :class:`LocalKafkaCluster`
does exactly that.

``secure=SecureListeners(...)`` adds SASL_PLAINTEXT, SASL_SSL and SSL listeners with their own
users and certificates next to the PLAINTEXT one (tests of secured clusters); without it the broker
is exactly as above.
"""

from __future__ import annotations

from flux.localkafka.base import DEFAULT_HOST, KAFKA_VERSION, LocalKafkaError, Progress
from flux.localkafka.cli import Launcher, add_arguments, main, open_launcher, run
from flux.localkafka.cluster import (
    DEFAULT_BROKERS,
    LocalKafkaCluster,
    cluster_ports,
    cluster_replication,
    read_cluster_layout,
    write_cluster_layout,
)
from flux.localkafka.jars import ensure_jars
from flux.localkafka.listeners import SecureListeners
from flux.localkafka.probe import broker_answers, free_port, probe_broker
from flux.localkafka.process import (
    DEFAULT_START_TIMEOUT,
    DEFAULT_STOP_TIMEOUT,
    JVM_OPTS,
    QUICK_START_JVM_OPTS,
    LocalKafka,
    new_cluster_id,
    quorum_voters,
)
from flux.localkafka.settings import (
    DEFAULT_CLUSTER_DIR,
    DEFAULT_CONTROLLER_PORT,
    DEFAULT_DATA_DIR,
    DEFAULT_HEAP_OPTS,
    DEFAULT_PORT,
    LocalKafkaSettings,
    default_cluster_dir,
    default_controller_port,
    default_data_dir,
    default_kafka_home,
    default_port,
    launcher_settings,
)

__all__ = [
    "DEFAULT_BROKERS",
    "DEFAULT_CLUSTER_DIR",
    "DEFAULT_CONTROLLER_PORT",
    "DEFAULT_DATA_DIR",
    "DEFAULT_HEAP_OPTS",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEFAULT_START_TIMEOUT",
    "DEFAULT_STOP_TIMEOUT",
    "JVM_OPTS",
    "KAFKA_VERSION",
    "QUICK_START_JVM_OPTS",
    "Launcher",
    "LocalKafka",
    "LocalKafkaCluster",
    "LocalKafkaError",
    "LocalKafkaSettings",
    "Progress",
    "SecureListeners",
    "add_arguments",
    "broker_answers",
    "cluster_ports",
    "cluster_replication",
    "default_cluster_dir",
    "default_controller_port",
    "default_data_dir",
    "default_kafka_home",
    "default_port",
    "ensure_jars",
    "free_port",
    "launcher_settings",
    "main",
    "new_cluster_id",
    "open_launcher",
    "probe_broker",
    "quorum_voters",
    "read_cluster_layout",
    "run",
    "write_cluster_layout",
]
