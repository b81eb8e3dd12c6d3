"""Kite credentials, from the environment only: never config, logs, traces or the journal."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

API_KEY_ENV = "KITE_API_KEY"
API_SECRET_ENV = "KITE_API_SECRET"
ACCESS_TOKEN_ENV = "KITE_ACCESS_TOKEN"


class MissingCredentials(ValueError):
    """Names the variables that are missing, never a value."""


@dataclass(frozen=True, slots=True)
class KiteCredentials:
    # repr=False: a stray log of this object must not print a secret.
    api_key: str = field(repr=False)
    access_token: str = field(repr=False)
    # Only postbacks need it (their checksum); empty when unset.
    api_secret: str = field(default="", repr=False)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, need_secret: bool = False
    ) -> KiteCredentials:
        source = os.environ if env is None else env
        wanted = [API_KEY_ENV, ACCESS_TOKEN_ENV] + ([API_SECRET_ENV] if need_secret else [])
        missing = [name for name in wanted if not source.get(name, "").strip()]
        if missing:
            raise MissingCredentials(
                f"mode: live needs {' and '.join(missing)} in the environment "
                "(or execution.dry_run: true to rehearse without the broker)"
            )
        return cls(
            api_key=source[API_KEY_ENV].strip(),
            access_token=source[ACCESS_TOKEN_ENV].strip(),
            api_secret=source.get(API_SECRET_ENV, "").strip(),
        )

    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in output, for redaction checks."""
        return tuple(v for v in (self.api_key, self.access_token, self.api_secret) if v)
