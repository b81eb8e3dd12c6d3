"""A live dry run never reaches the broker: the proof, through a real gateway.

The gateway runs `mode: live` with `execution.dry_run: true`, its broker root pointed at
a running Kite stand-in, and no Kite credentials in its environment. Every order type,
validity and product, and every RPC of both services, is exercised, with
`dry_run_fills: none` and `simulate`; then the stand-in must have recorded no request
of any kind. The journal and the order's span must meanwhile hold, field by field, the
place_order call that was not made.

Also: `mode: live` without credentials and without dry_run refuses to start, naming the
missing variables and never printing a secret.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from execgw.client import ExecutionClient, OrderStatus, limit, market, stop
from execgw.server.cli import ServeExit
from execgw.server.clock import ManualClock
from execgw.server.events import CancelRequested, OrderSubmitted, VenueAccepted
from execgw.server.journal import Journal, JournalRecord
from execgw.server.telemetry import JsonLinesSpanExporter
from execgw.v1 import market_data_pb2, orders_pb2

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
    from tests.durability_helpers import ServerProcess, execgw_command, free_port
    from tests.kite_standin import KiteStandIn
else:
    from conftest import RunningGateway, make_config
    from durability_helpers import ServerProcess, execgw_command, free_port
    from kite_standin import KiteStandIn

KITE_ENV = ("KITE_API_KEY", "KITE_API_SECRET", "KITE_ACCESS_TOKEN")
STRATEGY = "DRY1"
PLACED = OrderStatus.Value("ORDER_STATUS_PLACED")
FILLED = OrderStatus.Value("ORDER_STATUS_FILLED")
CANCELLED = OrderStatus.Value("ORDER_STATUS_CANCELLED")
START_QUOTES = {"NSE:INFY": 1500.0, "NSE:TCS": 4100.0, "NSE:SBIN": 820.0}
# market_protection per run, to show the config's value is what would be sent.
PROTECTION = {"none": -1.0, "simulate": 2.5}
PROTECTION_TEXT = {"none": "-1", "simulate": "2.5"}


@dataclass(frozen=True)
class Case:
    client_order_id: str
    intent: orders_pb2.OrderIntent
    # KiteConnect.place_order's keyword arguments as the live venue would send them;
    # MARKET and SL-M also get market_protection (per run).
    request: dict[str, Any]
    # Status with `simulate` right after SubmitOrder, and at the end of the run.
    simulated: tuple[int, int]


def _kite(tag: str, symbol: str, **fields: Any) -> dict[str, Any]:
    return {"variety": "regular", "exchange": "NSE", "tradingsymbol": symbol, "tag": tag, **fields}


# Every order type, both validities, every product. The tags are literal on purpose: an
# order is found again at the broker by its tag (after a crash, after an upgrade), so
# their derivation from (strategy_code, client_order_id) must never change.
CASES = (
    Case(
        "dry-market-mis-day",
        market("NSE:INFY", "BUY", 10, strategy_code=STRATEGY, product="MIS"),
        _kite(
            "EGLKPYTEWUU4TC5POLWB",
            "INFY",
            transaction_type="BUY",
            quantity=10,
            product="MIS",
            order_type="MARKET",
            validity="DAY",
        ),
        (FILLED, FILLED),
    ),
    Case(
        "dry-limit-nrml-day",
        limit("NSE:INFY", "BUY", 5, Decimal("1490.05"), strategy_code=STRATEGY, product="NRML"),
        _kite(
            "EGNWOYRLYJ6GRI2FLDHR",
            "INFY",
            transaction_type="BUY",
            quantity=5,
            product="NRML",
            order_type="LIMIT",
            validity="DAY",
            price="1490.05",
        ),
        (PLACED, FILLED),
    ),
    Case(
        "dry-limit-cnc-ioc",
        # A float price: snapped to the tick, and sent as the tick's exact text.
        limit("NSE:TCS", "BUY", 3, 4090.1, strategy_code=STRATEGY, product="CNC", validity="IOC"),
        _kite(
            "EGYMGJ3T3BBIWYB76YD2",
            "TCS",
            transaction_type="BUY",
            quantity=3,
            product="CNC",
            order_type="LIMIT",
            validity="IOC",
            price="4090.10",
        ),
        # Not marketable: an IOC is cancelled at once.
        (CANCELLED, CANCELLED),
    ),
    Case(
        "dry-sl-mis-day",
        stop(
            "NSE:INFY",
            "BUY",
            4,
            Decimal("1510.00"),
            price=Decimal("1520.00"),
            strategy_code=STRATEGY,
            product="MIS",
        ),
        _kite(
            "EGVMP2CVLIMFHOY6IGJW",
            "INFY",
            transaction_type="BUY",
            quantity=4,
            product="MIS",
            order_type="SL",
            validity="DAY",
            price="1520.00",
            trigger_price="1510.00",
        ),
        (PLACED, FILLED),
    ),
    Case(
        "dry-slm-nrml-day",
        stop("NSE:INFY", "SELL", 2, Decimal("1480.05"), strategy_code=STRATEGY, product="NRML"),
        _kite(
            "EG2IEOAKFVJJKCANRLPG",
            "INFY",
            transaction_type="SELL",
            quantity=2,
            product="NRML",
            order_type="SL-M",
            validity="DAY",
            trigger_price="1480.05",
        ),
        (PLACED, FILLED),
    ),
    Case(
        "dry-market-cnc-ioc",
        market("NSE:SBIN", "SELL", 1, strategy_code=STRATEGY, product="CNC", validity="IOC"),
        _kite(
            "EG7GXLUWZNSKMGXF6V4Q",
            "SBIN",
            transaction_type="SELL",
            quantity=1,
            product="CNC",
            order_type="MARKET",
            validity="IOC",
        ),
        (FILLED, FILLED),
    ),
    Case(
        # Cancelled by CancelOrder.
        "dry-limit-mis-rest",
        limit("NSE:TCS", "SELL", 2, Decimal("4150.00"), strategy_code=STRATEGY, product="MIS"),
        _kite(
            "EGQDHREBAC7WT5JHUF7Q",
            "TCS",
            transaction_type="SELL",
            quantity=2,
            product="MIS",
            order_type="LIMIT",
            validity="DAY",
            price="4150.00",
        ),
        (PLACED, CANCELLED),
    ),
    Case(
        # Cancelled by HaltTrading.
        "dry-limit-cnc-rest",
        limit("NSE:SBIN", "BUY", 1, Decimal("800.00"), strategy_code=STRATEGY, product="CNC"),
        _kite(
            "EGREHDEOHDNM4EASC7D4",
            "SBIN",
            transaction_type="BUY",
            quantity=1,
            product="CNC",
            order_type="LIMIT",
            validity="DAY",
            price="800.00",
        ),
        (PLACED, CANCELLED),
    ),
)
CANCEL_CASE = "dry-limit-mis-rest"
HALT_CASE = "dry-limit-cnc-rest"


def expected_request(case: Case, fills: str) -> dict[str, Any]:
    request = dict(case.request)
    if request["order_type"] in ("MARKET", "SL-M"):
        request["market_protection"] = PROTECTION_TEXT[fills]
    return request


# -- spans, through the gateway's JSON-lines exporter ------------------------------


class _Switch(SpanExporter):
    """Forwards to the current test's exporter; the global provider outlives tests."""

    def __init__(self) -> None:
        self.target: SpanExporter | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.target is None:
            return SpanExportResult.SUCCESS
        return self.target.export(spans)


@pytest.fixture(scope="module")
def span_switch() -> Iterator[_Switch]:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    switch = _Switch()
    provider.add_span_processor(SimpleSpanProcessor(switch))
    yield switch
    switch.target = None


@pytest.fixture
def spans_file(tmp_path: Path, span_switch: _Switch) -> Iterator[Path]:
    path = tmp_path / "traces.jsonl"
    exporter = JsonLinesSpanExporter(path)
    span_switch.target = exporter
    try:
        yield path
    finally:
        span_switch.target = None
        exporter.shutdown()


def read_spans(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


# -- the gateway -------------------------------------------------------------------


@pytest.fixture
def standin() -> Iterator[KiteStandIn]:
    with KiteStandIn() as running:
        yield running


@pytest.fixture
def no_kite_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KITE_ENV:
        monkeypatch.delenv(name, raising=False)


def dry_run_config(tmp_path: Path, standin: KiteStandIn, fills: str) -> Any:
    return make_config(
        tmp_path,
        mode="live",
        execution={"dry_run": True, "dry_run_fills": fills},
        broker={"kite": {"root": standin.url, "market_protection": PROTECTION[fills]}},
    )


def journal_records(path: Path) -> list[JournalRecord]:
    journal = Journal(path, read_only=True)
    try:
        return [row.decode() for row in journal.rows()]
    finally:
        journal.close()


def replayed_events(client: ExecutionClient) -> list[orders_pb2.ExecutionEvent]:
    """Every event from sequence 1, up to the live point (the first heartbeat)."""
    events: list[orders_pb2.ExecutionEvent] = []
    stream = client.stream_fills(
        from_sequence=1,
        include_order_updates=True,
        include_risk_events=True,
        reconnect=False,
        heartbeats=True,
    )
    for event in stream:
        if event.WhichOneof("payload") == "heartbeat":
            break
        events.append(event)
    return events


def assert_dry(result: orders_pb2.ExecutionResult) -> None:
    assert result.dry_run is True, result
    assert result.order_id.endswith("-DRY"), result.order_id
    assert result.venue_order_id in ("", "DRY-" + result.order_id.removesuffix("-DRY"))


@pytest.mark.parametrize("fills", ["none", "simulate"])
def test_a_dry_run_exercises_everything_and_never_reaches_the_broker(
    tmp_path: Path,
    clock: ManualClock,
    standin: KiteStandIn,
    spans_file: Path,
    no_kite_credentials: None,
    fills: str,
) -> None:
    config = dry_run_config(tmp_path, standin, fills)
    running = RunningGateway(config, clock)
    client = ExecutionClient(running.target)
    simulate = fills == "simulate"
    try:
        # Dry run holds no broker link and no credentials at all.
        assert running.gateway.link is None
        assert running.gateway.credentials is None

        # MarketData: PublishQuotes, GetQuote.
        quotes = [market_data_pb2.Quote(symbol=s, ltp=p) for s, p in START_QUOTES.items()]
        assert client.publish_quotes(quotes) == len(quotes)
        assert client.get_quote("NSE:INFY").ltp == 1500.0

        # PreviewOrder: every check, nothing placed.
        preview = client.preview(market("NSE:INFY", "BUY", 1, strategy_code=STRATEGY))
        assert preview.accepted, preview

        # SubmitOrder, every type, validity and product.
        ids: dict[str, str] = {}
        for case in CASES:
            result = client.submit(case.intent, case.client_order_id)
            assert_dry(result)
            ids[case.client_order_id] = result.order_id
            want = case.simulated[0] if simulate else PLACED
            assert result.status == want, (case.client_order_id, result)
            if result.status == PLACED:
                assert result.venue_order_id.startswith("DRY-")
            # The same key answers the same order, and places nothing new.
            again = client.submit(case.intent, case.client_order_id)
            assert again.order_id == result.order_id

        # Quotes that trigger the stops and reach the resting limit.
        assert client.publish_quotes([market_data_pb2.Quote(symbol="NSE:INFY", ltp=1515.0)])
        assert client.publish_quotes([market_data_pb2.Quote(symbol="NSE:INFY", ltp=1480.0)])
        assert client.get_quote("NSE:INFY").ltp == 1480.0

        # CancelOrder.
        cancelled = client.cancel(ids[CANCEL_CASE])
        assert_dry(cancelled)
        assert cancelled.status == CANCELLED

        # GetOrder: with `none` every order not cancelled rests PLACED, unfilled (even
        # MARKET and IOC: nothing ever answers them); with `simulate` the quotes filled it.
        for case in CASES:
            order = client.get_order(ids[case.client_order_id])
            assert_dry(order)
            if case.client_order_id == CANCEL_CASE:
                assert order.status == CANCELLED
            elif not simulate or case.client_order_id == HALT_CASE:
                assert order.status == PLACED, (case.client_order_id, order)
                assert order.filled_qty == 0
            else:
                assert order.status == case.simulated[1], (case.client_order_id, order)

        # GetPositions.
        positions = {(p.symbol, p.product): p.net_qty for p in client.positions(STRATEGY)}
        if simulate:
            assert positions == {
                ("NSE:INFY", orders_pb2.PRODUCT_MIS): 14,
                ("NSE:INFY", orders_pb2.PRODUCT_NRML): 3,
                ("NSE:SBIN", orders_pb2.PRODUCT_CNC): -1,
            }
        else:
            assert all(qty == 0 for qty in positions.values()), positions

        # GetRiskState, HaltTrading (cancels what rests), ResumeTrading.
        risk = client.risk_state()
        assert risk is not None
        halted = client.halt("dry-run rehearsal", actor="test")
        assert halted is not None
        assert not client.preview(market("NSE:INFY", "BUY", 1, strategy_code=STRATEGY)).accepted
        resting_after_halt = [
            r for r in client.list_orders(strategy_code=STRATEGY) if r.status == PLACED
        ]
        assert resting_after_halt == []
        client.resume("rehearsal over", actor="test")
        assert client.preview(market("NSE:INFY", "BUY", 1, strategy_code=STRATEGY)).accepted

        # ListOrders: the day's book, all dry.
        book = client.list_orders()
        assert [r.order_id for r in book] == [ids[c.client_order_id] for c in CASES]
        for result in book:
            assert_dry(result)
        if simulate:
            final = {r.client_order_id: r.status for r in book}
            assert final == {c.client_order_id: c.simulated[1] for c in CASES}
        else:
            assert {r.status for r in book} == {CANCELLED}
            assert all(r.filled_qty == 0 for r in book)

        # StreamFills: every fill and order update of the day is marked as a dry run.
        events = replayed_events(client)
        kinds = {e.WhichOneof("payload") for e in events}
        assert "order_update" in kinds
        assert ("fill" in kinds) is simulate
        for event in events:
            kind = event.WhichOneof("payload")
            if kind == "order_update":
                assert_dry(event.order_update)
            elif kind == "fill":
                assert event.fill.order_id.endswith("-DRY")
                assert event.fill.venue_trade_id == ""
                assert_dry(event.order)
    finally:
        client.close()
        running.stop()

    # The proof: the broker was asked nothing at all, not even for its order book.
    assert standin.requests == []
    assert standin.order_calls() == []
    assert standin.orders() == []

    # The journal: the exact place_order call each order would have made, field by field.
    records = journal_records(Path(config.journal.path))
    submitted = {
        r.event.client_order_id: r.event for r in records if isinstance(r.event, OrderSubmitted)
    }
    assert set(submitted) == {c.client_order_id for c in CASES}
    for case in CASES:
        opened = submitted[case.client_order_id]
        assert opened.dry_run is True
        assert opened.venue == "kite-dry-run"
        assert opened.order_id == ids[case.client_order_id]
        assert opened.request == expected_request(case, fills), case.client_order_id
    acks = [r.event for r in records if isinstance(r.event, VenueAccepted)]
    assert {a.order_id for a in acks} == set(ids.values())
    assert all(a.venue_order_id.startswith("DRY-") for a in acks)
    cancels = {r.event.order_id: r.event for r in records if isinstance(r.event, CancelRequested)}
    assert cancels[ids[CANCEL_CASE]].request == {
        "variety": "regular",
        "order_id": "DRY-" + ids[CANCEL_CASE].removesuffix("-DRY"),
    }
    assert all("dry run" in c.message for c in cancels.values())
    for record in records:
        if record.order is not None:
            assert record.order.dry_run is True
            assert record.order.order_id.endswith("-DRY")

    # The trace: each order's span carries the same call as execgw.venue.request.*.
    order_spans = {
        span["attributes"]["execgw.order_id"]: span["attributes"]
        for span in read_spans(spans_file)
        if span["name"] == "execgw.order"
    }
    for case in CASES:
        attributes = order_spans[ids[case.client_order_id]]
        assert attributes["execgw.dry_run"] is True
        assert attributes["execgw.venue"] == "kite-dry-run"
        on_span = {
            key.removeprefix("execgw.venue.request."): value
            for key, value in attributes.items()
            if key.startswith("execgw.venue.request.")
        }
        assert on_span == {k: str(v) for k, v in expected_request(case, fills).items()}


def test_dry_run_serves_from_the_command_line_without_credentials(
    tmp_path: Path, standin: KiteStandIn, no_kite_credentials: None
) -> None:
    port = free_port()
    path = write_live_config(tmp_path, standin, port, dry_run=True)
    server = ServerProcess(path, port)
    try:
        server.wait_serving()
        with ExecutionClient(server.target) as client:
            client.publish_quotes([market_data_pb2.Quote(symbol="NSE:INFY", ltp=1500.0)])
            result = client.submit(
                market("NSE:INFY", "BUY", 1, strategy_code=STRATEGY, product="NRML"), "cli-1"
            )
        assert_dry(result)
        assert result.status == PLACED
        assert server.terminate() == ServeExit.STOPPED
    finally:
        server.close()
    assert "mode=live dry_run=true" in server.output
    assert "DRY RUN" in server.output
    assert standin.requests == []


# -- live without credentials ----------------------------------------------------------


def write_live_config(
    tmp_path: Path,
    standin: KiteStandIn,
    port: int,
    *,
    dry_run: bool = False,
    postback_listen: str | None = None,
) -> Path:
    kite: dict[str, Any] = {"root": standin.url}
    if postback_listen is not None:
        kite["postback_listen"] = postback_listen
    data = {
        "mode": "live",
        "listen": f"127.0.0.1:{port}",
        "journal": {"path": str(tmp_path / "live.db")},
        "market_data": {"source": "external"},
        "execution": {"dry_run": dry_run},
        "trading_day": {"mis_square_off": None},
        "broker": {"kite": kite},
        "server": {"shutdown_grace_s": 1.0},
    }
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def serve_to_exit(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*execgw_command(), "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )


def env_without_kite(**kite: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in KITE_ENV}
    env.update(kite)
    return env


@pytest.mark.parametrize(
    ("given", "postback", "missing"),
    [
        # Only the secret: key and token missing (the secret is not needed without postbacks).
        ({"KITE_API_SECRET": "s3cret-Value-0001"}, False, ["KITE_API_KEY", "KITE_ACCESS_TOKEN"]),
        # Postbacks need the secret to verify their checksums.
        (
            {"KITE_API_KEY": "apikey-Value-0002", "KITE_ACCESS_TOKEN": "tok-Value-0003"},
            True,
            ["KITE_API_SECRET"],
        ),
        # Blank is missing.
        (
            {"KITE_API_KEY": "apikey-Value-0004", "KITE_ACCESS_TOKEN": "  "},
            False,
            ["KITE_ACCESS_TOKEN"],
        ),
    ],
)
def test_live_without_credentials_refuses_to_start_naming_what_is_missing(
    tmp_path: Path,
    standin: KiteStandIn,
    given: dict[str, str],
    postback: bool,
    missing: list[str],
) -> None:
    path = write_live_config(
        tmp_path, standin, free_port(), postback_listen="127.0.0.1:0" if postback else None
    )
    result = serve_to_exit(path, env_without_kite(**given))
    output = result.stdout + result.stderr
    assert result.returncode == ServeExit.CONFIG, output
    assert "config error" in result.stderr
    assert set(re.findall(r"KITE_[A-Z_]+", result.stderr)) == set(missing)
    assert "dry_run" in result.stderr
    for value in given.values():
        if value.strip():
            assert value not in output
    assert result.stdout == ""
    # Refused before anything was opened, and the broker was never asked.
    assert not (tmp_path / "live.db").exists()
    assert standin.requests == []
