"""Certificates made at test time with `cryptography`: a CA, server certificates for
127.0.0.1 and localhost, and client certificates. bench/run.py uses them too.

EC P-256 keys, so that making a handful takes milliseconds; valid from a day ago for a
day, so that no clock skew between the test and the gateway matters.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as files (mode 0600) and as PEM bytes."""

    cert_file: Path
    key_file: Path

    @property
    def cert_pem(self) -> bytes:
        return self.cert_file.read_bytes()

    @property
    def key_pem(self) -> bytes:
        return self.key_file.read_bytes()

    @property
    def pair(self) -> tuple[str, str]:
        """The client's `cert=` argument."""
        return (str(self.cert_file), str(self.key_file))


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "execgw tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


class CertificateAuthority:
    """A self-signed CA that writes what it issues into `directory`."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self._certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        self.cert_file = _write(
            directory / f"{name}.pem", self._certificate.public_bytes(serialization.Encoding.PEM)
        )

    @property
    def cert_pem(self) -> bytes:
        return self.cert_file.read_bytes()

    def issue(self, name: str, *, hosts: tuple[str, ...] = (), client: bool = False) -> Issued:
        """A leaf certificate: for a server answering as `hosts`, or a client named `name`."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self._certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if hosts:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_san(host) for host in hosts]), critical=False
            )
        certificate = builder.sign(self._key, hashes.SHA256())
        return Issued(
            cert_file=_write(
                self.directory / f"{name}.pem", certificate.public_bytes(serialization.Encoding.PEM)
            ),
            key_file=_write(self.directory / f"{name}.key", _key_pem(key)),
        )


@dataclass(frozen=True)
class Pki:
    """Everything the TLS tests need: the gateway's CA and another one nobody trusts."""

    ca: CertificateAuthority
    other_ca: CertificateAuthority
    server: Issued
    client: Issued
    rogue_client: Issued  # a client certificate from other_ca

    def server_tls(self, *, mutual: bool = False) -> dict[str, str]:
        """The `server.tls` config section."""
        section = {"cert_file": str(self.server.cert_file), "key_file": str(self.server.key_file)}
        if mutual:
            section["client_ca_file"] = str(self.ca.cert_file)
        return section


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority(directory, "execgw-test-ca")
    other_ca = CertificateAuthority(directory, "other-ca")
    return Pki(
        ca=ca,
        other_ca=other_ca,
        server=ca.issue("gateway", hosts=LOOPBACK_NAMES),
        client=ca.issue("strategy-a", client=True),
        rogue_client=other_ca.issue("intruder", client=True),
    )
