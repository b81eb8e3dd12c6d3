"""Finished orders kept compact: the bytes the codec writes for them, plus the few fields
a listing filters on.

A finished order no longer changes, yet the day keeps every one of them for GetOrder,
ListOrders and idempotency. As a live Order (intent, Decimals, dicts) each costs about
3 KB; as its encoding about a tenth of that, so the ledger's memory follows the open
orders and stays small per finished one. The encoding is the snapshot's form of the
order, so a snapshot reuses it as it is.

Even compact, a day of finished orders grows with the day. So each snapshot moves the
orders finished since the one before into the journal's archive (ClosedOrderArchive,
journal side), in the transaction that stores it, and the ledger lets them go: in
memory stay the open orders and those finished since the last snapshot. The ledger
asks the archive for the rest, through the `Archive` protocol declared here, which
keeps it free of SQLite.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from datetime import datetime
from typing import NamedTuple, Protocol

from execgw.server import codec
from execgw.server.domain import Order, OrderStatus, RejectReason


class ListedKey(NamedTuple):
    """What a listing needs of a finished order's intent; one shared per (strategy,
    symbol), so a finished order keeps neither its intent nor copies of these strings."""

    strategy_code: str
    symbol: str


class ClosedOrder:
    """A finished order: its encoding, and the fields ListOrders, idempotency, the MIS
    square-off count and the rollover look at without decoding it."""

    __slots__ = (
        "body",
        "client_order_id",
        "created_at",
        "intent",
        "internal",
        "order_id",
        "reject_reason",
        "status",
    )

    def __init__(self, order: Order, body: bytes, intent: ListedKey) -> None:
        self.order_id = order.order_id
        self.client_order_id = order.client_order_id
        self.intent = intent
        self.status: OrderStatus = order.status
        self.created_at: datetime = order.created_at
        self.internal = order.internal
        self.reject_reason: RejectReason | None = order.reject_reason
        self.body = body

    @classmethod
    def of_archived(cls, row: ArchivedOrder) -> ClosedOrder:
        """The order as the archive holds it, the same fields as when it was archived."""
        closed = cls.__new__(cls)
        closed.order_id = row.order_id
        closed.client_order_id = row.client_order_id
        closed.intent = ListedKey(row.strategy_code, row.symbol)
        closed.status = OrderStatus(row.status)
        closed.created_at = datetime.fromisoformat(row.created_at)
        closed.internal = bool(row.internal)
        closed.reject_reason = (
            None if row.reject_reason is None else RejectReason(row.reject_reason)
        )
        closed.body = row.body
        return closed

    def archived(self, day: str) -> ArchivedOrder:
        return ArchivedOrder(
            order_id=self.order_id,
            day=day,
            strategy_code=self.intent.strategy_code,
            symbol=self.intent.symbol,
            client_order_id=self.client_order_id,
            status=self.status.value,
            internal=int(self.internal),
            created_at=self.created_at.isoformat(),
            reject_reason=None if self.reject_reason is None else self.reject_reason.value,
            body=self.body,
        )

    def decode(self) -> Order:
        """The order as it finished: a new object each time, so callers may keep it."""
        return codec.decode(self.body, Order)


class ArchivedOrder(NamedTuple):
    """A finished order as the archive stores it: one row, in its columns' order."""

    order_id: str
    # The trading day (ISO date, "" before the first rollover; Ledger.day): the archive
    # keeps past days, and the working day sees only its own orders.
    day: str
    strategy_code: str
    symbol: str
    client_order_id: str
    status: str
    internal: int
    created_at: str
    reject_reason: str | None
    body: bytes


class ArchiveBatch(NamedTuple):
    """What a snapshot moves to the archive: finished orders of one day (perhaps
    none: the snapshot still names the day the archive's count is of)."""

    day: str
    rows: list[ArchivedOrder]


# An idempotency key: (strategy_code, client_order_id).
ClientKey = tuple[str, str]

_HASH_BITS = (1 << 64) - 1


class ClientKeyFilter:
    """The idempotency keys of the day's archived orders, as a Bloom filter: it may say
    a key is there when it is not, never the other way round.

    A new order's key is almost never archived, and asking the archive to be sure cost
    a SQLite read on the order path for every order (about 16% of the core's time per
    order under load). The filter answers that in memory (under 1 µs), at 4 to 12 bytes
    per archived key against the ~1 KB an archived order took in memory: memory still
    follows the open orders, not the day. Blocked (each key's bits in one 64-bit word),
    so a check reads one word per layer; layers double in size as keys come, so a day
    of any length keeps its false positives well under 1% (0.2% at 200,000 keys). Keys
    hash with the process's own randomized hash: a caller cannot pick keys that
    collide."""

    # 32 bits a key, 6 of them set per key: about 0.04% false positives in a full layer.
    _KEYS_PER_WORD = 2
    _FIRST_LAYER_KEYS = 16_384

    __slots__ = ("_capacity", "_count", "_layers")

    def __init__(self, keys: Iterable[ClientKey] = ()) -> None:
        self._layers: list[array[int]] = []
        self._capacity = 0
        self._count = 0
        # A start adds a whole day's keys: the loop of add(), with the layer and its
        # room looked up once per layer rather than per key (~1.6 -> ~0.75 µs a key).
        # The first layer comes with the first key: a filter of no keys (a new day's)
        # holds no words.
        layer, mask, room = array("Q"), 0, 0
        for key in keys:
            if not room:
                self._count = self._capacity
                layer, mask, room = self._layers_room()
            hashed = hash(key) & _HASH_BITS
            layer[hashed & mask] |= _bits(hashed)
            room -= 1
        self._count = self._capacity - room

    def _layers_room(self) -> tuple[array[int], int, int]:
        """The layer keys go to, its word mask, and how many more keys it takes: a new
        layer once the last is full. Each holds as many keys as all before it, so the
        capacity doubles and every word count is a power of two (16,384 keys, 16,384,
        32,768, ...)."""
        if self._count >= self._capacity:
            keys = max(self._FIRST_LAYER_KEYS, self._capacity)
            self._layers.append(array("Q", bytes(8 * (keys // self._KEYS_PER_WORD))))
            self._capacity += keys
        layer = self._layers[-1]
        return layer, len(layer) - 1, self._capacity - self._count

    def add(self, key: ClientKey) -> None:
        layer, mask, _ = self._layers_room()
        self._count += 1
        hashed = hash(key) & _HASH_BITS
        # The low bits pick the word (word counts are powers of two).
        layer[hashed & mask] |= _bits(hashed)

    def might_hold(self, key: ClientKey) -> bool:
        hashed = hash(key) & _HASH_BITS
        bits = _bits(hashed)
        for layer in self._layers:  # noqa: SIM110 (any() over a generator costs more)
            if layer[hashed & (len(layer) - 1)] & bits == bits:
                return True
        return False

    def __len__(self) -> int:
        return self._count


def _bits(hashed: int) -> int:
    """Six bit positions in a word, from the hash's high bits (the low ones pick the
    word, in layers of up to 2**28 words)."""
    return (
        (1 << (hashed >> 58))
        | (1 << ((hashed >> 52) & 63))
        | (1 << ((hashed >> 46) & 63))
        | (1 << ((hashed >> 40) & 63))
        | (1 << ((hashed >> 34) & 63))
        | (1 << ((hashed >> 28) & 63))
    )


class Archive(Protocol):
    """Finished orders a snapshot moved out of memory, of one day at a time.

    Lookups raise when a row is not what the journal stored (its seal fails)."""

    def get(self, day: str, order_id: str) -> ClosedOrder | None: ...

    def order_id_for_client(
        self, day: str, strategy_code: str, client_order_id: str
    ) -> str | None: ...

    def after(
        self, day: str, after: str, *, strategy_code: str, symbol: str, limit: int
    ) -> list[ClosedOrder]:
        """Up to `limit` orders with ids above `after`, ascending; with a strategy_code
        or symbol, only that strategy's or symbol's."""
        ...

    def client_keys(self, day: str) -> Iterable[ClientKey]:
        """The idempotency key of every order of `day` it holds that has one (for
        ClientKeyFilter: a hint, so not checked against the rows' seals; a lookup it
        leads to is)."""
        ...


class EmptyArchive:
    """No journal, or nothing archived yet."""

    def get(self, day: str, order_id: str) -> ClosedOrder | None:
        return None

    def order_id_for_client(self, day: str, strategy_code: str, client_order_id: str) -> str | None:
        return None

    def after(
        self, day: str, after: str, *, strategy_code: str, symbol: str, limit: int
    ) -> list[ClosedOrder]:
        return []

    def client_keys(self, day: str) -> Iterable[ClientKey]:
        return ()


EMPTY_ARCHIVE: Archive = EmptyArchive()
