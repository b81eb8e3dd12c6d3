"""A raw HTTP/2 gRPC caller that never takes delivery of what it asked for.

It opens calls and never grants flow-control window, so each response stays in the
server's buffers; it can also open a call and never send the request. That is the
non-reading client of the resource-limit tests: a real gRPC client cannot be made to
misbehave this way. It reads the socket only to see which calls the server has
answered (response HEADERS are not flow-controlled) or refused, and to answer pings
(a careful attacker does, so that keepalive does not rescue the server; one that
does not answer them is the peer keepalive is for).

Only what these tests need: no HPACK decoding, so it cannot tell a status apart.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from collections.abc import Callable

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _RST_STREAM, _SETTINGS, _PING, _GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
_END_STREAM, _ACK, _END_HEADERS = 0x1, 0x1, 0x4


def _frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return (
        struct.pack(">I", len(payload))[1:]
        + bytes([kind, flags])
        + struct.pack(">I", stream_id)
        + payload
    )


def _literal(name: str, value: str) -> bytes:
    """HPACK literal header field without indexing, no Huffman (RFC 7541 6.2.2)."""
    raw_name, raw_value = name.encode(), value.encode()
    # Longer strings would need HPACK's multi-byte length prefix.
    assert len(raw_name) < 127, name
    assert len(raw_value) < 127, value
    return b"\x00" + bytes([len(raw_name)]) + raw_name + bytes([len(raw_value)]) + raw_value


def call_headers(path: str) -> bytes:
    """The HPACK block (literals only) that opens a gRPC call to `path`."""
    return b"".join(
        _literal(name, value)
        for name, value in (
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        )
    )


class RawCaller:
    """One HTTP/2 connection to a gRPC server on loopback."""

    def __init__(self, port: int, *, answer_pings: bool = True) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        # Our SETTINGS (all defaults: 64 KiB windows), then an ACK of the server's, which
        # it sends first thing; an unacknowledged SETTINGS would end the connection.
        self._sock.sendall(_PREFACE + _frame(_SETTINGS, 0, 0) + _frame(_SETTINGS, _ACK, 0))
        self._sock.setblocking(False)
        self._answer_pings = answer_pings
        self._next_id = 1
        self._buffer = b""
        self.opened: list[int] = []
        self.answered: set[int] = set()
        self.refused: dict[int, int] = {}
        self.goaway = False
        self.closed = False

    def call(self, path: str, request: bytes | None) -> int:
        """Open a call; None sends the headers only, so the request never arrives."""
        stream_id = self._next_id
        self._next_id += 2
        headers = call_headers(path)
        frames = _frame(_HEADERS, _END_HEADERS, stream_id, headers)
        if request is not None:
            message = b"\x00" + struct.pack(">I", len(request)) + request
            frames += _frame(_DATA, _END_STREAM, stream_id, message)
        self._sock.setblocking(True)
        try:
            self._sock.sendall(frames)
        finally:
            self._sock.setblocking(False)
        self.opened.append(stream_id)
        return stream_id

    @property
    def settled(self) -> bool:
        """Every call was answered or refused, or the server dropped the connection."""
        if self.goaway or self.closed:
            return True
        return all(s in self.answered or s in self.refused for s in self.opened)

    def pump(self, wait_s: float = 0.0) -> None:
        """Read whatever the server sent, waiting at most `wait_s` for it."""
        if self.closed:
            return
        ready, _, _ = select.select([self._sock], [], [], wait_s)
        while ready:
            try:
                chunk = self._sock.recv(1 << 16)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self.closed = True
                break
            self._buffer += chunk
        self._parse()

    def pump_until(self, condition: Callable[[], bool], what: str, timeout: float) -> None:
        """Read from the server until `condition` holds; fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout}s: {what}")
            self.pump(0.05)

    def _parse(self) -> None:
        while len(self._buffer) >= 9:
            length = int.from_bytes(self._buffer[:3], "big")
            if len(self._buffer) < 9 + length:
                return
            kind, flags = self._buffer[3], self._buffer[4]
            stream_id = int.from_bytes(self._buffer[5:9], "big") & 0x7FFFFFFF
            payload = self._buffer[9 : 9 + length]
            self._buffer = self._buffer[9 + length :]
            if kind == _HEADERS:
                self.answered.add(stream_id)
            elif kind == _RST_STREAM:
                self.refused[stream_id] = int.from_bytes(payload[:4], "big")
            elif kind == _GOAWAY:
                self.goaway = True
            elif kind == _PING and not flags & _ACK and self._answer_pings:
                self._sock.setblocking(True)
                try:
                    self._sock.sendall(_frame(_PING, _ACK, 0, payload))
                finally:
                    self._sock.setblocking(False)

    def close(self) -> None:
        self._sock.close()
        self.closed = True


def settle(callers: list[RawCaller], timeout: float) -> None:
    """Pump every connection until each is settled; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not all(c.settled for c in callers):
        if time.monotonic() > deadline:
            states = [(len(c.opened), len(c.answered), len(c.refused)) for c in callers]
            raise AssertionError(f"calls not answered within {timeout}s: {states}")
        for caller in callers:
            caller.pump(0.01)
