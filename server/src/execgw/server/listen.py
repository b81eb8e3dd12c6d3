"""Binding the gRPC port, with a one-line reason when it cannot be bound.

grpcio reports a failed bind as a bare RuntimeError ("Failed to bind to address ...;
set GRPC_VERBOSITY=debug ...") after logging its own line to stderr, and older
releases returned port 0 instead. So the address is tried with a plain socket
first, which gives a precise reason (in use, does not resolve, not an address of
this host) before gRPC prints anything; gRPC's bind still decides.
"""

from __future__ import annotations

import errno
import socket

import grpc


class ListenFailed(Exception):
    """The listen address cannot be served; the message is one line for the operator."""


def check_bindable(address: str) -> None:
    """Raise ListenFailed when binding `address` would fail."""
    reason = why_unbindable(address)
    if reason is not None:
        raise ListenFailed(f"cannot listen on {address}: {reason}")


def bind(
    server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None = None
) -> int:
    """Add the port, secure with `credentials`, else plaintext; returns the bound port,
    raises ListenFailed."""
    check_bindable(address)
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError:
        port = 0
    if port == 0:
        # The address was free a moment ago: someone took it in between.
        raise ListenFailed(f"cannot listen on {address}: gRPC could not bind it")
    return port


def why_unbindable(address: str) -> str | None:
    """Why binding `address` would fail, or None when it looks bindable."""
    host, _, port_text = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        port = int(port_text)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except ValueError:
        return f"{port_text!r} is not a port number"
    except (socket.gaierror, UnicodeError):
        return f"host {host!r} does not resolve to an address"
    failures: list[str] = []
    for family, kind, proto, _, sockaddr in infos:
        try:
            with socket.socket(family, kind, proto) as probe:
                # As gRPC binds, so a port in TIME_WAIT is not reported as taken; and
                # without SO_REUSEPORT, so a port another server listens on is.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(sockaddr)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                # gRPC would serve the name's other addresses and split the clients.
                return "the address is already in use (is another execgw serving it?)"
            failures.append(_explain(e, str(sockaddr[0])))
    # Like gRPC, a name is servable when any of its addresses is (e.g. localhost
    # on a host without IPv6).
    return failures[0] if failures and len(failures) == len(infos) else None


def _explain(error: OSError, ip: str) -> str:
    if error.errno == errno.EADDRNOTAVAIL:
        return f"{ip} is not an address of this host"
    if error.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges)"
    return error.strerror or str(error)
