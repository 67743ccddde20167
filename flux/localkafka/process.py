"""One local Kafka node (KRaft broker and controller in one JVM): its configuration, its process, its pid file.

``start()`` formats the KRaft log dir once, spawns the JVM in the background and waits until it
answers; ``stop()`` and ``kill()`` end it, judging a pid file by the process's command line.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import secrets
import shlex
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from flux.localkafka.base import DEFAULT_HOST, LocalKafkaError, Progress, file_lock, quiet
from flux.localkafka.jars import ensure_jars
from flux.localkafka.listeners import SecureListeners
from flux.localkafka.probe import broker_answers, probe_broker, run_sync, wait_port_free
from flux.localkafka.settings import (
    default_controller_port,
    default_data_dir,
    default_heap_opts,
    default_port,
    java_executable,
)

log = logging.getLogger(__name__)

DEFAULT_START_TIMEOUT = 60.0
DEFAULT_STOP_TIMEOUT = 30.0

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
        self.heap_opts = heap_opts or default_heap_opts()
        self.jvm_opts = tuple(jvm_opts)
        self.extra_properties = dict(extra_properties or {})
        self.secure = secure
        if secure is not None:
            secure.validate()
        self.progress: Progress = progress or quiet
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
            java_executable(),
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
        with file_lock(self.data_dir / ".lock"):
            if self.is_running():
                return False
            for port in self.ports():
                # A just-killed JVM can hold its sockets a moment after it stops showing as alive.
                if not wait_port_free(self.host, port, 2.0):
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
                run_sync(lambda: probe_broker(self.bootstrap, probe_timeout))  # noqa: B023 (called at once)
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
            wait_port_free(self.host, port, 5.0)

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
