"""Bearer tokens: made here, stored in the config only as their sha256.

A token is 32 random bytes (256 bits) from `secrets`, URL-safe base64, so a plain
sha256 is enough to store it: there is nothing to guess that a slow hash would protect.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence

import yaml
from pydantic import ValidationError

from execgw.server.config import TokenConfig

TOKEN_BYTES = 32


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_digest(token: str) -> str:
    """What the config stores for a token: the hex sha256 of its UTF-8 bytes."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class TokenEntryError(ValueError):
    pass


def token_entry(name: str, role: str, strategies: Sequence[str], token: str) -> TokenConfig:
    """The config entry for `token`, validated as the config will validate it."""
    data: dict[str, object] = {"name": name, "sha256": token_digest(token), "role": role}
    if strategies:
        data["strategies"] = list(strategies)
    try:
        return TokenConfig.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            where = ".".join(str(part) for part in err["loc"])
            problems.append(f"{where}: {err['msg']}" if where else err["msg"])
        raise TokenEntryError("; ".join(problems)) from None


def render_new_token(entry: TokenConfig, token: str) -> str:
    """What `execgw token new` prints: the token once, then the entry to paste."""
    fields: dict[str, object] = {"name": entry.name, "sha256": entry.sha256, "role": entry.role}
    if entry.strategies:
        fields["strategies"] = list(entry.strategies)
    entry_yaml = yaml.safe_dump([fields], sort_keys=False, default_flow_style=False)
    return (
        "# The token, shown this once. Give it to the caller (for example in EXECGW_TOKEN,\n"
        "# or in a file only it can read); the gateway keeps only its sha256.\n"
        f"{token}\n"
        "# The entry for the gateway's config, under auth.tokens:\n"
        f"{entry_yaml}"
    )
