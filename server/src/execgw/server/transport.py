"""What the listen port is exposed to: TLS material, and the rule that a non-loopback
address is served only with TLS and auth (README, "TLS").

Every failure here is a ConfigError with one line that names the key and the file, so
`execgw serve` exits 2 before it opens the journal or binds anything.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path

import grpc

from execgw.server.config import ConfigError, GatewayConfig, TlsConfig, auth_enabled

log = logging.getLogger(__name__)


class InsecureListen(ConfigError):
    """A non-loopback listen address without TLS and auth, and no `server.insecure`."""


def is_loopback_host(host: str) -> bool:
    """True for `localhost`, 127.0.0.0/8 and ::1 (bracketed or not, IPv4-mapped too).

    Only literal addresses and the name `localhost` count: any other name could
    resolve to anything, so it is treated as exposed."""
    host = host.removeprefix("[").removesuffix("]")
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def check_exposure(config: GatewayConfig) -> str | None:
    """Refuse a non-loopback listen address served without TLS or without auth.

    Returns what is missing ("TLS (server.tls) and without auth (auth.tokens)") when
    `server.insecure: true` lets such a config start, for `insecure_warning`; None when
    nothing is. Raises InsecureListen otherwise."""
    host = config.listen.rpartition(":")[0]
    if is_loopback_host(host):
        return None
    missing = [
        what
        for what, present in (
            ("TLS (server.tls)", config.server.tls is not None),
            ("auth (auth.tokens)", auth_enabled(config)),
        )
        if not present
    ]
    if not missing:
        return None
    gaps = " and without ".join(missing)
    if not config.server.insecure:
        raise InsecureListen(
            f"refusing to serve {config.listen}, which is not a loopback address, without "
            f"{gaps}: anyone who reaches it could trade, cancel and halt; configure them, "
            "listen on 127.0.0.1, or set server.insecure: true to accept the risk"
        )
    return gaps


def insecure_warning(address: str, gaps: str) -> str:
    """The line logged at start-up when server.insecure let an exposed config start."""
    return (
        f"INSECURE: serving {address} without {gaps} because server.insecure is true: "
        "anyone who can reach this address can trade, cancel orders and halt trading"
    )


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """The PEM bytes the server credentials are made of, read once at start-up."""

    certificate_chain: bytes
    private_key: bytes
    client_ca: bytes | None

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    def server_credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)],
            root_certificates=self.client_ca,
            # With a client CA every client must present a certificate it signed.
            require_client_auth=self.client_ca is not None,
        )


def _read(key: str, path: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{key}: cannot read {path}: {e.strerror or e}") from None
    if not data.strip():
        raise ConfigError(f"{key}: {path} is empty")
    return data


def _pem_certificates(key: str, path: str, data: bytes) -> None:
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise ConfigError(f"{key}: {path} holds no PEM certificate")


def load_tls(section: TlsConfig) -> TlsMaterial:
    """Read and check the files of `server.tls`; a ConfigError names the first bad one."""
    chain = _read("server.tls.cert_file", section.cert_file)
    _pem_certificates("server.tls.cert_file", section.cert_file, chain)
    key = _read("server.tls.key_file", section.key_file)
    if b"ENCRYPTED" in key:
        raise ConfigError(
            f"server.tls.key_file: {section.key_file} is encrypted; gRPC takes no passphrase, "
            "so store it unencrypted with mode 0600"
        )
    if b"PRIVATE KEY-----" not in key:
        raise ConfigError(f"server.tls.key_file: {section.key_file} holds no PEM private key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # Parses both files and checks that the key belongs to the leaf certificate.
        context.load_cert_chain(section.cert_file, section.key_file, password=_no_password)
    except ssl.SSLError as e:
        reason = "the key does not match the certificate" if "MISMATCH" in str(e) else str(e)
        raise ConfigError(
            f"server.tls.key_file: {section.key_file} and server.tls.cert_file: "
            f"{section.cert_file} are not a usable certificate and key: {reason}"
        ) from None
    except OSError as e:  # the files changed under us
        raise ConfigError(f"server.tls: cannot load the certificate and key: {e}") from None
    _warn_if_readable_by_others(section.key_file)
    client_ca = None
    if section.client_ca_file is not None:
        client_ca = _read("server.tls.client_ca_file", section.client_ca_file)
        _pem_certificates("server.tls.client_ca_file", section.client_ca_file, client_ca)
        try:
            context.load_verify_locations(cadata=client_ca.decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError, ValueError) as e:
            raise ConfigError(
                f"server.tls.client_ca_file: {section.client_ca_file} is not a usable PEM CA "
                f"bundle: {e}"
            ) from None
    return TlsMaterial(certificate_chain=chain, private_key=key, client_ca=client_ca)


def _no_password() -> bytes:
    # Never prompt on a terminal: an encrypted key fails instead.
    raise ssl.SSLError("the key is encrypted")


def _warn_if_readable_by_others(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "server.tls.key_file %s has mode %04o: group and others can read the gateway's "
            "private key; chmod 600 it",
            path,
            stat.S_IMODE(mode),
        )
