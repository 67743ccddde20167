"""The local Kafka launcher's settings, read from environment variables (pydantic-settings).

They are read anew at each use (a test may change the environment between two launchers); a value
that does not parse is a :class:`~flux.localkafka.base.LocalKafkaError` naming the variable. The
arguments of :class:`~flux.localkafka.process.LocalKafka` and of the command line take precedence.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flux.env_names import env_names
from flux.localkafka.base import KAFKA_VERSION, LocalKafkaError

DEFAULT_PORT = 9092
DEFAULT_CONTROLLER_PORT = 9093
DEFAULT_DATA_DIR = Path(".flux/kafka")
DEFAULT_CLUSTER_DIR = Path(".flux/kafka-cluster")
DEFAULT_HEAP_OPTS = "-Xms256m -Xmx1g"


class LocalKafkaSettings(BaseSettings):
    """Where the launcher keeps jars and data, its ports, and the ``java`` and ``mvn`` it runs.

    Variables are ``FLUX_KAFKA_<NAME>``, except ``JAVA``, ``JAVA_HOME`` and ``MVN``; an empty one
    counts as unset.
    """

    model_config = SettingsConfigDict(env_prefix="FLUX_KAFKA_", env_ignore_empty=True, extra="ignore")

    home: Path = Field(
        default=Path(f"~/.cache/flux/kafka-{KAFKA_VERSION}"),
        validate_default=True,
        description="Where Kafka's jars are resolved to from Maven Central (once, with `mvn`) and kept",
    )
    data_dir: Path = Field(
        default=DEFAULT_DATA_DIR,
        validate_default=True,
        description="The single broker's data dir (KRaft log, generated configuration, `kafka.log`, pid file), "
        "relative to the current directory",
    )
    cluster_dir: Path = Field(
        default=DEFAULT_CLUSTER_DIR,
        validate_default=True,
        description="A local cluster's (`--brokers N`) data dir: one directory per broker, and `cluster.json` "
        "with the cluster id and ports",
    )
    port: int = Field(
        default=DEFAULT_PORT,
        description="The broker's client (PLAINTEXT) port; a cluster's brokers take pairs of ports from it "
        "(client, controller: 9092/9093, 9094/9095...)",
    )
    controller_port: int = Field(
        default=DEFAULT_CONTROLLER_PORT, description="The single broker's KRaft controller port"
    )
    heap_opts: str = Field(default=DEFAULT_HEAP_OPTS, description="The broker JVM's heap options")
    java: str | None = Field(
        default=None,
        validation_alias="JAVA",
        description="The `java` to run; unset: `$JAVA_HOME/bin/java` if it exists, else the one on `PATH`",
    )
    java_home: str | None = Field(
        default=None, validation_alias="JAVA_HOME", description="The Java installation whose `bin/java` runs"
    )
    mvn: str | None = Field(
        default=None,
        validation_alias="MVN",
        description="The `mvn` that resolves the jars (once); unset: the one on `PATH`",
    )

    @field_validator("home", "data_dir", "cluster_dir")
    @classmethod
    def _expand_user(cls, path: Path) -> Path:
        return path.expanduser()


def launcher_settings() -> LocalKafkaSettings:
    """The settings as the environment says now; raises LocalKafkaError naming a variable that does not parse."""
    try:
        return LocalKafkaSettings()
    except ValidationError as exc:
        names = env_names(LocalKafkaSettings)
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            where = f"{names.get(field, field)}={error['input']!r}"
            problems.append(
                f"{where} is not an integer" if error["type"] == "int_parsing" else f"{where}: {error['msg']}"
            )
        raise LocalKafkaError("; ".join(problems)) from None


def default_kafka_home() -> Path:
    """The jar cache: ``$FLUX_KAFKA_HOME`` or ``~/.cache/flux/kafka-<version>``."""
    return launcher_settings().home


def default_data_dir() -> Path:
    """The broker's data dir: ``$FLUX_KAFKA_DATA_DIR`` or ``.flux/kafka``, under the current directory if relative."""
    return Path.cwd() / launcher_settings().data_dir


def default_cluster_dir() -> Path:
    """The cluster's data dir: ``$FLUX_KAFKA_CLUSTER_DIR`` or ``.flux/kafka-cluster``, under the current directory if
    relative."""
    return Path.cwd() / launcher_settings().cluster_dir


def default_port() -> int:
    """The client (PLAINTEXT) port: ``$FLUX_KAFKA_PORT`` or 9092."""
    return launcher_settings().port


def default_controller_port() -> int:
    """The KRaft controller port: ``$FLUX_KAFKA_CONTROLLER_PORT`` or 9093."""
    return launcher_settings().controller_port


def default_heap_opts() -> str:
    """The broker JVM's heap options: ``$FLUX_KAFKA_HEAP_OPTS`` or ``-Xms256m -Xmx1g``."""
    return launcher_settings().heap_opts


def java_executable() -> str:
    """The ``java`` to run: ``$JAVA``, else ``$JAVA_HOME/bin/java`` if it exists, else the one on ``PATH``."""
    settings = launcher_settings()
    return _find_executable("java", "JAVA", settings.java, settings.java_home)


def mvn_executable() -> str:
    """The ``mvn`` to run: ``$MVN``, else the one on ``PATH``."""
    return _find_executable("mvn", "MVN", launcher_settings().mvn)


def _find_executable(name: str, env_var: str, explicit: str | None, home: str | None = None) -> str:
    if explicit:
        return explicit
    if home:
        candidate = Path(home) / "bin" / name
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if not found:
        raise LocalKafkaError(f"`{name}` not found on PATH (set {env_var}); the local Kafka broker needs it")
    return found
