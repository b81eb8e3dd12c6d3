"""A local stand-in for Kite's WebSocket ticker, speaking its binary protocol.

In: the handshake's `api_key` and `access_token` query parameters (checked), and the
JSON messages `{"a": "subscribe" | "unsubscribe", "v": [tokens]}` and
`{"a": "mode", "v": [mode, [tokens]]}`. Out: binary frames of tick packets, each token
in the mode it is subscribed in (quote until a mode message says otherwise, as Kite
does), laid out as the SDK's `KiteTicker._parse_binary` reads them.

Ticks are built from the published `ticker_*.json` bodies (tests/fixtures/kite/). The
stand-in can also drop the connection, go silent, refuse handshakes and send a
malformed frame. Tests drive it from their own thread; run by hand it streams moving
ticks for a few symbols:

    .venv/bin/python tests/kite_ticker_standin.py --port 8765 --rate 5

and a gateway with `market_data: {source: kite, kite: {ws_root: "ws://127.0.0.1:8765"}}`
(KITE_API_KEY=key KITE_ACCESS_TOKEN=token) reads them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

FIXTURES = Path(__file__).parent / "fixtures" / "kite"

# Segment numbers (the low byte of a token) and the price exponent of each.
SEGMENT_NSE = 1
SEGMENT_CDS = 3
SEGMENT_BSE = 4
SEGMENT_BCD = 6
SEGMENT_INDICES = 9
SEGMENT_NCO = 12

# 408065 is INFY on NSE in the mocks; the others follow Kite's token layout
# (exchange token << 8 | segment).
INFY_TOKEN = 408065
TCS_TOKEN = 2953217
SENSEX_TOKEN = 265  # BSE's SENSEX index: segment 9
USDINR_CDS_TOKEN = (1612 << 8) | SEGMENT_CDS
USDINR_BCD_TOKEN = (1613 << 8) | SEGMENT_BCD


def price_exponent(token: int) -> int:
    segment = token & 0xFF
    if segment == SEGMENT_CDS:
        return 7
    if segment in (SEGMENT_BCD, SEGMENT_NCO):
        return 4
    return 2


@dataclass(frozen=True, slots=True)
class Level:
    price: Decimal
    quantity: int
    orders: int


@dataclass(frozen=True, slots=True)
class TickSpec:
    """What one packet says, in rupees; the encoder turns prices into integer units."""

    token: int
    last_price: Decimal
    last_quantity: int = 0
    average_price: Decimal = Decimal(0)
    volume: int = 0
    buy_quantity: int = 0
    sell_quantity: int = 0
    open: Decimal = Decimal(0)
    high: Decimal = Decimal(0)
    low: Decimal = Decimal(0)
    close: Decimal = Decimal(0)
    # Epoch seconds.
    last_trade_time: int = 0
    oi: int = 0
    oi_day_high: int = 0
    oi_day_low: int = 0
    timestamp: int = 0
    buy: tuple[Level, ...] = ()
    sell: tuple[Level, ...] = ()


def _dec(value: Any) -> Decimal:
    # The JSON numbers are the decimal text the SDK printed: read them as written.
    return Decimal(str(value))


def _epoch(text: str | None) -> int:
    return 0 if not text else int(datetime.fromisoformat(text).timestamp())


def tick_from_fixture(mode: str, token: int | None = None, **changes: Any) -> TickSpec:
    """The tick of tests/fixtures/kite/ticker_<mode>.json, for `token` if given."""
    body = json.loads((FIXTURES / f"ticker_{mode}.json").read_text(encoding="utf-8"))
    ohlc = body.get("ohlc", {})
    depth = body.get("depth", {})
    spec = TickSpec(
        token=body["instrument_token"] if token is None else token,
        last_price=_dec(body["last_price"]),
        last_quantity=body.get("last_quantity", 0),
        average_price=_dec(body.get("average_price", 0)),
        volume=body.get("volume", 0),
        buy_quantity=body.get("buy_quantity", 0),
        sell_quantity=body.get("sell_quantity", 0),
        open=_dec(ohlc.get("open", 0)),
        high=_dec(ohlc.get("high", 0)),
        low=_dec(ohlc.get("low", 0)),
        close=_dec(ohlc.get("close", 0)),
        last_trade_time=_epoch(body.get("last_trade_time")),
        oi=body.get("oi", 0),
        oi_day_high=body.get("oi_day_high", 0),
        oi_day_low=body.get("oi_day_low", 0),
        timestamp=_epoch(body.get("timestamp")),
        buy=tuple(
            Level(_dec(d["price"]), d["quantity"], d["orders"]) for d in depth.get("buy", [])
        ),
        sell=tuple(
            Level(_dec(d["price"]), d["quantity"], d["orders"]) for d in depth.get("sell", [])
        ),
    )
    return replace(spec, **changes)


def _units(token: int, rupees: Decimal) -> int:
    scaled = rupees.scaleb(price_exponent(token))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{rupees} is not a whole number of units for token {token}")
    return int(scaled)


def encode_packet(spec: TickSpec, mode: str) -> bytes:
    """One packet in `mode` (ltp, quote, full); indices get their own 28/32-byte layout."""
    token = spec.token

    def u(rupees: Decimal) -> int:
        return _units(token, rupees)

    ltp = u(spec.last_price)
    if mode == "ltp":
        return struct.pack(">II", token, ltp)
    if token & 0xFF == SEGMENT_INDICES:
        close = u(spec.close)
        change = 0 if close == 0 else (ltp - close) * 100 // close  # unused by readers
        body = struct.pack(
            ">7I", token, ltp, u(spec.high), u(spec.low), u(spec.open), close, change & 0xFFFFFFFF
        )
        return body if mode == "quote" else body + struct.pack(">I", spec.timestamp)
    body = struct.pack(
        ">11I",
        token,
        ltp,
        spec.last_quantity,
        u(spec.average_price),
        spec.volume,
        spec.buy_quantity,
        spec.sell_quantity,
        u(spec.open),
        u(spec.high),
        u(spec.low),
        u(spec.close),
    )
    if mode == "quote":
        return body
    body += struct.pack(
        ">5I", spec.last_trade_time, spec.oi, spec.oi_day_high, spec.oi_day_low, spec.timestamp
    )
    for side in (spec.buy, spec.sell):
        levels = list(side[:5]) + [Level(Decimal(0), 0, 0)] * (5 - len(side[:5]))
        for level in levels:
            body += struct.pack(">IIH2x", level.quantity, u(level.price), level.orders)
    return body


def encode_frame(packets: Iterable[bytes]) -> bytes:
    packets = list(packets)
    out = struct.pack(">H", len(packets))
    for packet in packets:
        out += struct.pack(">H", len(packet)) + packet
    return out


def malformed_frame() -> bytes:
    """Declares two packets and ends inside the first."""
    return struct.pack(">HH", 2, 44) + b"\x00" * 10


@dataclass(slots=True)
class Connection:
    """One accepted connection: what it subscribed, and every message it sent."""

    number: int
    modes: dict[int, str] = field(default_factory=dict)
    messages: list[Any] = field(default_factory=list)
    closed: bool = False


class KiteTickerStandIn:
    """The stand-in, served from its own thread and event loop."""

    def __init__(self, *, api_key: str = "key", access_token: str = "token", port: int = 0) -> None:
        self.api_key = api_key
        self.access_token = access_token
        self.connections: list[Connection] = []
        # Handshakes answered with an HTTP error, and how many more to refuse.
        self.refused = 0
        self._refuse_next = 0
        self._silent = False
        self._changed = threading.Condition()
        self._current: ServerConnection | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: Server = self._call(self._serve(port))
        self.port: int = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}"

    # -- control, from any thread -----------------------------------------

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()
            await self._server.wait_closed()

        try:
            self._call(close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    def send(self, *specs: TickSpec) -> int:
        """One frame with a packet per subscribed spec, in its token's mode; how many."""
        return int(self._call(self._send_ticks(list(specs))))

    def send_raw(self, frame: bytes | str) -> None:
        self._call(self._send_raw(frame))

    def blast(self, frames: list[bytes]) -> None:
        """Send prepared frames back to back, as fast as the socket takes them."""

        async def send_all() -> None:
            for frame in frames:
                await self._send_raw(frame)

        self._call(send_all())

    def stream(self, make_frame: Callable[[int], bytes], interval_s: float) -> Callable[[], None]:
        """Send make_frame(n) every interval_s from the stand-in's loop; returns a stop."""

        async def run() -> None:
            n = 0
            while True:
                await self._send_raw(make_frame(n))
                n += 1
                await asyncio.sleep(interval_s)

        task: Future[None] = asyncio.run_coroutine_threadsafe(run(), self._loop)

        def stop() -> None:
            task.cancel()  # thread-safe: cancels the task on the stand-in's loop

        return stop

    def drop(self) -> None:
        """Cut the current connection without a close handshake, as a network loss does."""

        async def abort() -> None:
            if self._current is not None:
                self._current.transport.abort()

        self._call(abort())

    def refuse_next(self, count: int) -> None:
        """Answer the next `count` handshakes with HTTP 503."""
        with self._changed:
            self._refuse_next = count

    def go_silent(self, silent: bool = True) -> None:
        """Stop sending anything (ticks included) on the open connection, while keeping it."""
        self._silent = silent

    def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Block until `predicate` holds (checked on every change), or fail naming `what`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"stand-in: timed out waiting for {what}")
                self._changed.wait(left)

    def wait_subscribed(
        self, tokens: Iterable[int], *, connection: int, mode: str = "full"
    ) -> None:
        """Until connection number `connection` (1-based) has every token in `mode`."""
        wanted = set(tokens)

        def done() -> bool:
            if len(self.connections) < connection:
                return False
            modes = self.connections[connection - 1].modes
            return all(modes.get(t) == mode for t in wanted)

        self.wait_for(f"connection {connection} to subscribe {sorted(wanted)} in {mode}", done)

    # -- the server -------------------------------------------------------

    def _call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=30)

    async def _serve(self, port: int) -> Server:
        return await serve(
            self._handle, "127.0.0.1", port, process_request=self._check, compression=None
        )

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        with self._changed:
            if self._refuse_next > 0:
                self._refuse_next -= 1
                self.refused += 1
                self._changed.notify_all()
                return _response(503, "stand-in refuses this handshake\n")
        query = parse_qs(urlsplit(request.path).query)
        if query.get("api_key") != [self.api_key] or query.get("access_token") != [
            self.access_token
        ]:
            return _response(403, "bad api_key or access_token\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        with self._changed:
            record = Connection(len(self.connections) + 1)
            self.connections.append(record)
            self._current = ws
            self._silent = False
            self._changed.notify_all()
        try:
            async for message in ws:
                self._on_message(record, message)
        except ConnectionClosed:
            pass
        finally:
            with self._changed:
                record.closed = True
                self._changed.notify_all()

    def _on_message(self, record: Connection, message: str | bytes) -> None:
        body = json.loads(message)
        with self._changed:
            record.messages.append(body)
            action, value = body.get("a"), body.get("v")
            if action == "subscribe":
                for token in value:
                    record.modes.setdefault(token, "quote")
            elif action == "unsubscribe":
                for token in value:
                    record.modes.pop(token, None)
            elif action == "mode":
                mode, tokens = value
                for token in tokens:
                    if token in record.modes:
                        record.modes[token] = mode
            self._changed.notify_all()

    async def _send_ticks(self, specs: list[TickSpec]) -> int:
        ws, record = self._current, self.connections[-1] if self.connections else None
        if ws is None or record is None or self._silent:
            return 0
        packets = [
            encode_packet(s, record.modes[s.token]) for s in specs if s.token in record.modes
        ]
        if packets:
            await ws.send(encode_frame(packets))
        return len(packets)

    async def _send_raw(self, frame: bytes | str) -> None:
        if self._current is not None and not self._silent:
            await self._current.send(frame)


def _response(status: int, text: str) -> Response:
    body = text.encode()
    headers = Headers([("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return Response(status, "stand-in", headers, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--rate", type=float, default=1.0, help="frames per second")
    parser.add_argument("--api-key", default="key")
    parser.add_argument("--access-token", default="token")
    args = parser.parse_args()
    standin = KiteTickerStandIn(
        api_key=args.api_key, access_token=args.access_token, port=args.port
    )
    print(f"Kite ticker stand-in on {standin.url} (port {standin.port}); Ctrl-C stops")
    base = tick_from_fixture("full")
    step = 0
    try:
        while True:
            step += 1
            moved = base.last_price + Decimal("0.05") * (step % 20 - 10)
            sent = standin.send(replace(base, last_price=moved, volume=base.volume + step))
            print(f"tick {step}: {moved} to {sent} subscribed packets", flush=True)
            time.sleep(1 / args.rate)
    except KeyboardInterrupt:
        pass
    finally:
        standin.stop()


if __name__ == "__main__":
    main()
