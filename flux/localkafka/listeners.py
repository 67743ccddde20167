"""Client listeners that authenticate or encrypt (SASL_PLAINTEXT, SASL_SSL, SSL), for tests of secured clusters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from flux.localkafka.base import LocalKafkaError

SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
JAAS_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}
UNSAFE_IN_CREDENTIALS = set('"\\,=[]; \t\n')  # break the JAAS line or the storage tool's --add-scram syntax


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
