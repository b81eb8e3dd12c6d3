"""docs/contract.md is what tools/gencontract.py makes of the protos and their comments:
the contract's documentation cannot drift from the contract."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from execgw.v1 import gateway_pb2, market_data_pb2, orders_pb2

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "contract.md"


def test_contract_doc_is_current() -> None:
    generated = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gencontract.py")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert generated == DOC.read_text(encoding="utf-8"), (
        "docs/contract.md is stale: run `make proto`"
    )


def test_the_doc_covers_every_rpc_message_field_and_enum_value() -> None:
    text = DOC.read_text(encoding="utf-8")
    for module in (orders_pb2, gateway_pb2, market_data_pb2):
        file = module.DESCRIPTOR
        for service in file.services_by_name.values():
            for method in service.methods:
                assert f"#### {service.name}.{method.name}" in text
        for message in file.message_types_by_name.values():
            assert f"### {message.name}\n" in text
            for field in message.fields:
                assert f"| `{field.name}` | {field.number} |" in text, field.full_name
        for enum in file.enum_types_by_name.values():
            for value in enum.values:
                assert f"| `{value.name}` | {value.number} |" in text, value.name


def test_every_money_double_sent_out_has_an_exact_decimal_beside_it() -> None:
    """The convention, checked on the descriptors: a double that is money has a
    `<name>_decimal` string (confidence and drawdown are no money but follow it too)."""
    not_money = {"execgw.v1.OrderIntent.confidence"}
    for module in (orders_pb2, gateway_pb2, market_data_pb2):
        for message in module.DESCRIPTOR.message_types_by_name.values():
            for field in message.fields:
                if field.type != field.TYPE_DOUBLE or field.full_name in not_money:
                    continue
                exact = message.fields_by_name.get(f"{field.name}_decimal")
                assert exact is not None, f"{field.full_name} has no exact form"
                assert exact.type == exact.TYPE_STRING, exact.full_name
