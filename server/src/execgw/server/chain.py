"""How journal rows are sealed: a plain SHA-256 chain, or an HMAC-SHA256 chain keyed
from the environment.

A plain chain catches accidents (a torn page, an edited row), but anyone who can
write the file can recompute it. A keyed chain can only be recomputed by someone who
holds the key, which lives in the environment and never in the journal, the config,
a log line or an error message.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Iterable
from typing import Protocol

PLAIN = "sha256"
KEYED = "hmac-sha256"
DEFAULT_KEY_ENV = "EXECGW_JOURNAL_HMAC_KEY"
# 32 characters is 128 bits as hex (`secrets.token_hex(16)`); a shorter secret is a
# password, and a guessable key makes the keyed chain no better than the plain one.
MIN_KEY_LENGTH = 32
_KEY_CHECK_MESSAGE = b"execgw journal key check v1"
# Upper case, and shorter than any key this build accepts: a key pasted where a name
# belongs can never pass as a name, so a message that names the variable never
# prints a key (token_hex is lower case; even an upper-case key is too long).
MAX_ENV_NAME_LENGTH = MIN_KEY_LENGTH - 1
_ENV_NAME = re.compile(rf"[A-Z_][A-Z0-9_]{{0,{MAX_ENV_NAME_LENGTH - 1}}}")
ENV_NAME_RULE = (
    f"must be the NAME of an environment variable (A-Z, 0-9 and _, not starting with a "
    f"digit, at most {MAX_ENV_NAME_LENGTH} characters), not a key"
)


class Digest(Protocol):
    """A hash being fed: hashlib's or hmac's."""

    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


class ChainKeyError(ValueError):
    """The key is missing, too short, or wrong. Messages name the variable, never the key."""


class Chain:
    """Seals a row over its sequence, kind, time, body and the previous row's seal."""

    __slots__ = ("_keyed", "name")

    def __init__(self, key: bytes | None = None) -> None:
        self.name = PLAIN if key is None else KEYED
        # The key, absorbed: each seal starts from a copy of it instead of keying a new
        # HMAC (about 1 µs less a seal; a row per event, a row per archived order
        # checked at start). Never updated itself, so copies from any thread are safe;
        # the key is kept nowhere else.
        self._keyed = None if key is None else hmac.new(key, None, hashlib.sha256)

    @property
    def keyed(self) -> bool:
        return self._keyed is not None

    def __repr__(self) -> str:
        # The key must not reach a log line or a traceback through a repr.
        return f"Chain({self.name})"

    def seal(self, sequence: int, kind: str, timestamp: str, body: str, prev_hash: str) -> str:
        return self._digest(f"{sequence}|{kind}|{timestamp}|{prev_hash}|{body}")

    # A row's sealed text starts with its sequence (a digit); the texts below start
    # with a word, so no seal of one kind can be passed off as a seal of another.

    def seal_snapshot(self, sequence: int, row_hash: str, body: str) -> str:
        """A snapshot's seal: over its sequence, the seal of the event at that sequence
        (which commits to every event up to it) and the state it holds."""
        return self.seal_snapshot_parts(sequence, row_hash, (body,))

    def seal_snapshot_parts(
        self, sequence: int, row_hash: str, parts: Iterable[str | bytes]
    ) -> str:
        """seal_snapshot over the text `parts` join to, fed part by part: the same digest,
        without copying a day's state into one more string first."""
        sealer = self.snapshot_sealer(sequence, row_hash)
        for part in parts:
            sealer.update(part.encode() if isinstance(part, str) else part)
        return sealer.hexdigest()

    def snapshot_sealer(self, sequence: int, row_hash: str, prefix: bytes = b"") -> Digest:
        """seal_snapshot as it is fed: update() with the state's text (UTF-8) in order,
        then hexdigest(). `prefix` comes before the state (the journal's archive record,
        framed: journal._archive_seal_text)."""
        digest = self._new_digest()
        digest.update(f"snapshot|{sequence}|{row_hash}|".encode())
        digest.update(prefix)
        return digest

    def seal_closed_order(self, head: bytes, body: bytes) -> str:
        """An archived order's seal (order_archive.py): its columns framed by their
        lengths (`head`), then its body. One call, not a digest fed piece by piece."""
        data = b"closed-order|" + head + body
        if self._keyed is None:
            return hashlib.sha256(data).hexdigest()
        digest = self._keyed.copy()
        digest.update(data)
        return digest.hexdigest()

    def seal_pruning(self, pruned_below: int, prev_hash: str) -> str:
        """The pruning record's seal: events below `pruned_below` were removed by the
        gateway, and the first kept event follows a row whose seal was `prev_hash`."""
        return self._digest(f"pruned|{pruned_below}|{prev_hash}")

    def matches(self, stored: str, expected: str) -> bool:
        return hmac.compare_digest(stored.encode(), expected.encode())

    def _digest(self, text: str) -> str:
        return self._digest_parts(text.encode())

    def _new_digest(self) -> Digest:
        if self._keyed is None:
            return hashlib.sha256()
        return self._keyed.copy()

    def _digest_parts(self, *parts: bytes) -> str:
        digest = self._new_digest()
        for part in parts:
            digest.update(part)
        return digest.hexdigest()

    def key_check(self) -> str:
        """A value stored with a keyed journal so a wrong key is named as such on open,
        instead of surfacing later as "row 1 was altered". It reveals nothing of the key."""
        if self._keyed is None:
            raise ValueError("a plain chain has no key to check")
        digest = self._keyed.copy()
        digest.update(_KEY_CHECK_MESSAGE)
        return digest.hexdigest()

    def matches_key_check(self, stored: str) -> bool:
        return self._keyed is not None and hmac.compare_digest(self.key_check(), stored)


PLAIN_CHAIN = Chain()


def valid_env_name(name: str) -> bool:
    return _ENV_NAME.fullmatch(name) is not None


def chain_from_env(env_name: str, *, named_by: str = "journal.hmac_key_env") -> Chain:
    """The chain a config asks for: plain when no variable is named, keyed otherwise.

    A named variable that is unset or empty is an error, not a silent fall back to
    the plain chain: the operator asked for a journal an intruder cannot rewrite.
    `named_by` says where the name came from, for the message."""
    if not env_name:
        return PLAIN_CHAIN
    key = _read_key(env_name, named_by)
    if key is None:
        raise ChainKeyError(f"{named_by} names {env_name}, but {env_name} is not set or is empty")
    return Chain(key)


def optional_chain_from_env(env_name: str) -> Chain:
    """The key when the variable holds one, else the plain chain (for the audit tools'
    default variable only: a variable the operator named is required, chain_from_env)."""
    key = _read_key(env_name, "the key variable") if env_name else None
    return PLAIN_CHAIN if key is None else Chain(key)


def _read_key(env_name: str, named_by: str) -> bytes | None:
    if not valid_env_name(env_name):
        # Not echoed: what fails this rule may be a key pasted where its name belongs.
        raise ChainKeyError(f"{named_by} {ENV_NAME_RULE}")
    value = os.environ.get(env_name, "")
    if not value:
        return None
    if len(value) < MIN_KEY_LENGTH:
        raise ChainKeyError(
            f"the key in {env_name} is too short: use at least {MIN_KEY_LENGTH} characters "
            '(e.g. python -c "import secrets; print(secrets.token_hex(32))")'
        )
    return value.encode("utf-8")
