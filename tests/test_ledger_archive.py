"""A ledger whose finished orders snapshots move to the archive answers exactly as one that
keeps every order in memory: by id, by client_order_id, in listings (filters and cursors),
and in its whole state, event by event, through rollovers and events about orders that
were archived already. The archive here is a dict in the archive's row form; the journal's
own (SQLite, sealed) is tested end to end in test_order_archive.py."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from execgw.server import codec
from execgw.server.closed_orders import ArchivedOrder, ClientKeyFilter, ClosedOrder
from execgw.server.domain import (
    Fill,
    OrderIntent,
    OrderType,
    Product,
    Quote,
    RejectReason,
    Side,
    Validity,
)
from execgw.server.events import (
    DayRolledOver,
    Event,
    OrderAccepted,
    OrderCancelled,
    OrderFilled,
    OrderRejected,
    OrderTriggered,
)
from execgw.server.ledger import Ledger, LedgerError

START = datetime(2026, 12, 3, 4, 0, tzinfo=UTC)
STRATEGIES = ("s1", "s2")
SYMBOLS = ("NSE:INFY", "NSE:TCS")


class DictArchive:
    """The Archive protocol over a dict of rows, as the journal stores them."""

    def __init__(self) -> None:
        self.rows: dict[str, ArchivedOrder] = {}

    def store(self, rows: list[ArchivedOrder]) -> None:
        self.rows.update((row.order_id, row) for row in rows)

    def get(self, day: str, order_id: str) -> ClosedOrder | None:
        row = self.rows.get(order_id)
        return None if row is None or row.day != day else ClosedOrder.of_archived(row)

    def order_id_for_client(self, day: str, strategy_code: str, client_order_id: str) -> str | None:
        found = [
            r.order_id
            for r in self.rows.values()
            if (r.day, r.strategy_code, r.client_order_id) == (day, strategy_code, client_order_id)
        ]
        return max(found, default=None)

    def after(
        self, day: str, after: str, *, strategy_code: str, symbol: str, limit: int
    ) -> list[ClosedOrder]:
        rows = sorted(
            r
            for r in self.rows.values()
            if r.day == day
            and r.order_id > after
            and (not strategy_code or r.strategy_code == strategy_code)
            and (not symbol or r.symbol == symbol)
        )
        return [ClosedOrder.of_archived(r) for r in rows[:limit]]

    def client_keys(self, day: str) -> list[tuple[str, str]]:
        return [
            (r.strategy_code, r.client_order_id)
            for r in self.rows.values()
            if r.day == day and r.client_order_id
        ]


# Steps: place (accepted or rejected), fill all, cancel, trigger, prepare a snapshot, store
# the one prepared last (archive, then evict: events may come between, as they do while
# the gateway's snapshot thread stores it; a newer one replaces one not stored yet, and
# one never stored is a failed snapshot), roll the day over.
steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("place"),
            st.sampled_from(STRATEGIES),
            st.sampled_from(SYMBOLS),
            st.booleans(),
            st.integers(0, 3),
        ),
        st.tuples(st.just("fill"), st.integers(0, 40)),
        st.tuples(st.just("cancel"), st.integers(0, 40)),
        st.tuples(st.just("trigger"), st.integers(0, 40)),
        st.tuples(st.just("prepare")),
        st.tuples(st.just("store")),
        st.tuples(st.just("rollover")),
    ),
    max_size=60,
)


def _events(
    step: tuple[object, ...],
    when: datetime,
    number: int,
    day: date,
    open_ids: set[str],
    all_ids: list[str],
) -> list[Event]:
    match step:
        case ("place", str() as strategy, str() as symbol, bool() as rejected, int() as key):
            order_id = f"O{number:010d}"
            intent = OrderIntent(
                symbol,
                strategy,
                Side.BUY,
                5,
                OrderType.LIMIT,
                Product.CNC,
                Validity.DAY,
                price=Decimal("100.05"),
            )
            # A few keys reused: idempotency lookups find the latest of the day.
            client_id = f"k{key}" if key else ""
            if rejected:
                return [
                    OrderRejected(
                        order_id, client_id, intent, when, RejectReason.NO_MARKET_DATA, "no quote"
                    )
                ]
            return [OrderAccepted(order_id, client_id, intent, when)]
        case ("fill" | "cancel", int() as pick) if open_ids:
            order_id = sorted(open_ids)[pick % len(open_ids)]
            if step[0] == "cancel":
                return [OrderCancelled(order_id, when, "cancelled by client")]
            fill = Fill(
                f"F{number}",
                order_id,
                "",
                "s1",
                "NSE:INFY",
                Side.BUY,
                Product.CNC,
                5,
                Decimal("100.05"),
                when,
            )
            return [OrderFilled(fill, Quote("NSE:INFY", Decimal("100.05"), when))]
        case ("trigger", int() as pick) if all_ids:
            # An event about any order of the day, perhaps one the archive holds.
            return [OrderTriggered(all_ids[pick % len(all_ids)], when, Decimal("100"))]
        case ("rollover",):
            return [DayRolledOver(day, when)]
    return []


def _view(ledger: Ledger) -> list[object]:
    """Everything the gateway asks a ledger about its orders."""
    out: list[object] = [codec.encode_bytes(o) for o in ledger.orders()]
    for order in ledger.orders():
        out.append(codec.encode_bytes(ledger.order(order.order_id)))
        out.append(codec.encode_bytes(ledger.snapshot(order.order_id)))
        if order.client_order_id:
            found = ledger.order_for_client_id(order.intent.strategy_code, order.client_order_id)
            out.append(None if found is None else found.order_id)
    ids = [o.order_id for o in ledger.orders()]
    for after in ["", *ids[::3]]:
        for strategy in ("", *STRATEGIES):
            for symbol in ("", *SYMBOLS):
                out.append(
                    [
                        (
                            o.order_id,
                            o.status,
                            o.created_at,
                            o.intent.strategy_code,
                            o.intent.symbol,
                        )
                        for o in ledger.orders_after(after, strategy_code=strategy, symbol=symbol)
                        if (not strategy or o.intent.strategy_code == strategy)
                        and (not symbol or o.intent.symbol == symbol)
                    ]
                )
    return out


@settings(max_examples=120, deadline=None)
@given(steps)
def test_an_archiving_ledger_answers_as_one_that_keeps_every_order(
    script: list[tuple[object, ...]],
) -> None:
    _run(script)


def test_an_order_an_event_changed_while_its_snapshot_was_stored_stays_in_memory() -> None:
    """Archived as it was when the snapshot was prepared; the newer one must not go."""
    _run(
        [
            ("place", "s1", "NSE:INFY", False, 1),
            ("cancel", 0),
            ("prepare",),
            ("trigger", 0),
            ("store",),
            ("place", "s1", "NSE:INFY", False, 2),
            ("prepare",),
            ("rollover",),
            ("store",),
        ]
    )


def _run(script: list[tuple[object, ...]]) -> None:
    archive = DictArchive()
    archiving = Ledger(archive)
    keeping = Ledger()
    when, day, number = START, date(2026, 12, 3), 1
    all_ids: list[str] = []
    prepared: tuple[list[ArchivedOrder], list[ClosedOrder], str] | None = None
    for step in script:
        when += timedelta(seconds=1)
        if step[0] == "prepare":
            # As the gateway does, without compacting first: orders the last event
            # finished are still whole, and stay in the snapshot's state.
            _, finished = archiving.encoded_orders(codec.encode_bytes, archiving=True)
            prepared = ([o.archived(archiving.day) for o in finished], finished, archiving.day)
            continue
        if step[0] == "store":
            if prepared is not None:
                rows, finished, prepared_day = prepared
                archive.store(rows)
                archiving.evict(finished, prepared_day)
                prepared = None
            continue
        if step[0] == "rollover":
            day += timedelta(days=1)
        open_ids = {o.order_id for o in keeping.open_orders()}
        for event in _events(step, when, number, day, open_ids, all_ids):
            if isinstance(event, OrderAccepted | OrderRejected):
                all_ids.append(event.order_id)
                number += 1
            # Applied alike, or refused alike (a trigger of a past day's order).
            outcomes = []
            for ledger in (archiving, keeping):
                try:
                    ledger.apply(event)
                    outcomes.append("")
                except LedgerError as e:
                    outcomes.append(str(e))
            assert outcomes[0] == outcomes[1]
        assert _view(archiving) == _view(keeping)
        assert archiving.day == keeping.day
    # The whole state (what a snapshot without archiving writes) is the same too.
    archiving.compact()
    keeping.compact()
    assert (
        archiving.encoded_orders(codec.encode_bytes)[0]
        == keeping.encoded_orders(codec.encode_bytes)[0]
    )


# A resting order's intent, for tests that need many orders and no fills.
BUY_LIMIT = OrderIntent(
    "NSE:INFY",
    "s1",
    Side.BUY,
    5,
    OrderType.LIMIT,
    Product.CNC,
    Validity.DAY,
    price=Decimal("100.05"),
)


def _archive_finished(ledger: Ledger, archive: DictArchive) -> int:
    """As the gateway's snapshot does: the finished orders go to the archive, then leave
    memory. How many left."""
    ledger.compact()
    _, finished = ledger.encoded_orders(codec.encode_bytes, archiving=True)
    archive.store([o.archived(ledger.day) for o in finished])
    return ledger.evict(finished, ledger.day)


def test_memory_holds_only_open_orders_after_a_snapshot_archives_the_rest() -> None:
    archive = DictArchive()
    ledger = Ledger(archive)
    for number in range(1, 1001):
        order_id = f"O{number:010d}"
        ledger.apply(OrderAccepted(order_id, f"c{number}", BUY_LIMIT, START))
        if number % 10:
            ledger.apply(OrderCancelled(order_id, START, "cancelled by client"))
    assert _archive_finished(ledger, archive) == 900
    assert len(ledger._orders) == len(ledger.open_orders()) == 100
    assert len(ledger._by_client_id) == 100
    assert len(ledger._ids) == 100
    assert len(list(ledger.orders())) == 1000
    retry = ledger.order_for_client_id("s1", "c1")
    assert retry is not None
    assert retry.order_id == "O0000000001"


class CountingArchive(DictArchive):
    """A DictArchive that counts the idempotency lookups it is asked."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0

    def order_id_for_client(self, day: str, strategy_code: str, client_order_id: str) -> str | None:
        self.lookups += 1
        return super().order_id_for_client(day, strategy_code, client_order_id)


def test_a_new_orders_key_is_answered_without_asking_the_archive() -> None:
    """The order path checks every new order's key: with 1,000 keys archived, nearly
    none of 10,000 new keys may cost an archive read, and every archived one is found
    through it, in the ledger that archived them and in one restored from the archive."""
    archive = CountingArchive()
    ledger = Ledger(archive)
    ledger.apply(DayRolledOver(date(2026, 12, 3), START))
    # Keys read before the orders go, as a gateway's start reads them: eviction adds.
    assert len(ledger.archived_keys()) == 0
    for number in range(1, 1001):
        order_id = f"O{number:010d}"
        ledger.apply(OrderAccepted(order_id, f"c{number}", BUY_LIMIT, START))
        ledger.apply(OrderCancelled(order_id, START, "cancelled by client"))
    assert _archive_finished(ledger, archive) == 1000
    restored = Ledger.restore([], [], archive=archive, day=ledger.day)
    for which in (ledger, restored):
        archive.lookups = 0
        assert all(which.order_for_client_id("s1", f"new{n}") is None for n in range(10_000))
        # The filter's false positives: about 0.1%.
        assert archive.lookups <= 50
        # Another strategy's keys are its own.
        assert which.order_for_client_id("s2", "c1") is None
        for number in range(1, 1001):
            found = which.order_for_client_id("s1", f"c{number}")
            assert found is not None
            assert found.order_id == f"O{number:010d}"


def test_a_rollover_starts_the_new_days_archived_keys_afresh() -> None:
    archive = DictArchive()
    ledger = Ledger(archive)
    ledger.apply(DayRolledOver(date(2026, 12, 3), START))
    ledger.apply(OrderAccepted("O0000000001", "c1", BUY_LIMIT, START))
    ledger.apply(OrderCancelled("O0000000001", START, "cancelled by client"))
    assert _archive_finished(ledger, archive) == 1
    assert len(ledger.archived_keys()) == 1
    assert ledger.order_for_client_id("s1", "c1") is not None
    ledger.apply(DayRolledOver(date(2026, 12, 4), START + timedelta(days=1)))
    assert len(ledger.archived_keys()) == 0
    assert ledger.order_for_client_id("s1", "c1") is None


class SmallLayers(ClientKeyFilter):
    """Layers of 16, 16, 32, ... keys: many layers from few keys."""

    _FIRST_LAYER_KEYS = 16


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.text(max_size=6), st.text(min_size=1, max_size=12)), unique=True, max_size=600
    )
)
def test_the_key_filter_never_misses_a_key_it_was_given(keys: list[tuple[str, str]]) -> None:
    """Whichever layer holds it: each key is given once, so only that layer has it."""
    key_filter = SmallLayers(keys)
    assert all(key_filter.might_hold(key) for key in keys)
    assert len(key_filter) == len(keys)


def test_the_key_filter_keeps_its_false_positives_rare_as_the_day_grows() -> None:
    """At 600,000 distinct keys: seven layers, each a power of two words long (the low
    bits of a hash pick the word), every key found, few false positives, and at most
    12 bytes a key."""
    keys = [(f"s{n % 8}", f"key-{n}") for n in range(600_000)]
    key_filter = ClientKeyFilter(keys)
    layers = key_filter._layers
    assert len(layers) == 7
    assert all(len(layer) & (len(layer) - 1) == 0 for layer in layers)
    assert all(key_filter.might_hold(key) for key in keys)
    false = sum(key_filter.might_hold(("s1", f"other-{n}")) for n in range(100_000))
    assert false < 600  # 0.6%: 0.26% expected
    held_bytes = sum(len(layer) * layer.itemsize for layer in layers)
    assert held_bytes < 12 * len(keys)


def test_a_filter_built_at_once_is_the_one_built_key_by_key() -> None:
    """The constructor's loop is add() written out for speed: same words, same layers."""
    keys = [(f"s{n % 3}", f"key-{n}") for n in range(40_000)]
    one_by_one = ClientKeyFilter()
    for key in keys:
        one_by_one.add(key)
    at_once = ClientKeyFilter(keys)
    assert at_once._layers == one_by_one._layers
    assert len(at_once) == len(one_by_one) == len(keys)
    # And it goes on growing as one built key by key does.
    for key in [("s9", f"more-{n}") for n in range(30_000)]:
        at_once.add(key)
        one_by_one.add(key)
    assert at_once._layers == one_by_one._layers


def test_keyless_orders_stay_out_of_the_key_filter() -> None:
    """They are nobody's retry: the filter keeps its room for keys, from eviction and
    from the archive alike."""
    archive = DictArchive()
    ledger = Ledger(archive)
    ledger.apply(DayRolledOver(date(2026, 12, 3), START))
    assert len(ledger.archived_keys()) == 0  # loaded: eviction adds
    for number in range(1, 11):
        order_id = f"O{number:010d}"
        ledger.apply(OrderAccepted(order_id, f"c{number}" if number % 2 else "", BUY_LIMIT, START))
        ledger.apply(OrderCancelled(order_id, START, "cancelled by client"))
    assert _archive_finished(ledger, archive) == 10
    assert len(ledger.archived_keys()) == 5
    assert ledger.order_for_client_id("s1", "") is None
    restored = Ledger.restore([], [], archive=archive, day=ledger.day)
    assert len(restored.archived_keys()) == 5
