"""Throwaway TLS material for tests of secured brokers: a CA, a broker certificate, a client certificate.

Everything is PEM, as both sides take it: the broker's keystore (``ssl.keystore.type=PEM``) holds
an unencrypted PKCS#8 key and its chain, the clients load the CA file and their certificate and
key. The broker certificate names 127.0.0.1 and localhost, so host-name checks pass.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from flux.config import Settings


@dataclass(frozen=True)
class TlsFiles:
    """The files of one test CA and the certificates it signed."""

    ca: Path  # the CA certificate, what clients trust (FLUX_KAFKA_SSL_CAFILE) and the broker's truststore
    broker_keystore: Path  # the broker's key and certificate chain
    client_cert: Path
    client_key: Path


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _certificate(
    subject: str,
    key: rsa.RSAPrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: rsa.RSAPrivateKey,
    extensions: list[tuple[x509.ExtensionType, bool]],
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer is not None else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical)
    return builder.sign(issuer_key, hashes.SHA256())


def make_tls_files(directory: Path, ca_name: str = "flux test CA") -> TlsFiles:
    """Write a new CA, a broker certificate for 127.0.0.1/localhost and a client certificate into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca = _certificate(
        ca_name,
        ca_key,
        None,
        ca_key,
        [
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (x509.KeyUsage(False, False, False, False, False, True, True, False, False), True),
        ],
    )
    broker_key = _key()
    broker = _certificate(
        "localhost",
        broker_key,
        ca,
        ca_key,
        [
            (
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                False,
            ),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
        ],
    )
    client_key = _key()
    client = _certificate(
        "flux-client", client_key, ca, ca_key, [(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)]
    )
    files = TlsFiles(
        ca=directory / "ca.pem",
        broker_keystore=directory / "broker.pem",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )
    files.ca.write_bytes(_pem_cert(ca))
    files.broker_keystore.write_bytes(_pem_key(broker_key) + _pem_cert(broker) + _pem_cert(ca))
    files.client_cert.write_bytes(_pem_cert(client))
    files.client_key.write_bytes(_pem_key(client_key))
    return files


USER = "flux"  # the user of the secured test brokers, for PLAIN and SCRAM
PASSWORD = "flux-test-secret-7d1e"


def sasl(protocol: str = "SASL_PLAINTEXT", mechanism: str = "SCRAM-SHA-256", **more: Any) -> Settings:
    """Settings of a SASL client (user :data:`USER`)."""
    return Settings(
        kafka_security_protocol=protocol,
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username=USER,
        kafka_sasl_password=PASSWORD,
        **more,
    )
