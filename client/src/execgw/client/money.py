"""Exact money from the gateway's messages, as ``Decimal``.

Every price and PnL the gateway sends has a double (for compatibility) and a
``<name>_decimal`` string with the exact value: fixed-point decimal text such as
``"1496.60"`` or ``"-7.50"``, never an exponent. Read the strings for accounting:

    from execgw.client import exact, exact_field

    exact(result.avg_price_decimal)          # Decimal('1488.366666666666666666666667')
    exact_field(result, "avg_price")         # the same, by the double's name
    exact_field(position, "realized_pnl")    # Decimal('-7.50')

``exact`` returns None for an empty string (no value, e.g. the average price of an order
that has not filled). Compare the results as Decimals, not as text: trailing zeros are
the ledger's and carry no meaning.

Prices may be sent exactly too: the builders (``limit``, ``stop``) take a ``Decimal``
and send it as ``price_decimal`` beside the double.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from google.protobuf.message import Message

__all__ = ["decimal_text", "exact", "exact_field"]


def exact(text: str) -> Decimal | None:
    """The Decimal a ``*_decimal`` field carries; None when it is empty (no value)."""
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{text!r} is not decimal text") from None
    if not value.is_finite():
        raise ValueError(f"{text!r} is not decimal text")
    return value


def exact_field(message: Message, name: str) -> Decimal | None:
    """The exact value of ``message.<name>``, read from ``<name>_decimal``.

    None when the message has no value for it (an optional double that is absent). A
    server older than the ``_decimal`` fields leaves them empty: the double is then
    returned as the Decimal of its shortest repr, which is exact for a price on the tick
    but not for an accumulated PnL.
    """
    fields = message.DESCRIPTOR.fields_by_name
    if name not in fields:
        raise ValueError(f"{message.DESCRIPTOR.full_name} has no field {name!r}")
    if f"{name}_decimal" in fields:
        value = exact(getattr(message, f"{name}_decimal"))
        if value is not None:
            return value
    if fields[name].has_presence and not message.HasField(name):
        return None
    return Decimal(repr(float(getattr(message, name))))


def decimal_text(value: Decimal) -> str:
    """``value`` as the gateway reads exact decimals: fixed-point, never an exponent."""
    if not value.is_finite():
        raise ValueError(f"a price must be a finite number, got {value}")
    return f"{value:f}"
