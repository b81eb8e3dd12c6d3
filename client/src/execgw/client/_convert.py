"""Conversions shared by the builders, the legacy bridge and the clients."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from google.protobuf import struct_pb2

from execgw.v1 import orders_pb2

if TYPE_CHECKING:
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

_V = TypeVar("_V", bound=int)

# A proto enum value, its name with or without the prefix in any case ("buy",
# "SIDE_BUY"), or a Python Enum member whose value is such a name.
EnumLike: TypeAlias = int | str | enum.Enum

# Struct numbers are doubles; integers beyond this lose precision, so they stay floats.
_MAX_EXACT_INT = 2**53


def _prefix(wrapper: _EnumTypeWrapper[Any]) -> str:
    # buf's lint makes every zero value <PREFIX>UNSPECIFIED, so it names the prefix.
    return wrapper.DESCRIPTOR.values_by_number[0].name.removesuffix("UNSPECIFIED")


def choices(wrapper: _EnumTypeWrapper[Any]) -> str:
    """Short names a caller may use, for error messages."""
    prefix = _prefix(wrapper)
    names = wrapper.keys()
    return ", ".join(n.removeprefix(prefix) for n in names if not n.endswith("_UNSPECIFIED"))


def coerce_enum(
    wrapper: _EnumTypeWrapper[_V],
    value: object,
    arg: str,
    *,
    allow_unspecified: bool = False,
) -> _V:
    """Turn ``value`` into a member of ``wrapper``; UNSPECIFIED is refused unless allowed.

    Hyphens count as underscores so Kite's "SL-M" names ORDER_TYPE_SL_M.
    """
    prefix = _prefix(wrapper)
    if isinstance(value, enum.Enum):
        value = value.value if isinstance(value.value, str) else value.name
    if isinstance(value, int) and not isinstance(value, bool):
        for _, number in wrapper.items():
            if number == value and (number != 0 or allow_unspecified):
                return number
    elif isinstance(value, str):
        name = value.upper().replace("-", "_")
        if not name.startswith(prefix):
            name = prefix + name
        names = wrapper.keys()
        if name in names and (not name.endswith("_UNSPECIFIED") or allow_unspecified):
            return wrapper.Value(name)
    raise ValueError(f"{arg}: unknown value {value!r}; expected one of {choices(wrapper)}")


def enum_name(wrapper: _EnumTypeWrapper[_V], value: _V, arg: str) -> str | None:
    """Short name of ``value`` ("BUY"), or None for UNSPECIFIED."""
    if value == 0:
        return None
    for name, number in wrapper.items():
        if number == value:
            return name.removeprefix(_prefix(wrapper))
    raise ValueError(f"{arg}: value {value} is newer than this client; upgrade execgw-client")


def dict_to_struct(value: Mapping[str, Any] | None, arg: str) -> struct_pb2.Struct | None:
    """Mapping to Struct, or None when empty so that {} and "absent" compare equal.

    Errors name ``arg`` because protobuf's own messages do not.
    """
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"{arg}: expected a mapping, got {type(value).__name__}")
    if not value:
        return None
    struct = struct_pb2.Struct()
    try:
        struct.update(value)
    except (TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{arg}: not JSON-like: {exc}") from exc
    return struct


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """Struct to plain dict, turning whole numbers back into ints.

    Struct has no integer type, so {"lots": 2} would otherwise come back as 2.0
    and break code such as ``range(meta["lots"])``.
    """
    return {key: _from_value(item) for key, item in struct.fields.items()}


def _from_value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return struct_to_dict(value.struct_value)
    if kind == "list_value":
        return [_from_value(item) for item in value.list_value.values]
    if kind == "number_value":
        number = value.number_value
        if number.is_integer() and abs(number) <= _MAX_EXACT_INT:
            return int(number)
        return number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None


def coerce_side(value: object, arg: str = "side") -> orders_pb2.Side.ValueType:
    return coerce_enum(orders_pb2.Side, value, arg)


def coerce_order_type(value: object, arg: str = "order_type") -> orders_pb2.OrderType.ValueType:
    return coerce_enum(orders_pb2.OrderType, value, arg)


def coerce_product(value: object, arg: str = "product") -> orders_pb2.Product.ValueType:
    return coerce_enum(orders_pb2.Product, value, arg)


def coerce_validity(value: object, arg: str = "validity") -> orders_pb2.Validity.ValueType:
    return coerce_enum(orders_pb2.Validity, value, arg)
