"""Resource limits (issue 8, defect 6): what one caller can make the gateway hold is
bounded, and a limit that is hit answers with a clear status.

Hostile callers are raw HTTP/2 connections (tests/h2_raw.py) that open calls and never
take delivery of the responses, or never send the request, or send all of a large
request but its last byte; silent TCP sockets; and a journal holding an event written
before text fields had caps. Waits poll a condition against a deadline.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from queue import Empty, Queue
from typing import TYPE_CHECKING, Any

import grpc
import pytest
import yaml

from execgw.client import (
    ExecgwError,
    ExecutionClient,
    ExecutionEvent,
    Quote,
    ResourceExhausted,
    Unavailable,
    limit,
    market,
)
from execgw.server.api.stream_limit import StreamLimitInterceptor
from execgw.server.clock import ManualClock
from execgw.server.config import ConfigError, parse_config
from execgw.server.events import TradingHalted
from execgw.server.journal import Journal, JournalRecord
from execgw.v1 import gateway_pb2

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.durability_helpers import RELAXED_EXECUTION, ServerProcess, free_port
    from tests.h2_raw import _PREFACE, RawCaller, _frame, call_headers, settle
else:
    from conftest import RunningGateway, make_config
    from durability_helpers import RELAXED_EXECUTION, ServerProcess, free_port
    from h2_raw import _PREFACE, RawCaller, _frame, call_headers, settle

MIB = 1024 * 1024
TIMEOUT_S = 10.0
# The `served` gateway's caps on calls per connection and on a request's size.
PER_CONNECTION = 40
PARTIAL_REQUEST_BYTES = 1 * MIB
INFY = "NSE:INFY"
LIST_ORDERS = "/execgw.v1.ExecutionGateway/ListOrders"
STREAM_FILLS = "/execgw.v1.ExecutionGateway/StreamFills"
GET_POSITIONS = "/execgw.v1.ExecutionGateway/GetPositions"
PUBLISH_QUOTES = "/execgw.v1.MarketData/PublishQuotes"
REFUSED_STREAM = 0x7

# What a caller that never reads can make the gateway hold, per call in progress
# (README, "Limits"; measured on this code: ~1.1-1.8 MiB, ~0.5-0.7 MiB, and the bytes
# plus ~40 KiB; the bound leaves room for a busier allocator). A StreamFills replay
# holds its batch of up to 500 journal records and a journal reader (of typical orders,
# as here); a ListOrders call holds its page (up to 1000 orders) as objects and as
# bytes; a call whose request is still arriving holds what came of it, up to
# server.max_receive_message_bytes. Everything else is tens of KiB.
STREAM_MIB = 2.5
UNARY_MIB = 1.5


def request_mib(request_bytes: int) -> float:
    """What a call holds while a request of `request_bytes` is still arriving."""
    return 1.05 * request_bytes / MIB + 0.1


def memory_bound_mib(
    streams: int, unary_calls: int, partial_requests: int = 0, request_bytes: int = 0
) -> float:
    """The README's bound on what non-reading callers add to the gateway's RSS: for
    `streams` replaying StreamFills and `unary_calls` ListOrders that are not read, and
    `partial_requests` calls each stalled on a request of `request_bytes`."""
    return (
        streams * STREAM_MIB
        + unary_calls * UNARY_MIB
        + partial_requests * request_mib(request_bytes)
    )


class PartialRequests:
    """One HTTP/2 connection whose calls announce a request of some size and send all of
    it but the last byte, as fast as the server's flow control lets them, then stall:
    gRPC opens a call's window to the size its message announces, so each call holds
    what it sent in the server for as long as the peer likes. Answers pings, so
    keepalive does not end it."""

    _DATA, _HEADERS, _RST_STREAM, _SETTINGS = 0x0, 0x1, 0x3, 0x4
    _PING, _GOAWAY, _WINDOW_UPDATE = 0x6, 0x7, 0x8
    _CHUNK = bytes(16_384)  # the largest frame a server must accept

    def __init__(self, port: int) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
        self._sock.sendall(_PREFACE + _frame(self._SETTINGS, 0, 0))
        self._buffer = b""
        self._initial_window = 65_535
        self._connection_window = 65_535
        self._windows: dict[int, int] = {}
        self._prefixes: dict[int, bytes] = {}  # a call's 5-byte gRPC prefix, sent first
        self._remaining: dict[int, int] = {}  # body bytes still to send (the last never is)
        self._next_id = 1
        self.ended: set[int] = set()  # answered (so refused) or reset by the server
        self.sent = 0
        self.closed = False

    def call(self, path: str, size: int) -> None:
        stream_id = self._next_id
        self._next_id += 2
        headers = call_headers(path)
        self._sock.sendall(_frame(self._HEADERS, 0x4, stream_id, headers))
        self._windows[stream_id] = self._initial_window
        self._prefixes[stream_id] = b"\x00" + struct.pack(">I", size)
        self._remaining[stream_id] = size - 1

    @property
    def sending(self) -> int:
        """Calls that still have bytes to send but the last."""
        return sum(1 for s, n in self._remaining.items() if n and s not in self.ended)

    def pump(self, wait_s: float) -> None:
        if self.closed:
            return
        ready, _, _ = select.select([self._sock], [], [], wait_s)
        if ready:
            chunk = self._sock.recv(1 << 16)
            if not chunk:
                self.closed = True
                return
            self._buffer += chunk
        self._parse()
        self._send()

    def _parse(self) -> None:
        while len(self._buffer) >= 9:
            length = int.from_bytes(self._buffer[:3], "big")
            if len(self._buffer) < 9 + length:
                return
            kind, flags = self._buffer[3], self._buffer[4]
            stream_id = int.from_bytes(self._buffer[5:9], "big") & 0x7FFFFFFF
            payload = self._buffer[9 : 9 + length]
            self._buffer = self._buffer[9 + length :]
            if kind == self._SETTINGS and not flags & 0x1:
                for at in range(0, len(payload), 6):
                    key = int.from_bytes(payload[at : at + 2], "big")
                    value = int.from_bytes(payload[at + 2 : at + 6], "big")
                    if key == 0x4:  # SETTINGS_INITIAL_WINDOW_SIZE
                        for sid in self._windows:
                            self._windows[sid] += value - self._initial_window
                        self._initial_window = value
                self._sock.sendall(_frame(self._SETTINGS, 0x1, 0))
            elif kind == self._WINDOW_UPDATE:
                increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
                if stream_id == 0:
                    self._connection_window += increment
                elif stream_id in self._windows:
                    self._windows[stream_id] += increment
            elif kind == self._PING and not flags & 0x1:
                self._sock.sendall(_frame(self._PING, 0x1, 0, payload))
            elif kind in (self._HEADERS, self._RST_STREAM):
                self.ended.add(stream_id)
            elif kind == self._GOAWAY:
                self.closed = True

    def _send(self) -> None:
        for stream_id, remaining in self._remaining.items():
            while remaining and stream_id not in self.ended:
                prefix = self._prefixes.get(stream_id, b"")
                room = min(self._windows[stream_id], self._connection_window, len(self._CHUNK))
                body = min(remaining, room - len(prefix))
                if body <= 0:
                    break
                data = prefix + self._CHUNK[:body]
                self._sock.sendall(_frame(self._DATA, 0, stream_id, data))
                self._prefixes.pop(stream_id, None)
                self._windows[stream_id] -= len(data)
                self._connection_window -= len(data)
                self.sent += len(data)
                remaining -= body
            self._remaining[stream_id] = remaining

    def close(self) -> None:
        self._sock.close()
        self.closed = True


def poll(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT_S) -> None:
    """Check `condition` until it holds; each check is a real call or a socket wait."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")


def _status_mib(pid: int, key: str) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no {key} for {pid}")


def _reset_peak(pid: int) -> None:
    # Writing 5 resets VmHWM to the current RSS (Linux >= 4.0), so the peak measured
    # next is the attack's alone.
    Path(f"/proc/{pid}/clear_refs").write_text("5", encoding="ascii")


def _place(client: ExecutionClient, count: int) -> None:
    assert client.publish_quotes([Quote(symbol=INFY, ltp=1500.0)]) == 1
    for i in range(count):
        intent = (
            limit(INFY, "BUY", 1, 1425.0, strategy_code=f"s{i % 4}", product="NRML")
            if i % 2
            else market(INFY, "BUY", 1, strategy_code=f"s{i % 4}", product="NRML")
        )
        client.submit(intent)


def _close(stream: Iterator[Any]) -> None:
    """End a stream_fills iterator (a generator: closing it cancels the call)."""
    close = getattr(stream, "close", None)
    if close is not None:
        close()


def _first_event(stream: Iterator[ExecutionEvent], timeout: float = TIMEOUT_S) -> object:
    """The stream's first event, or the exception it raised; fails on a hang (a client
    that reconnects forever never returns)."""
    box: Queue[object] = Queue()

    def read() -> None:
        try:
            box.put(next(stream))
        except Exception as e:
            box.put(e)

    threading.Thread(target=read, daemon=True).start()
    try:
        return box.get(timeout=timeout)
    except Empty:
        raise AssertionError(f"the stream gave nothing and no error within {timeout}s") from None


def _is_heartbeat(event: object) -> bool:
    return isinstance(event, ExecutionEvent) and event.HasField("heartbeat")


# -- the non-reading attack, against a real `execgw serve` ------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServerProcess]:
    port = free_port()
    config = {
        "mode": "paper",
        "listen": f"127.0.0.1:{port}",
        "journal": {"path": str(tmp_path / "journal.db")},
        "market_data": {"source": "external"},
        "execution": RELAXED_EXECUTION,
        "server": {
            "shutdown_grace_s": 1.0,
            "max_concurrent_rpcs": 128,
            "max_streams": 32,
            "max_streams_per_connection": PER_CONNECTION,
            "max_connections": 16,
            "max_receive_message_bytes": PARTIAL_REQUEST_BYTES,
        },
    }
    path = tmp_path / "execgw.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    server = ServerProcess(path, port)
    try:
        server.wait_serving()
        yield server
    finally:
        server.close()


def test_callers_that_never_read_hold_bounded_memory_and_honest_calls_go_on(
    served: ServerProcess,
) -> None:
    port = int(served.target.rpartition(":")[2])
    with ExecutionClient(served.target, timeout=TIMEOUT_S, retries=0) as honest:
        _place(honest, 300)  # ~600 journal events to replay, 300 orders to list
        # Warm every path the attack takes, so the baseline is not mostly imports.
        assert len(honest.list_orders()) == 300
        warm = honest.stream_fills(from_sequence=1, include_order_updates=True)
        assert not isinstance(_first_event(warm), Exception)
        _close(warm)
        baseline = _status_mib(served.pid, "VmRSS")
        _reset_peak(served.pid)

        streams, lists = RawCaller(port), RawCaller(port)
        partial = PartialRequests(port)
        try:
            replay = gateway_pb2.StreamFillsRequest(from_sequence=1, include_order_updates=True)
            page = gateway_pb2.ListOrdersRequest(page_size=1000)
            for _ in range(150):
                streams.call(STREAM_FILLS, replay.SerializeToString())
                lists.call(LIST_ORDERS, page.SerializeToString())
            for _ in range(PER_CONNECTION):
                partial.call(PUBLISH_QUOTES, PARTIAL_REQUEST_BYTES)
            settle([streams, lists], timeout=60)
            # Each connection holds at most 40 calls; most of the rest were refused (not
            # exactly 110: a call that ends early, refused or answered, frees its place).
            for caller in (streams, lists):
                codes = list(caller.refused.values())
                assert codes.count(REFUSED_STREAM) >= 50, caller.refused

            def partial_sent() -> bool:
                partial.pump(0.01)
                return partial.sending == 0 or partial.closed

            poll(partial_sent, "every partial request sent but its last byte", timeout=60)
            assert not partial.closed
            assert not partial.ended, "a partial request was refused"

            # Meanwhile an honest caller places, lists and reads quotes as usual...
            placed = honest.submit(market(INFY, "SELL", 1, strategy_code="honest", product="NRML"))
            assert placed.order_id
            assert len(honest.list_orders_page().results) == 100
            assert honest.get_quote(INFY).ltp == 1500.0
            # ...but finds every stream slot taken (32 of the 40 replays got one), and
            # after a few reconnects the client says so.
            refused = _first_event(honest.stream_fills(include_risk_events=True))
            assert isinstance(refused, ResourceExhausted), refused
            assert "server.max_streams" in str(refused)

            peak = _status_mib(served.pid, "VmHWM") - baseline
            bound = memory_bound_mib(
                streams=32,
                unary_calls=PER_CONNECTION,
                partial_requests=PER_CONNECTION,
                request_bytes=PARTIAL_REQUEST_BYTES,
            )
            print(
                f"\nnon-reading callers: 150 replaying StreamFills, 150 ListOrders(1000) and "
                f"{PER_CONNECTION} requests of {PARTIAL_REQUEST_BYTES // MIB} MiB less a byte, on "
                f"three connections; RSS baseline {baseline:.0f} MiB, peak +{peak:.0f} MiB "
                f"(bound +{bound:.0f} MiB), now {_status_mib(served.pid, 'VmRSS'):.0f} MiB"
            )
            assert peak <= bound
        finally:
            streams.close()
            lists.close()
            partial.close()

        # Once the attackers are gone, their slots are free again.
        def stream_accepted() -> bool:
            stream = honest.stream_fills(heartbeats=True, reconnect=False)
            try:
                return not isinstance(_first_event(stream), ExecgwError)
            finally:
                _close(stream)

        poll(stream_accepted, "a stream slot freed after the attackers left")
    assert served.alive()


# -- each limit answers as documented -------------------------------------------------


@pytest.fixture
def limited(tmp_path: Path, clock: ManualClock) -> Iterator[RunningGateway]:
    running = RunningGateway(
        make_config(
            tmp_path,
            server={
                "max_concurrent_rpcs": 8,
                "max_streams": 2,
                "max_streams_per_connection": 3,
                "max_receive_message_bytes": 64 * 1024,
            },
        ),
        clock,
    )
    try:
        yield running
    finally:
        running.stop()


def test_one_connection_cannot_take_every_call_slot(
    tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gRPC counts a call from its headers even if its request never comes, and nothing
    times such a call out: one connection holding as many as it may must leave room
    for everyone else (the default caps; before, the per-connection cap equalled the
    global one, and every order was refused for as long as the attacker liked)."""
    # The outermost interceptor sees each call as the server takes it in, request or not.
    started: list[str] = []
    intercept = StreamLimitInterceptor.intercept_service

    async def counting(
        self: StreamLimitInterceptor, continuation: Any, details: grpc.HandlerCallDetails
    ) -> Any:
        started.append(details.method)
        return await intercept(self, continuation, details)

    monkeypatch.setattr(StreamLimitInterceptor, "intercept_service", counting)
    running = RunningGateway(make_config(tmp_path), clock)
    per_connection = running.config.server.max_streams_per_connection
    attacker = RawCaller(running.port)
    try:
        for _ in range(per_connection + 10):
            attacker.call(GET_POSITIONS, None)
        attacker.pump_until(
            lambda: started.count(GET_POSITIONS) == per_connection and len(attacker.refused) == 10,
            f"the server holding {per_connection} calls and refusing 10",
            TIMEOUT_S,
        )
        assert set(attacker.refused.values()) == {REFUSED_STREAM}
        assert not attacker.answered  # the rest are all held, waiting for their requests

        # An honest client on its own connection: 20 orders at once, not one refused.
        with ExecutionClient(running.target, timeout=TIMEOUT_S, retries=0) as honest:
            assert honest.publish_quotes([Quote(symbol=INFY, ltp=1500.0)]) == 1

            def place(i: int) -> str:
                intent = market(INFY, "BUY", 1, strategy_code="honest", product="NRML")
                return honest.submit(intent, f"honest-{i}").order_id

            with ThreadPoolExecutor(max_workers=20) as pool:
                placed = list(pool.map(place, range(20)))
            assert len(set(placed)) == 20
            assert len(honest.list_orders(strategy_code="honest")) == 20
        attacker.pump(0)
        assert not attacker.closed
        assert not attacker.answered, "the attacker's calls were let go: nothing was tested"
    finally:
        attacker.close()
        running.stop()


def test_concurrent_call_caps_answer_resource_exhausted(limited: RunningGateway) -> None:
    port = limited.port
    # Calls whose request never comes stay in progress for as long as the peer likes.
    # It takes three connections to hold the server's 8 slots (3 calls each at most); a
    # fourth makes sure of it: a raw call that arrives while an honest probe holds a slot
    # is refused for good, and would leave a slot free for every later probe.
    callers = [RawCaller(port) for _ in range(4)]
    first = callers[0]
    try:
        for _ in range(10):
            first.call(GET_POSITIONS, None)
        # Three per connection: the other seven are refused at the HTTP/2 level.
        first.pump_until(lambda: len(first.refused) == 7, "7 calls refused", TIMEOUT_S)
        assert set(first.refused.values()) == {REFUSED_STREAM}
        for caller in callers[1:]:
            for _ in range(3):
                caller.call(GET_POSITIONS, None)

        with ExecutionClient(limited.target, timeout=TIMEOUT_S, retries=0) as honest:
            # 3 + 3 + 3 + 3 calls want the server's 8 slots: some are refused with
            # RESOURCE_EXHAUSTED, and every slot is taken.
            def refused() -> bool:
                try:
                    honest.positions()
                except ResourceExhausted:
                    return True
                return False

            poll(refused, "an honest call answered RESOURCE_EXHAUSTED")
            # Every slot taken is not yet every raw call seen: one still on its way (a
            # busy machine) would take a slot that `first` frees below. At least 4 of
            # the other 9 answered (refused) leaves at most 5 of them holding slots.
            others = callers[1:]

            def answered() -> int:
                for caller in others:
                    caller.pump(0.01)
                return sum(len(c.answered) + len(c.refused) for c in others)

            poll(lambda: answered() >= 4, "the other raw calls answered or holding a slot")
            first.close()

            def served() -> bool:
                try:
                    return honest.positions() == []
                except ResourceExhausted:
                    return False

            poll(served, "calls served again once the slots are free")
            # A request over max_receive_message_bytes is refused by its size, before it
            # is parsed. Asked once a slot is free: while every slot is held the call cap
            # answers first (seen on a busy CI machine).
            with pytest.raises(ResourceExhausted, match="larger than max"):
                honest.get_quote("NSE:" + "X" * 100_000)
    finally:
        for caller in callers:
            caller.close()


def test_stream_cap_answers_resource_exhausted_and_orders_still_flow(
    limited: RunningGateway,
) -> None:
    with ExecutionClient(limited.target, timeout=TIMEOUT_S, retries=0) as client:
        open_streams = [client.stream_fills(heartbeats=True) for _ in range(2)]
        for stream in open_streams:
            assert _is_heartbeat(_first_event(stream))
        # The third is refused; after a few reconnects the client says so, rather than
        # reconnecting forever.
        refused = _first_event(client.stream_fills(heartbeats=True))
        assert isinstance(refused, ResourceExhausted), refused
        assert str(refused).startswith("RESOURCE_EXHAUSTED: the gateway already has 2 streams")
        # Streams cannot take the slots orders need.
        assert client.publish_quotes([Quote(symbol=INFY, ltp=1500.0)]) == 1
        assert client.submit(market(INFY, "BUY", 1, strategy_code="s", product="NRML")).order_id

        _close(open_streams.pop())

        def accepted() -> bool:
            stream = client.stream_fills(heartbeats=True, reconnect=False)
            event = _first_event(stream)
            if isinstance(event, ExecgwError):
                return False
            open_streams.append(stream)
            return True

        poll(accepted, "a stream accepted once one closed")
        for stream in open_streams:
            _close(stream)


def test_a_stream_refused_for_capacity_gets_in_once_a_slot_frees(
    limited: RunningGateway,
) -> None:
    """A capacity refusal passes when other calls end: the client reconnects with
    backoff a few times before it gives up (see the test above), so a short burst does
    not end a strategy's stream."""
    refused = threading.Event()

    def backoff(seconds: float) -> None:
        refused.set()  # the client sleeps only after a refusal
        time.sleep(seconds)  # the client's own backoff, not a wait of this test

    with ExecutionClient(
        limited.target, timeout=TIMEOUT_S, retries=0, backoff=0.5, max_backoff=2.0, sleep=backoff
    ) as client:
        open_streams = [client.stream_fills(heartbeats=True) for _ in range(2)]
        for stream in open_streams:
            assert _is_heartbeat(_first_event(stream))
        waiting = client.stream_fills(heartbeats=True)
        box: Queue[object] = Queue()
        threading.Thread(target=lambda: box.put(_first_event(waiting)), daemon=True).start()
        assert refused.wait(TIMEOUT_S), "the third stream was never refused"
        _close(open_streams.pop())  # a slot frees while the third one backs off
        got_in = box.get(timeout=TIMEOUT_S * 2)
        assert _is_heartbeat(got_in), got_in
        for stream in (*open_streams, waiting):
            _close(stream)


def test_connections_beyond_the_cap_are_closed_until_one_frees(
    tmp_path: Path, clock: ManualClock
) -> None:
    running = RunningGateway(make_config(tmp_path, server={"max_connections": 2}), clock)
    silent = [socket.create_connection(("127.0.0.1", running.port)) for _ in range(2)]
    try:
        with ExecutionClient(running.target, timeout=TIMEOUT_S, retries=0) as honest:
            with pytest.raises(Unavailable):
                honest.positions()
            for sock in silent:
                sock.close()

            def served() -> bool:
                try:
                    return honest.positions() == []
                except Unavailable:
                    return False

            poll(served, "a connection accepted once the silent ones left")
    finally:
        for sock in silent:
            sock.close()
        running.stop()


def test_a_connection_that_never_starts_http2_is_closed_after_the_handshake_timeout(
    tmp_path: Path, clock: ManualClock
) -> None:
    running = RunningGateway(make_config(tmp_path, server={"handshake_timeout_s": 0.5}), clock)
    try:
        with socket.create_connection(("127.0.0.1", running.port)) as sock:
            opened = time.monotonic()
            deadline = opened + TIMEOUT_S
            # The server speaks first (its SETTINGS); then, unanswered, it hangs up.
            while True:
                readable, _, _ = select.select([sock], [], [], deadline - time.monotonic())
                assert readable, f"still open after {TIMEOUT_S} s"
                if not sock.recv(4096):
                    break
            # Closed by the timeout, not at once as an over-the-cap connection would be.
            assert time.monotonic() - opened >= 0.4
    finally:
        running.stop()


def test_a_peer_that_stops_answering_pings_is_dropped(tmp_path: Path, clock: ManualClock) -> None:
    running = RunningGateway(
        make_config(tmp_path, server={"keepalive_time_s": 1.0, "keepalive_timeout_s": 1.0}),
        clock,
    )
    caller = RawCaller(running.port, answer_pings=False)
    try:
        caller.call(GET_POSITIONS, None)  # a call in progress, holding its slot
        caller.pump_until(lambda: caller.goaway or caller.closed, "connection dropped", TIMEOUT_S)
    finally:
        caller.close()
        running.stop()


# -- the send limit -------------------------------------------------------------------


def test_an_event_over_the_send_limit_fails_its_stream_and_nothing_else(
    tmp_path: Path, clock: ManualClock
) -> None:
    """A journal from before text fields had caps holds a 5 MiB event. Sending it would
    exceed what clients accept (4 MiB): every resume would fail on it and the client
    would reconnect forever. The gateway refuses to send it instead, and says why."""
    journal_path = tmp_path / "journal.db"
    journal = Journal(journal_path)
    when = datetime(2026, 11, 27, 4, 0, tzinfo=UTC)
    halted = TradingHalted("poisoned", "ops", "x" * (5 * MIB), when)
    journal.append([JournalRecord(1, when, halted, None)])
    journal.close()
    running = RunningGateway(make_config(tmp_path), clock)
    try:
        with ExecutionClient(running.target, timeout=TIMEOUT_S, retries=0) as client:
            outcome = _first_event(client.stream_fills(from_sequence=1, include_risk_events=True))
            assert isinstance(outcome, ResourceExhausted), outcome
            assert "Sent message larger than max" in str(outcome)
            # Everything else goes on: live streams, orders.
            live = client.stream_fills(heartbeats=True)
            assert _is_heartbeat(_first_event(live))
            _close(live)
            assert client.publish_quotes([Quote(symbol=INFY, ltp=1500.0)]) == 1
    finally:
        running.stop()


# -- configuration ----------------------------------------------------------------------


def test_limits_are_configured_with_safe_defaults_and_checked() -> None:
    defaults = parse_config({}, source="test").server
    assert defaults.max_streams < defaults.max_concurrent_rpcs
    # One connection holds less than half of the calls: another one always finds room.
    assert 2 * defaults.max_streams_per_connection < defaults.max_concurrent_rpcs
    assert defaults.max_send_message_bytes == 4 * MIB  # what the clients accept
    with pytest.raises(ConfigError, match="max_workers was removed"):
        parse_config({"server": {"max_workers": 8}}, source="test")
    with pytest.raises(ConfigError, match=r"max_streams \(8\) must be below"):
        parse_config({"server": {"max_streams": 8, "max_concurrent_rpcs": 8}}, source="test")
    for per_connection in (128, 500):
        with pytest.raises(
            ConfigError,
            match=rf"^test: server: .*max_streams_per_connection \({per_connection}\) must be "
            r"below half of max_concurrent_rpcs \(256\)",
        ):
            parse_config({"server": {"max_streams_per_connection": per_connection}}, source="test")
    allowed = {"max_concurrent_rpcs": 1024, "max_streams_per_connection": 511}
    assert parse_config({"server": allowed}, source="test").server.max_concurrent_rpcs == 1024
