"""A local Apache Kafka broker (KRaft, no ZooKeeper, no Docker) for development and tests.

Apache Kafka's own jars are resolved once from Maven Central with ``mvn`` into a cache directory,
then a combined broker+controller JVM is started in the background on ``127.0.0.1``::

    kafka = LocalKafka(Path(".flux/kafka"), port=9092, controller_port=9093)
    bootstrap = kafka.start()      # "127.0.0.1:9092", once the broker answers metadata requests
    kafka.stop()                   # SIGTERM, clean shutdown (SIGKILL after 30 s)

The data directory keeps the KRaft log across restarts (it is formatted only once), the generated
``server.properties`` / ``log4j2.properties``, the broker's console log ``kafka.log`` and a pid file.

Command line::

    python -m flux.localkafka start|stop|status|kill [--data-dir DIR] [--port N] [--controller-port N]

Environment: ``FLUX_KAFKA_HOME`` (jar cache, default ``~/.cache/flux/kafka-4.1.1``),
``FLUX_KAFKA_DATA_DIR`` (default ``.flux/kafka``), ``FLUX_KAFKA_PORT`` (default 9092),
``FLUX_KAFKA_CONTROLLER_PORT`` (default 9093), ``FLUX_KAFKA_HEAP_OPTS`` (default ``-Xms256m -Xmx1g``),
``JAVA_HOME`` / ``JAVA`` (the ``java`` to run), ``MVN`` (the ``mvn`` to run).

Several nodes can share one cluster: give each its own ``node_id``, ports and data dir, the same
``cluster_id`` and the same ``quorum_voters`` (see :func:`quorum_voters`).

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

MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL_CLASS = "kafka.tools.StorageTool"

PID_FILE = "kafka.pid"
LOG_FILE = "kafka.log"
SERVER_PROPERTIES = "server.properties"
LOG4J_PROPERTIES = "log4j2.properties"
LOG_DIRS = "kraft-logs"
STAMP_FILE = ".resolved"

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
            *JVM_OPTS,
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
        # The storage tool is short-lived: a small heap starts faster.
        cmd = [c for c in cmd if not c.startswith(("-Xms", "-Xmx"))]
        cmd.insert(1, "-Xmx256m")
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

    def start(self, timeout: float = DEFAULT_START_TIMEOUT) -> str:
        """Start the broker unless it already runs; wait until it answers; return the bootstrap address."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.data_dir / ".lock"):
            if self.is_running():
                self.progress(f"broker already running (pid {self.pid()}), waiting until it answers...")
                self.wait_ready(timeout)
                return self.bootstrap
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
            started = time.monotonic()
            self._spawn(libs)
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
# Command line


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flux.localkafka start|stop|kill|status``. Exit 0 on success, 1 on failure, 3 if not running."""
    parser = argparse.ArgumentParser(prog="python -m flux.localkafka", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["start", "stop", "kill", "status", "jars"])
    parser.add_argument("--data-dir", type=Path, default=None, help="default $FLUX_KAFKA_DATA_DIR or ./.flux/kafka")
    parser.add_argument("--port", type=int, default=None, help="client port (default $FLUX_KAFKA_PORT or 9092)")
    parser.add_argument(
        "--controller-port",
        type=int,
        default=None,
        help="controller port (default $FLUX_KAFKA_CONTROLLER_PORT or 9093)",
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_START_TIMEOUT, help="seconds to wait for readiness")
    args = parser.parse_args(argv)
    try:
        kafka = LocalKafka(args.data_dir, args.port, args.controller_port, progress=_stderr)
        if args.command == "jars":
            print(kafka.ensure_jars())
            return 0
        if args.command == "start":
            print(kafka.start(args.timeout), flush=True)
            return 0
        if args.command in ("stop", "kill"):
            stopped = kafka.stop() if args.command == "stop" else kafka.kill()
            _stderr(f"broker {'stopped' if stopped else 'was not running'} ({kafka.data_dir})")
            return 0
        pid = kafka.pid()
        if pid is None:
            _stderr(f"not running ({kafka.data_dir})")
            return 3
        ready = broker_answers(kafka.bootstrap, 5.0)
        _stderr(f"running, pid {pid}, {'ready' if ready else 'NOT answering'} at {kafka.bootstrap} ({kafka.data_dir})")
        print(kafka.bootstrap, flush=True)
        return 0 if ready else 1
    except LocalKafkaError as exc:
        _stderr(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
