"""Tokens made at test time, the config that holds their hashes, and a gateway with a
small known book to try every call against."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from execgw.client import ExecutionClient, Quote, limit, market
from execgw.server.clock import ManualClock
from execgw.server.journal import Journal, JournalRecord
from execgw.server.tokens import new_token, token_digest
from execgw.v1 import gateway_pb2_grpc, market_data_pb2_grpc

if TYPE_CHECKING:
    from tests.conftest import RunningGateway, make_config
else:
    from conftest import RunningGateway, make_config

INFY = "NSE:INFY"
# name -> (role, strategies)
CALLERS: dict[str, tuple[str, list[str]]] = {
    "strat-a": ("strategy", ["A"]),
    "strat-b": ("strategy", ["B"]),
    "ops": ("operator", []),
    "feed": ("market_data", []),
}
# Made once per test session, never written anywhere but the configs the tests write.
TOKENS: dict[str, str] = {name: new_token() for name in CALLERS}
# High enough that no test trips the per-token order rate unless it sets its own.
RELAXED_AUTH: dict[str, Any] = {"orders_per_second": 1e6, "order_burst": 1_000_000}

Metadata = tuple[tuple[str, str], ...]


def auth_section(**extra: Any) -> dict[str, Any]:
    """The `auth` config section for CALLERS, their hashes only."""
    tokens = []
    for name, (role, strategies) in CALLERS.items():
        entry: dict[str, Any] = {"name": name, "sha256": token_digest(TOKENS[name]), "role": role}
        if strategies:
            entry["strategies"] = strategies
        tokens.append(entry)
    return {"tokens": tokens, **RELAXED_AUTH, **extra}


def bearer(name: str) -> Metadata:
    return (("authorization", f"Bearer {TOKENS[name]}"),)


def client(target: str, name: str) -> ExecutionClient:
    return ExecutionClient(target, timeout=10.0, retries=0, auth=TOKENS[name])


@dataclass
class Stubs:
    gateway: gateway_pb2_grpc.ExecutionGatewayStub
    market: market_data_pb2_grpc.MarketDataStub


@contextmanager
def stubs(target: str) -> Iterator[Stubs]:
    with grpc.insecure_channel(target) as channel:
        yield Stubs(
            gateway_pb2_grpc.ExecutionGatewayStub(channel),
            market_data_pb2_grpc.MarketDataStub(channel),
        )


@dataclass
class Book:
    """The orders every test finds in place."""

    order_a: str  # resting, strategy A
    order_b: str  # resting, strategy B


def start_gateway(tmp_path: Path, clock: ManualClock, **overrides: Any) -> RunningGateway:
    auth = overrides.pop("auth", auth_section())
    return RunningGateway(make_config(tmp_path, auth=auth, **overrides), clock)


def place_book(target: str) -> Book:
    with client(target, "feed") as feed:
        assert feed.publish_quotes([Quote(symbol=INFY, ltp=1500.0)]) == 1
    with client(target, "strat-a") as a, client(target, "strat-b") as b:
        order_a = a.submit(limit(INFY, "BUY", 10, 1450.0, strategy_code="A", product="NRML"))
        order_b = b.submit(limit(INFY, "BUY", 10, 1450.0, strategy_code="B", product="NRML"))
        a.submit(market(INFY, "BUY", 5, strategy_code="A", product="NRML"))
    return Book(order_a.order_id, order_b.order_id)


def records_after(journal: Path, sequence: int) -> list[JournalRecord]:
    reader = Journal(journal, read_only=True)
    try:
        return reader.records_after(sequence, 10_000)
    finally:
        reader.close()


def head(journal: Path) -> int:
    reader = Journal(journal, read_only=True)
    try:
        return reader.head_sequence
    finally:
        reader.close()
