"""A snapshot's seal is fed to the hash in parts (and computed outside the journal's
lock): it must be exactly the digest of the joined text, plain and keyed, so journals
written before and after verify alike."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from execgw.server.chain import Chain

BODY = '{"sequence":42,"orders":[{"order_id":"O0000000001","note":"\u20b9 caf\u00e9"}]}'
ROW_HASH = "ab" * 32


@pytest.mark.parametrize("key", [None, b"k" * 32])
def test_a_snapshot_seal_is_the_digest_of_its_joined_text(key: bytes | None) -> None:
    text = f"snapshot|42|{ROW_HASH}|{BODY}".encode()
    expected = (
        hashlib.sha256(text).hexdigest()
        if key is None
        else hmac.new(key, text, hashlib.sha256).hexdigest()
    )
    assert Chain(key).seal_snapshot(42, ROW_HASH, BODY) == expected
