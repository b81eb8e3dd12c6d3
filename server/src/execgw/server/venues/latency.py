"""Seeded latency between the gateway and the simulated exchange.

An order (or a cancel) reaches the exchange `insert` (`cancel`) milliseconds after it
is sent, and the report of a fill the exchange made reaches the gateway `fill`
milliseconds after the exchange made it; each plus a jitter drawn uniformly from
[0, jitter) by an RNG seeded with the seed, the order id (the fill id for a fill) and
the kind of message. The draw depends on nothing else, so a replay of the same orders
gives the same delays, also after a restart. Fill latency is on only when `fill` > 0:
jitter alone delays orders and cancels, as before fill latency existed, not reports.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Literal

Kind = Literal["insert", "cancel", "fill"]

_US_PER_MS = Decimal(1000)


@dataclass(frozen=True, slots=True)
class LatencyModel:
    insert_ms: Decimal = Decimal(0)
    cancel_ms: Decimal = Decimal(0)
    jitter_ms: Decimal = Decimal(0)
    seed: int = 0
    fill_ms: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        if min(self.insert_ms, self.cancel_ms, self.jitter_ms, self.fill_ms) < 0:
            raise ValueError("latencies must be >= 0")

    def _base(self, kind: Kind) -> Decimal:
        match kind:
            case "insert":
                return self.insert_ms
            case "cancel":
                return self.cancel_ms
            case "fill":
                return self.fill_ms

    def active(self, kind: Kind) -> bool:
        if kind == "fill":
            return self.fill_ms > 0
        return self._base(kind) > 0 or self.jitter_ms > 0

    def delay(self, kind: Kind, order_id: str) -> timedelta:
        """`order_id`: the fill id for a fill report."""
        ms = self._base(kind)
        if self.jitter_ms > 0:
            draw = random.Random(f"{self.seed}|{kind}|{order_id}").random()
            ms += self.jitter_ms * Decimal(repr(draw))
        # Whole microseconds, rounded down: datetimes hold no finer time.
        return timedelta(microseconds=int(ms * _US_PER_MS))
