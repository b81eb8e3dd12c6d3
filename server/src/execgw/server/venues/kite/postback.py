"""Kite's order-update postbacks: a small HTTP endpoint that takes Kite's JSON POSTs.

Each postback carries `checksum` = SHA-256 hex of order_id + order_timestamp +
api_secret. One that does not match is refused (403) and logged, and changes nothing:
anyone can POST to this port, only Kite knows the secret. Bounded in every way an
HTTP request can grow (header size, body size, time to send it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 8 * 1024
MAX_BODY_BYTES = 64 * 1024
READ_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 64

PostbackHandler = Callable[[dict[str, Any]], Awaitable[None]]


def postback_checksum(order_id: str, order_timestamp: str, api_secret: str) -> str:
    return hashlib.sha256(f"{order_id}{order_timestamp}{api_secret}".encode()).hexdigest()


def checksum_valid(body: dict[str, Any], api_secret: str) -> bool:
    given = body.get("checksum")
    if not isinstance(given, str):
        return False
    expected = postback_checksum(
        str(body.get("order_id") or ""), str(body.get("order_timestamp") or ""), api_secret
    )
    # Bytes, so a checksum with characters outside ASCII is a mismatch, not a TypeError.
    return hmac.compare_digest(given.lower().encode("utf-8"), expected.encode("ascii"))


class PostbackServer:
    def __init__(self, *, listen: str, api_secret: str, handler: PostbackHandler) -> None:
        self._host, _, port = listen.rpartition(":")
        self._host = self._host.strip("[]")
        self._port = int(port)
        self._secret = api_secret
        self._handler = handler
        self._server: asyncio.Server | None = None
        self.refused = 0
        self.accepted = 0
        # Connections served at once: a flood of slow senders costs at most this many.
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        # Verified postbacks being applied, after Kite already got its 200.
        self._work: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self._host, self._port, limit=MAX_HEADER_BYTES
        )

    async def stop(self) -> None:
        for task in list(self._work):
            task.cancel()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._slots.locked():
            writer.close()
            return
        async with self._slots:
            await self._serve_one(reader, writer)

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, text = await asyncio.wait_for(self._answer(reader), READ_TIMEOUT_S)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            status, text = 400, "incomplete request"
        except Exception:
            log.exception("postback handling failed")
            status, text = 500, "internal error"
        body = text.encode()
        reason = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found"}.get(
            status, "Error"
        )
        with contextlib.suppress(Exception):
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, str]:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_HEADER_BYTES:
            return 400, "headers too large"
        lines = head.decode("latin-1").split("\r\n")
        method = lines[0].partition(" ")[0]
        if method != "POST":
            return 404, "only POST"
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        try:
            length = int(headers.get("content-length", ""))
        except ValueError:
            return 400, "Content-Length required"
        if not 0 < length <= MAX_BODY_BYTES:
            return 400, f"body must be 1..{MAX_BODY_BYTES} bytes"
        raw = await reader.readexactly(length)
        try:
            body = json.loads(raw)
        except ValueError:
            return 400, "body is not JSON"
        if not isinstance(body, dict):
            return 400, "body is not a JSON object"
        if not checksum_valid(body, self._secret):
            self.refused += 1
            # The order id only: a forged body may carry anything.
            log.warning(
                "postback refused: bad checksum (order_id %r)", str(body.get("order_id"))[:32]
            )
            return 403, "bad checksum"
        self.accepted += 1
        # Answered at once; applied in the background (it may wait for a trades call).
        # A postback lost here is found by the next poll of the order book.
        task = asyncio.create_task(self._apply(body))
        self._work.add(task)
        task.add_done_callback(self._work.discard)
        return 200, "ok"

    async def _apply(self, body: dict[str, Any]) -> None:
        try:
            await self._handler(body)
        except Exception:
            log.exception("applying a postback failed; the next poll catches up")
