"""api.convert.timestamp computes a Timestamp directly: it must be exactly what
protobuf's own FromDatetime gives for every datetime the gateway may hold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from google.protobuf import timestamp_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from execgw.server.api.convert import timestamp


def _reference(when: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(when.astimezone(UTC))
    return ts


_ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-11, minutes=-30))]
)


@settings(max_examples=500, derandomize=True)
@given(
    st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(9999, 12, 30), timezones=_ZONES)
)
def test_an_aware_datetime_gives_what_from_datetime_gives(when: datetime) -> None:
    assert timestamp(when) == _reference(when)


def test_before_the_epoch_and_naive_datetimes_too() -> None:
    before = datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    assert timestamp(before) == _reference(before)
    assert (timestamp(before).seconds, timestamp(before).nanos) == (-1, 999_999_000)
    naive = datetime(2026, 12, 3, 9, 15, 0, 250_000)  # local time, as astimezone reads it
    assert timestamp(naive) == _reference(naive)
