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

Environment: ``FLUX_KAFKA_HOME`` (jar cache, default ``~/.cache/flux/kafka-4.1.1``),
``FLUX_KAFKA_DATA_DIR`` (default ``.flux/kafka``), ``FLUX_KAFKA_PORT`` (default 9092),
``FLUX_KAFKA_CONTROLLER_PORT`` (default 9093), ``FLUX_KAFKA_HEAP_OPTS`` (default ``-Xms256m -Xmx1g``),
``FLUX_KAFKA_CLUSTER_DIR`` (a cluster's data, default ``.flux/kafka-cluster``),
``JAVA_HOME`` / ``JAVA`` (the ``java`` to run), ``MVN`` (the ``mvn`` to run).

Several nodes can share one cluster: give each its own ``node_id``, ports and data dir, the same
``cluster_id`` and the same ``quorum_voters`` (see :func:`quorum_voters`); :class:`LocalKafkaCluster`
does exactly that.

``secure=SecureListeners(...)`` adds SASL_PLAINTEXT, SASL_SSL and SSL listeners with their own
users and certificates next to the PLAINTEXT one (tests of secured clusters); without it the broker
is exactly as above.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import contextlib
import fcntl
import json
import logging
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
LOG4J_VERSION = "2.24.3"  # the log4j2 that kafka-server 4.1.1 depends on

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9092
DEFAULT_CONTROLLER_PORT = 9093
DEFAULT_DATA_DIR = Path(".flux/kafka")
DEFAULT_CLUSTER_DIR = Path(".flux/kafka-cluster")
DEFAULT_BROKERS = 3
DEFAULT_HEAP_OPTS = "-Xms256m -Xmx1g"
DEFAULT_START_TIMEOUT = 60.0
DEFAULT_STOP_TIMEOUT = 30.0

# (groupId, artifactId, version). kafka_2.13 holds kafka.Kafka and kafka.tools.StorageTool; kafka-tools
# adds the admin command-line tools (TopicCommand, ConsumerGroupCommand...); log4j-slf4j-impl routes
# Kafka's slf4j 1.7 logging into log4j2 (without it slf4j falls back to a no-op logger and says so).
ARTIFACTS: tuple[tuple[str, str, str], ...] = (
    ("org.apache.kafka", f"kafka_{SCALA_VERSION}", KAFKA_VERSION),
    ("org.apache.kafka", "kafka-tools", KAFKA_VERSION),
    ("org.apache.kafka", "kafka-storage", KAFKA_VERSION),
    ("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
    ("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION),
)

JVM_OPTS: tuple[str, ...] = (
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
)
# For brokers that must start fast rather than run fast (test clusters on a busy machine): the C1 compiler
# alone starts a broker in about half the CPU time. Short-lived tools (the storage format) always use it.
QUICK_START_JVM_OPTS: tuple[str, ...] = ("-XX:TieredStopAtLevel=1",)

MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL_CLASS = "kafka.tools.StorageTool"

PID_FILE = "kafka.pid"
LOG_FILE = "kafka.log"
SERVER_PROPERTIES = "server.properties"
LOG4J_PROPERTIES = "log4j2.properties"
LOG_DIRS = "kraft-logs"
STAMP_FILE = ".resolved"
CLUSTER_LAYOUT = "cluster.json"

SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
JAAS_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}
UNSAFE_IN_CREDENTIALS = set('"\\,=[]; \t\n')  # break the JAAS line or the storage tool's --add-scram syntax

T = TypeVar("T")
Progress = Callable[[str], None]


class LocalKafkaError(RuntimeError):
    """The local broker could not be set up, started or stopped."""


@dataclass(frozen=True)
class SecureListeners:
    """Client listeners that authenticate or encrypt, next to the PLAINTEXT one the launcher keeps.

    Each port given opens a listener of that protocol (named like it) on the broker's host; the
    brokers still talk to each other, and the launcher probes them, over PLAINTEXT. ``users`` (name
    -> password) may log in with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512; the SCRAM credentials are
    written when the log dir is formatted, so only a new data dir gets them. The TLS listeners
    present ``keystore``: a PEM file with an unencrypted PKCS#8 private key and its certificate
    chain. With ``truststore`` (PEM CA certificates) the SSL listener requires a client certificate
    signed by one of them.
    """

    users: Mapping[str, str] = field(default_factory=dict)
    sasl_plaintext_port: int | None = None
    sasl_ssl_port: int | None = None
    ssl_port: int | None = None
    keystore: Path | None = None
    truststore: Path | None = None

    def ports(self) -> dict[str, int]:
        """Listener name (= security protocol) -> port, for the listeners asked for."""
        wanted = {"SASL_PLAINTEXT": self.sasl_plaintext_port, "SASL_SSL": self.sasl_ssl_port, "SSL": self.ssl_port}
        return {name: port for name, port in wanted.items() if port is not None}

    def validate(self) -> None:
        """Raise :class:`LocalKafkaError` for listeners that lack users or a keystore."""
        names = self.ports()
        if any(name.startswith("SASL") for name in names) and not self.users:
            raise LocalKafkaError("SASL listeners need at least one user")
        if any(name.endswith("SSL") for name in names) and self.keystore is None:
            raise LocalKafkaError("TLS listeners need a keystore (PEM private key and certificate chain)")
        for name, password in self.users.items():
            if not name or not password or UNSAFE_IN_CREDENTIALS & set(name + password):
                raise LocalKafkaError(
                    f"user {name!r}: names and passwords must be non-empty, without quotes, "
                    "commas, '=', brackets, ';' or spaces"
                )

    def properties(self) -> dict[str, str]:
        """The broker properties of these listeners, beyond ``listeners`` and the protocol map."""
        props: dict[str, str] = {}
        sasl = [name for name in self.ports() if name.startswith("SASL")]
        if sasl:
            props["sasl.enabled.mechanisms"] = ",".join(SASL_MECHANISMS)
        plain_users = "".join(f' user_{name}="{password}"' for name, password in self.users.items())
        for listener in sasl:
            for mechanism in SASL_MECHANISMS:
                users = plain_users if mechanism == "PLAIN" else ""
                key = f"listener.name.{listener.lower()}.{mechanism.lower()}.sasl.jaas.config"
                props[key] = f"{JAAS_MODULES[mechanism]} required{users};"
        if self.keystore is not None:
            props["ssl.keystore.type"] = "PEM"
            props["ssl.keystore.location"] = str(self.keystore)
        if self.truststore is not None:
            props["ssl.truststore.type"] = "PEM"
            props["ssl.truststore.location"] = str(self.truststore)
            props["listener.name.ssl.ssl.client.auth"] = "required"
        return props

    def scram_arguments(self) -> list[str]:
        """The storage tool's ``--add-scram`` arguments: every user, for both SCRAM mechanisms."""
        return [
            argument
            for name, password in self.users.items()
            for mechanism in SCRAM_MECHANISMS
            for argument in ("--add-scram", f"{mechanism}=[name={name},password={password}]")
        ]


def _quiet(_: str) -> None:
    return None


# ---------------------------------------------------------------------------------------------------------------------
# Settings from the environment


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise LocalKafkaError(f"{name}={raw!r} is not an integer") from None


def default_kafka_home() -> Path:
    """The jar cache: ``$FLUX_KAFKA_HOME`` or ``~/.cache/flux/kafka-<version>``."""
    env = os.environ.get("FLUX_KAFKA_HOME")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "flux" / f"kafka-{KAFKA_VERSION}"


def default_data_dir() -> Path:
    """The broker's data dir: ``$FLUX_KAFKA_DATA_DIR`` or ``.flux/kafka`` under the current directory."""
    env = os.environ.get("FLUX_KAFKA_DATA_DIR")
    return Path(env).expanduser() if env else Path.cwd() / DEFAULT_DATA_DIR


def default_port() -> int:
    """The client (PLAINTEXT) port: ``$FLUX_KAFKA_PORT`` or 9092."""
    return _env_int("FLUX_KAFKA_PORT", DEFAULT_PORT)


def default_controller_port() -> int:
    """The KRaft controller port: ``$FLUX_KAFKA_CONTROLLER_PORT`` or 9093."""
    return _env_int("FLUX_KAFKA_CONTROLLER_PORT", DEFAULT_CONTROLLER_PORT)


def new_cluster_id() -> str:
    """A fresh KRaft cluster id: 16 random bytes, base64url without padding (22 characters).

    As Kafka's own ``Uuid.randomUuid()``, never one starting with '-': the storage tool would read
    it as an option (1 format in 64 failed before).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode("ascii").rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def quorum_voters(voters: Sequence[tuple[int, str, int]]) -> str:
    """``controller.quorum.voters`` for ``(node_id, host, controller_port)`` triples, e.g. ``1@127.0.0.1:9093``."""
    return ",".join(f"{node_id}@{host}:{port}" for node_id, host, port in voters)


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port that is free right now on ``host`` (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_in_use(host: str, port: int) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_port_free(host: str, port: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds until nothing accepts connections on ``host:port``; True if free."""
    deadline = time.monotonic() + timeout
    while _port_in_use(host, port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _find_executable(name: str, env_var: str, *, java_home: bool = False) -> str:
    explicit = os.environ.get(env_var)
    if explicit:
        return explicit
    if java_home and os.environ.get("JAVA_HOME"):
        candidate = Path(os.environ["JAVA_HOME"]) / "bin" / name
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if not found:
        raise LocalKafkaError(f"`{name}` not found on PATH (set {env_var}); the local Kafka broker needs it")
    return found


def _java() -> str:
    return _find_executable("java", "JAVA", java_home=True)


def _mvn() -> str:
    return _find_executable("mvn", "MVN")


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (flock) so concurrent processes do not race on one directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------------------------------
# Jars


def _pom_xml() -> str:
    deps = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>"
        for g, a, v in ARTIFACTS
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by flux.localkafka: the runtime classpath of a local Apache Kafka {KAFKA_VERSION} broker. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>flux.local</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{KAFKA_VERSION}</version>
  <packaging>pom</packaging>
  <dependencies>
{deps}
  </dependencies>
</project>
"""


def ensure_jars(kafka_home: Path | None = None, progress: Progress = _quiet) -> Path:
    """Resolve Kafka's runtime jars from Maven Central into ``<kafka_home>/libs`` once; return that dir.

    A stamp file records the resolved artifact list, so later calls return at once.
    """
    home = (kafka_home or default_kafka_home()).expanduser().resolve()
    libs = home / "libs"
    stamp = home / STAMP_FILE
    pom = _pom_xml()
    if stamp.is_file() and stamp.read_text() == pom and any(libs.glob("*.jar")):
        return libs
    with _file_lock(home / ".lock"):
        if stamp.is_file() and stamp.read_text() == pom and any(libs.glob("*.jar")):
            return libs  # another process resolved them while we waited
        progress(f"resolving Kafka {KAFKA_VERSION} jars from Maven Central (once) into {home} ...")
        started = time.monotonic()
        stamp.unlink(missing_ok=True)
        (home / "pom.xml").write_text(pom)
        tmp = home / "libs.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [
            _mvn(),
            "-q",
            "-B",
            "-f",
            str(home / "pom.xml"),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}",
            "-DincludeScope=runtime",
        ]
        result = subprocess.run(cmd, cwd=home, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()[-4000:]
            raise LocalKafkaError(f"resolving Kafka jars failed ({shlex.join(cmd)}):\n{output}")
        jars = list(tmp.glob("*.jar"))
        if not jars:
            raise LocalKafkaError(f"`mvn dependency:copy-dependencies` put no jars into {tmp}")
        size_mb = sum(j.stat().st_size for j in jars) / 1e6
        shutil.rmtree(libs, ignore_errors=True)
        tmp.rename(libs)
        stamp.write_text(pom)
        progress(f"resolved {len(jars)} jars ({size_mb:.0f} MB) in {time.monotonic() - started:.1f} s")
    return libs


# ---------------------------------------------------------------------------------------------------------------------
# Readiness probe


def _run_sync(make_coro: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coro())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make_coro())).result()


async def probe_broker(bootstrap: str, timeout: float = 5.0) -> list[int]:
    """Send a Kafka metadata request to ``bootstrap``; return the broker ids it reports (raises if none)."""
    from aiokafka.admin import AIOKafkaAdminClient  # lazy: only the probe needs aiokafka

    host, _, port = bootstrap.split(",")[0].rpartition(":")
    if not _port_in_use(host.strip("[]") or DEFAULT_HOST, int(port)):
        # Not listening yet: fail fast without aiokafka (which logs every refused connection).
        raise ConnectionRefusedError(f"nothing listens on {bootstrap} yet")
    request_timeout_ms = max(1000, int(timeout * 1000))
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="flux-localkafka-probe", request_timeout_ms=request_timeout_ms
    )
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            cluster = await admin.describe_cluster()
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    brokers = [int(b["node_id"]) for b in cluster.get("brokers", [])]
    if not brokers:
        raise LocalKafkaError(f"{bootstrap} answered but reports no live brokers yet")
    return brokers


def broker_answers(bootstrap: str, timeout: float = 5.0) -> bool:
    """True when a Kafka broker at ``bootstrap`` answers a metadata request within ``timeout`` seconds."""
    try:
        _run_sync(lambda: probe_broker(bootstrap, timeout))
    except Exception as exc:
        log.debug("probe of %s failed: %r", bootstrap, exc)
        return False
    return True


# ---------------------------------------------------------------------------------------------------------------------
# Processes


def _pid_cmdline(pid: int) -> str | None:
    """The command line of a live (non-zombie) process, or None if it is gone."""
    proc = Path("/proc") / str(pid)
    if proc.is_dir():
        try:
            stat = (proc / "stat").read_text()
            if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
                return None
            return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return None
    try:  # no /proc (macOS): ask ps
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    out = subprocess.run(["ps", "-o", "stat=,command=", "-p", str(pid)], capture_output=True, text=True, check=False)
    line = out.stdout.strip()
    if out.returncode != 0 or not line or line.startswith("Z"):
        return None
    return line.split(None, 1)[1] if " " in line else line


class LocalKafka:
    """One local Kafka node in combined broker+controller (KRaft) mode, run as a background JVM.

    ``start()`` is idempotent and waits for the broker to answer; ``stop()`` shuts it down cleanly;
    ``kill()`` SIGKILLs it (for fault tests). The data dir survives both, so a restart keeps all data.
    """

    def __init__(
        self,
        data_dir: Path | str | None = None,
        port: int | None = None,
        controller_port: int | None = None,
        *,
        host: str = DEFAULT_HOST,
        node_id: int = 1,
        quorum_voters: str | None = None,
        cluster_id: str | None = None,
        kafka_home: Path | None = None,
        heap_opts: str | None = None,
        jvm_opts: Sequence[str] = JVM_OPTS,
        extra_properties: dict[str, str] | None = None,
        secure: SecureListeners | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.data_dir = Path(data_dir if data_dir is not None else default_data_dir()).expanduser().resolve()
        self.host = host
        self.port = port if port is not None else default_port()
        self.controller_port = controller_port if controller_port is not None else default_controller_port()
        self.node_id = node_id
        self.quorum_voters = quorum_voters or f"{node_id}@{host}:{self.controller_port}"
        self._cluster_id = cluster_id
        self.kafka_home = kafka_home
        self.heap_opts = heap_opts or os.environ.get("FLUX_KAFKA_HEAP_OPTS") or DEFAULT_HEAP_OPTS
        self.jvm_opts = tuple(jvm_opts)
        self.extra_properties = dict(extra_properties or {})
        self.secure = secure
        if secure is not None:
            secure.validate()
        self.progress: Progress = progress or _quiet
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"LocalKafka(data_dir={str(self.data_dir)!r}, bootstrap={self.bootstrap!r}, node_id={self.node_id})"

    # -- paths and properties -----------------------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """The client bootstrap address, ``host:port``."""
        return f"{self.host}:{self.port}"

    def bootstrap_for(self, protocol: str) -> str:
        """The bootstrap address of the listener of ``protocol`` (PLAINTEXT, or one of ``secure``'s)."""
        if protocol == "PLAINTEXT":
            return self.bootstrap
        ports = self.secure.ports() if self.secure is not None else {}
        if protocol not in ports:
            raise LocalKafkaError(f"this broker has no {protocol} listener")
        return f"{self.host}:{ports[protocol]}"

    def ports(self) -> list[int]:
        """Every port the broker listens on."""
        return [self.port, self.controller_port, *(self.secure.ports().values() if self.secure is not None else [])]

    @property
    def pid_file(self) -> Path:
        """File holding the broker JVM's pid while it runs."""
        return self.data_dir / PID_FILE

    @property
    def log_file(self) -> Path:
        """The broker's console log (stdout+stderr, WARN and above plus startup/shutdown lines)."""
        return self.data_dir / LOG_FILE

    @property
    def server_properties(self) -> Path:
        """The generated broker configuration."""
        return self.data_dir / SERVER_PROPERTIES

    @property
    def log_dirs(self) -> Path:
        """Kafka's ``log.dirs``: the KRaft metadata log and all topic partitions."""
        return self.data_dir / LOG_DIRS

    @property
    def cluster_id(self) -> str | None:
        """The cluster id in ``meta.properties`` once formatted, else the one given (or None)."""
        meta = self.log_dirs / "meta.properties"
        if meta.is_file():
            for line in meta.read_text().splitlines():
                if line.startswith("cluster.id="):
                    return line.split("=", 1)[1].strip()
        return self._cluster_id

    def is_formatted(self) -> bool:
        """True when the KRaft log dir has been formatted (``meta.properties`` exists)."""
        return (self.log_dirs / "meta.properties").is_file()

    def properties(self) -> dict[str, str]:
        """The ``server.properties`` this node runs with."""
        secure = self.secure.ports() if self.secure is not None else {}
        clients = "".join(f",{name}://{self.host}:{port}" for name, port in secure.items())
        protocols = "".join(f",{name}:{name}" for name in secure)
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.quorum_voters,
            "listeners": f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}{clients}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}{clients}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": f"CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT{protocols}",
            "log.dirs": str(self.log_dirs),
            "num.partitions": "8",
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "min.insync.replicas": "1",
            "default.replication.factor": "1",
            "group.initial.rebalance.delay.ms": "0",
            # After a crash (SIGKILL) the restarted node cannot re-register until its old broker session
            # expires: 5 s instead of the default 9 s halves restart time; heartbeats stay 5 per session.
            "broker.session.timeout.ms": "5000",
            "broker.heartbeat.interval.ms": "1000",
            "num.network.threads": "3",
            "num.io.threads": "8",
            "num.recovery.threads.per.data.dir": "2",
        }
        if self.secure is not None:
            props.update(self.secure.properties())
        props.update(self.extra_properties)
        return props

    def _log4j2_properties(self) -> str:
        # Console (stdout -> kafka.log): WARN and above, plus the one-line "started"/"shut down" notices.
        return "\n".join(
            [
                "# Generated by flux.localkafka",
                "status = warn",
                "name = flux-localkafka",
                "appender.console.type = Console",
                "appender.console.name = STDOUT",
                "appender.console.target = SYSTEM_OUT",
                "appender.console.layout.type = PatternLayout",
                "appender.console.layout.pattern = [%d] %p %m (%c)%n",
                "rootLogger.level = WARN",
                "rootLogger.appenderRef.stdout.ref = STDOUT",
                "logger.server.name = kafka.server.KafkaRaftServer",
                "logger.server.level = INFO",
                "logger.kafka.name = kafka.Kafka",
                "logger.kafka.level = INFO",
                "",
            ]
        )

    def _write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dirs.mkdir(parents=True, exist_ok=True)
        body = "".join(f"{k}={v}\n" for k, v in self.properties().items())
        self.server_properties.write_text("# Generated by flux.localkafka on every start; edits are lost.\n" + body)
        (self.data_dir / LOG4J_PROPERTIES).write_text(self._log4j2_properties())

    def _java_cmd(self, libs: Path, main: str, *args: str) -> list[str]:
        return [
            _java(),
            *shlex.split(self.heap_opts),
            *self.jvm_opts,
            f"-Dlog4j2.configurationFile={self.data_dir / LOG4J_PROPERTIES}",
            f"-Dkafka.logs.dir={self.data_dir}",
            "-cp",
            f"{libs}/*",
            main,
            *args,
        ]

    # -- lifecycle ----------------------------------------------------------------------------------------------------

    def ensure_jars(self) -> Path:
        """Resolve the Kafka jars (once); return the libs dir."""
        return ensure_jars(self.kafka_home, self.progress)

    def format(self, libs: Path | None = None) -> bool:
        """Format the KRaft log dir unless already formatted; True if it formatted now."""
        if self.is_formatted():
            return False
        libs = libs or self.ensure_jars()
        self._write_config()
        cluster_id = self._cluster_id or new_cluster_id()
        cmd = self._java_cmd(
            libs,
            STORAGE_TOOL_CLASS,
            "format",
            "-t",
            cluster_id,
            "-c",
            str(self.server_properties),
            "--ignore-formatted",
            *(self.secure.scram_arguments() if self.secure is not None else []),
        )
        # The storage tool is short-lived: a small heap and the C1 compiler alone start faster.
        cmd = [c for c in cmd if not c.startswith(("-Xms", "-Xmx")) and c not in QUICK_START_JVM_OPTS]
        cmd[1:1] = ["-Xmx256m", *QUICK_START_JVM_OPTS]
        result = subprocess.run(cmd, cwd=self.data_dir, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not self.is_formatted():
            output = (result.stdout + result.stderr).strip()[-4000:]
            raise LocalKafkaError(f"formatting {self.log_dirs} failed (exit {result.returncode}):\n{output}")
        self._cluster_id = cluster_id
        log.info("formatted %s with cluster id %s", self.log_dirs, cluster_id)
        return True

    def pid(self) -> int | None:
        """The pid of this data dir's broker JVM if it is alive, else None (a stale pid file is removed)."""
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None  # our child exited: reaped
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if self._proc is not None and self._proc.pid == pid:
            # Our own live child. Its command line can read empty or as another program's for a
            # moment while the java launcher re-executes itself at start: do not judge it by that.
            return pid
        cmdline = _pid_cmdline(pid)
        if cmdline is None or MAIN_CLASS not in cmdline or str(self.server_properties) not in cmdline:
            with contextlib.suppress(OSError):
                self.pid_file.unlink()
            return None
        return pid

    def is_running(self) -> bool:
        """True when this data dir's broker JVM is alive (it may still be starting)."""
        return self.pid() is not None

    def is_ready(self, timeout: float = 5.0) -> bool:
        """True when the broker runs and answers a metadata request."""
        return self.is_running() and broker_answers(self.bootstrap, timeout)

    def launch(self) -> bool:
        """Spawn the broker JVM unless it already runs, without waiting for it to answer; True if it spawned one now.

        A node of a several-voter quorum answers only once a majority of the voters runs, so
        :class:`LocalKafkaCluster` launches every node first and then waits for each.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.data_dir / ".lock"):
            if self.is_running():
                return False
            for port in self.ports():
                # A just-killed JVM can hold its sockets a moment after it stops showing as alive.
                if not _wait_port_free(self.host, port, 2.0):
                    raise LocalKafkaError(
                        f"{self.host}:{port} is already in use by another process (another Kafka broker, "
                        f"or a broker from a different data dir than {self.data_dir}?)"
                    )
            libs = self.ensure_jars()
            self._write_config()
            if self.format(libs):
                self.progress(f"formatted KRaft log dir {self.log_dirs} (cluster id {self.cluster_id})")
            self.progress(f"starting broker (data dir {self.data_dir})...")
            self._spawn(libs)
        return True

    def start(self, timeout: float = DEFAULT_START_TIMEOUT) -> str:
        """Start the broker unless it already runs; wait until it answers; return the bootstrap address."""
        started = time.monotonic()
        if not self.launch():
            self.progress(f"broker already running (pid {self.pid()}), waiting until it answers...")
            self.wait_ready(timeout)
            return self.bootstrap
        self.wait_ready(timeout)
        self.progress(f"broker ready at {self.bootstrap} ({time.monotonic() - started:.1f} s)")
        return self.bootstrap

    def _spawn(self, libs: Path) -> None:
        cmd = self._java_cmd(libs, MAIN_CLASS, str(self.server_properties))
        with self.log_file.open("ab") as out:
            out.write(
                f"\n===== flux.localkafka starting broker at {time.strftime('%Y-%m-%d %H:%M:%S')} =====\n".encode()
            )
            out.flush()
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        self.pid_file.write_text(f"{self._proc.pid}\n")
        log.info("started Kafka broker pid %d: %s", self._proc.pid, shlex.join(cmd))

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log file)"
        return "\n".join(text[-lines:])

    def wait_ready(self, timeout: float = DEFAULT_START_TIMEOUT) -> None:
        """Block until the broker answers a metadata request; raise LocalKafkaError (with the log tail) if not."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while True:
            if not self.is_running():
                raise LocalKafkaError(
                    f"the Kafka broker exited during startup; see {self.log_file}:\n{self._log_tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                probe_timeout = min(5.0, max(1.0, remaining))
                _run_sync(lambda: probe_broker(self.bootstrap, probe_timeout))  # noqa: B023 (called at once)
                return
            except Exception as exc:
                last_error = exc
            time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
        raise LocalKafkaError(
            f"the Kafka broker at {self.bootstrap} did not answer within {timeout:.0f} s "
            f"(last error: {last_error!r}); see {self.log_file}:\n{self._log_tail()}"
        )

    def _signal(self, sig: signal.Signals) -> int | None:
        pid = self.pid()
        if pid is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        return pid

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.pid == pid:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout=0.1)
            if _pid_cmdline(pid) is None:
                return True
            time.sleep(0.1)
        return _pid_cmdline(pid) is None

    def _forget(self, pid: int) -> None:
        if self._proc is not None and self._proc.pid == pid:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=1)
            self._proc = None
        with contextlib.suppress(OSError):
            self.pid_file.unlink()
        # The leader thread turns zombie before the other JVM threads (and their sockets) are gone.
        for port in self.ports():
            _wait_port_free(self.host, port, 5.0)

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> bool:
        """SIGTERM the broker and wait for a clean exit (SIGKILL after ``timeout``); False if it was not running."""
        pid = self._signal(signal.SIGTERM)
        if pid is None:
            return False
        self.progress(f"stopping broker (pid {pid})...")
        if not self._wait_exit(pid, timeout):
            log.warning("Kafka broker pid %d ignored SIGTERM for %.0f s; killing it", pid, timeout)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._wait_exit(pid, 10)
        self._forget(pid)
        return True

    def kill(self) -> bool:
        """SIGKILL the broker at once (a crash, for fault tests); False if it was not running."""
        pid = self._signal(signal.SIGKILL)
        if pid is None:
            return False
        self._wait_exit(pid, 10)
        self._forget(pid)
        return True

    def restart(self, timeout: float = DEFAULT_START_TIMEOUT) -> str:
        """Stop (cleanly) and start again on the same data dir."""
        self.stop()
        return self.start(timeout)


# ---------------------------------------------------------------------------------------------------------------------
# Several brokers


def cluster_replication(brokers: int) -> dict[str, str]:
    """Broker settings for ``brokers`` nodes: replication factor min(3, N), min ISR one less (at least 1).

    With three brokers every topic has three replicas and an ``acks=all`` write needs two of them,
    so one broker may fail without stopping writes.
    """
    replicas = min(3, max(1, brokers))
    min_isr = max(1, replicas - 1)
    return {
        "default.replication.factor": str(replicas),
        "min.insync.replicas": str(min_isr),
        "offsets.topic.replication.factor": str(replicas),
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": str(min_isr),
        "share.coordinator.state.topic.replication.factor": str(replicas),
        "share.coordinator.state.topic.min.isr": str(min_isr),
    }


def default_cluster_dir() -> Path:
    """The cluster's data dir: ``$FLUX_KAFKA_CLUSTER_DIR`` or ``.flux/kafka-cluster`` under the current directory."""
    env = os.environ.get("FLUX_KAFKA_CLUSTER_DIR")
    return Path(env).expanduser() if env else Path.cwd() / DEFAULT_CLUSTER_DIR


def cluster_ports(brokers: int, base_port: int) -> list[tuple[int, int]]:
    """``(client_port, controller_port)`` per broker, in pairs from ``base_port``: 9092/9093, 9094/9095..."""
    return [(base_port + 2 * i, base_port + 2 * i + 1) for i in range(brokers)]


class LocalKafkaCluster:
    """Several local :class:`LocalKafka` nodes, each a combined broker and controller, forming one KRaft cluster.

    Every node is a voter of a static quorum (``controller.quorum.voters``), so with three nodes
    the cluster survives the loss of any one. Each node has its own data dir ``<data_dir>/broker-<id>``
    (its log, pid file and KRaft log), and ``<data_dir>/cluster.json`` records the cluster id and
    the ports, so a later start (or ``stop`` from another process) finds the same cluster::

        cluster = LocalKafkaCluster(Path(".flux/kafka-cluster"), brokers=3)
        bootstrap = cluster.start()    # "127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096"
        cluster.brokers[1].kill()      # SIGKILL one broker (fault tests); .start() brings it back
        cluster.stop()

    ``brokers`` and ``ports`` apply to a new cluster; an existing one keeps its layout (asking for
    another broker count is an error).

    Kafka 4.1 offers a static quorum (``controller.quorum.voters``, the same list on every node, format
    needs nothing more) and a dynamic one (``controller.quorum.bootstrap.servers``, formatted with
    ``--initial-controllers`` naming each voter's directory id). The dynamic kind only matters for
    adding or removing controllers later, which a local cluster never does, so this uses the static one.
    """

    def __init__(
        self,
        data_dir: Path | str | None = None,
        brokers: int | None = None,
        *,
        ports: Sequence[tuple[int, int]] | None = None,
        host: str = DEFAULT_HOST,
        kafka_home: Path | None = None,
        heap_opts: str | None = None,
        jvm_opts: Sequence[str] = JVM_OPTS,
        extra_properties: dict[str, str] | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.data_dir = Path(data_dir if data_dir is not None else default_cluster_dir()).expanduser().resolve()
        self.progress: Progress = progress or _quiet
        layout = read_cluster_layout(self.data_dir)
        if layout is not None:
            cluster_id, host, known_ports = layout
            if brokers is not None and brokers != len(known_ports):
                raise LocalKafkaError(
                    f"{self.data_dir} holds a cluster of {len(known_ports)} brokers, not {brokers}; "
                    "stop it and delete the directory to start another"
                )
            if ports is not None and list(ports) != known_ports:
                raise LocalKafkaError(f"{self.data_dir} holds a cluster on ports {known_ports}, not {list(ports)}")
            ports = known_ports
        else:
            cluster_id = new_cluster_id()
            count = brokers if brokers is not None else len(ports) if ports is not None else DEFAULT_BROKERS
            ports = list(ports) if ports is not None else cluster_ports(count, default_port())
            if count < 1 or len(ports) != count:
                raise LocalKafkaError(f"a cluster needs at least one broker and one port pair each (got {count})")
        self.cluster_id = cluster_id
        self.host = host
        voters = quorum_voters([(node_id, host, controller) for node_id, (_, controller) in enumerate(ports, 1)])
        properties = {**cluster_replication(len(ports)), **(extra_properties or {})}
        self.brokers: list[LocalKafka] = [
            LocalKafka(
                self.data_dir / f"broker-{node_id}",
                port,
                controller,
                host=host,
                node_id=node_id,
                quorum_voters=voters,
                cluster_id=cluster_id,
                kafka_home=kafka_home,
                heap_opts=heap_opts,
                jvm_opts=jvm_opts,
                extra_properties=properties,
                progress=self._broker_progress(node_id),
            )
            for node_id, (port, controller) in enumerate(ports, 1)
        ]

    def __repr__(self) -> str:
        return f"LocalKafkaCluster(data_dir={str(self.data_dir)!r}, bootstrap={self.bootstrap!r})"

    def _broker_progress(self, node_id: int) -> Progress:
        return lambda message: self.progress(f"broker {node_id}: {message}")

    @property
    def bootstrap(self) -> str:
        """Every broker's client address, comma-separated (``host:port,host:port,...``)."""
        return ",".join(broker.bootstrap for broker in self.brokers)

    @property
    def layout_file(self) -> Path:
        """``cluster.json``: the cluster id, host and ports, written on the first start."""
        return self.data_dir / CLUSTER_LAYOUT

    def is_running(self) -> bool:
        """True when any broker of the cluster runs."""
        return any(broker.is_running() for broker in self.brokers)

    def running(self) -> list[int]:
        """Node ids of the brokers that run."""
        return [broker.node_id for broker in self.brokers if broker.is_running()]

    def start(self, timeout: float = DEFAULT_START_TIMEOUT) -> str:
        """Start every broker that is not running, wait until all answer and see each other; return the bootstrap."""
        started = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.layout_file.exists():
            write_cluster_layout(self.data_dir, self.cluster_id, self.host, [(b.port, b.controller_port) for b in self])
        ensure_jars(self.brokers[0].kafka_home, self.progress)
        # Formatting is one short JVM per node: in parallel, as are the waits (no node answers before a quorum).
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(self.brokers)) as pool:
            list(pool.map(lambda broker: broker.launch(), self.brokers))
        deadline = started + timeout
        for broker in self.brokers:
            broker.wait_ready(max(1.0, deadline - time.monotonic()))
        self.wait_all_registered(max(1.0, deadline - time.monotonic()))
        self.progress(f"{len(self.brokers)} brokers ready at {self.bootstrap} ({time.monotonic() - started:.1f} s)")
        return self.bootstrap

    def wait_all_registered(self, timeout: float = DEFAULT_START_TIMEOUT) -> None:
        """Block until the cluster's metadata lists every broker (a restarted one rejoined); raise if not in time."""
        wanted = {broker.node_id for broker in self.brokers}
        deadline = time.monotonic() + timeout
        seen: set[int] = set()
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                seen = set(_run_sync(lambda: probe_broker(self.bootstrap, 5.0)))
                if wanted <= seen:
                    return
            time.sleep(0.25)
        raise LocalKafkaError(f"brokers {sorted(wanted - seen)} did not join the cluster within {timeout:.0f} s")

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> bool:
        """Stop every broker at once (SIGTERM, SIGKILL after ``timeout``); False if none was running."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(self.brokers)) as pool:
            return any(list(pool.map(lambda broker: broker.stop(timeout), self.brokers)))

    def kill(self) -> bool:
        """SIGKILL every broker; False if none was running."""
        return any([broker.kill() for broker in self.brokers])

    def __iter__(self) -> Iterator[LocalKafka]:
        return iter(self.brokers)


def read_cluster_layout(data_dir: Path) -> tuple[str, str, list[tuple[int, int]]] | None:
    """The ``(cluster_id, host, [(port, controller_port)])`` recorded in ``data_dir``, or None for no cluster."""
    path = data_dir / CLUSTER_LAYOUT
    if not path.is_file():
        return None
    try:
        layout = json.loads(path.read_text())
        ports = [(int(b["port"]), int(b["controller_port"])) for b in layout["brokers"]]
        return str(layout["cluster_id"]), str(layout["host"]), ports
    except (ValueError, KeyError, TypeError) as exc:
        raise LocalKafkaError(f"{path} is not a cluster layout: {exc!r}") from None


def write_cluster_layout(data_dir: Path, cluster_id: str, host: str, ports: Sequence[tuple[int, int]]) -> None:
    """Record a cluster's id, host and ports in ``data_dir/cluster.json``."""
    brokers = [{"node_id": n, "port": p, "controller_port": c} for n, (p, c) in enumerate(ports, 1)]
    layout = {"cluster_id": cluster_id, "host": host, "brokers": brokers}
    (data_dir / CLUSTER_LAYOUT).write_text(json.dumps(layout, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------------------------------
# Command line


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


Launcher = LocalKafka | LocalKafkaCluster


def open_launcher(
    data_dir: Path | None = None,
    brokers: int | None = None,
    port: int | None = None,
    controller_port: int | None = None,
    progress: Progress | None = None,
) -> Launcher:
    """The launcher for ``data_dir``: the cluster recorded there, a new cluster when ``brokers`` > 1, else one broker.

    A cluster's brokers take port pairs from ``port`` (client, controller: 9092/9093, 9094/9095...)
    and live under ``data_dir`` (default ``$FLUX_KAFKA_CLUSTER_DIR`` or ``.flux/kafka-cluster``).
    """
    has_layout = data_dir is not None and read_cluster_layout(data_dir.expanduser().resolve()) is not None
    if (brokers is not None and brokers > 1) or has_layout:
        ports = cluster_ports(brokers, port) if brokers is not None and port is not None else None
        return LocalKafkaCluster(data_dir, brokers, ports=ports, progress=progress)
    return LocalKafka(data_dir, port, controller_port, progress=progress)


def _found_launchers(port: int | None, controller_port: int | None) -> list[Launcher]:
    """For stop, kill and status without a data dir: the default broker and, if one was ever started, the cluster."""
    found: list[Launcher] = [LocalKafka(None, port, controller_port, progress=_stderr)]
    if read_cluster_layout(default_cluster_dir().resolve()) is not None:
        found.append(LocalKafkaCluster(None, progress=_stderr))
    return found


def _status(launcher: Launcher) -> int:
    """Report whether ``launcher``'s brokers run and answer; 0 all ready, 1 some not, 3 none running."""
    brokers = launcher.brokers if isinstance(launcher, LocalKafkaCluster) else [launcher]
    pids = {broker.node_id: broker.pid() for broker in brokers}
    if not any(pids.values()):
        _stderr(f"not running ({launcher.data_dir})")
        return 3
    ready = broker_answers(launcher.bootstrap, 5.0)
    if isinstance(launcher, LocalKafkaCluster):
        for broker in brokers:
            pid = pids[broker.node_id]
            _stderr(f"broker {broker.node_id} at {broker.bootstrap}: {f'pid {pid}' if pid else 'NOT running'}")
        _stderr(f"cluster {'answers' if ready else 'does NOT answer'} at {launcher.bootstrap} ({launcher.data_dir})")
    else:
        state = "ready" if ready else "NOT answering"
        _stderr(f"running, pid {pids[launcher.node_id]}, {state} at {launcher.bootstrap} ({launcher.data_dir})")
    print(launcher.bootstrap, flush=True)
    return 0 if ready and all(pids.values()) else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The launcher's command-line arguments, shared by ``python -m flux.localkafka`` and ``flux kafka``."""
    parser.add_argument("command", choices=["start", "stop", "kill", "status", "jars"])
    parser.add_argument(
        "--brokers",
        type=int,
        default=None,
        help="start a KRaft cluster of N brokers (each broker and controller; N=3 tolerates one failure)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="default $FLUX_KAFKA_DATA_DIR or ./.flux/kafka; with --brokers N>1 $FLUX_KAFKA_CLUSTER_DIR or "
        "./.flux/kafka-cluster. stop/kill/status without it act on both",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="client port (default $FLUX_KAFKA_PORT or 9092); a cluster's brokers use port, port+2, port+4...",
    )
    parser.add_argument(
        "--controller-port",
        type=int,
        default=None,
        help="controller port of one broker (default $FLUX_KAFKA_CONTROLLER_PORT or 9093; a cluster's: port+1...)",
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_START_TIMEOUT, help="seconds to wait for readiness")


def run(args: argparse.Namespace) -> int:
    """Carry out a parsed launcher command. Exit 0 on success, 1 on failure, 3 if not running (status)."""
    try:
        if args.command in ("start", "jars") or args.data_dir is not None or args.brokers is not None:
            launchers = [open_launcher(args.data_dir, args.brokers, args.port, args.controller_port, _stderr)]
        else:
            launchers = _found_launchers(args.port, args.controller_port)
        if args.command == "jars":
            print(ensure_jars(None, _stderr))
            return 0
        if args.command == "start":
            print(launchers[0].start(args.timeout), flush=True)
            return 0
        if args.command in ("stop", "kill"):
            for launcher in launchers:
                stopped = launcher.stop() if args.command == "stop" else launcher.kill()
                what = "brokers" if isinstance(launcher, LocalKafkaCluster) else "broker"
                _stderr(f"{what} {'stopped' if stopped else 'not running'} ({launcher.data_dir})")
            return 0
        codes = [_status(launcher) for launcher in launchers]
        return 0 if 0 in codes else min(codes)
    except LocalKafkaError as exc:
        _stderr(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flux.localkafka start|stop|kill|status|jars``. Exit 0 on success, 1 on failure, 3 if not running."""
    parser = argparse.ArgumentParser(prog="python -m flux.localkafka", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
