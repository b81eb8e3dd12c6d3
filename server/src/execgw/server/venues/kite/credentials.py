"""Kite credentials, from the environment only: never config, logs, traces or the journal."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

API_KEY_ENV = "KITE_API_KEY"
API_SECRET_ENV = "KITE_API_SECRET"
ACCESS_TOKEN_ENV = "KITE_ACCESS_TOKEN"


def from_environment(
    names: Sequence[str], env: Mapping[str, str] | None = None
) -> tuple[dict[str, str], list[str]]:
    """The named variables' values (stripped), and the names of those unset or blank:
    the one reading of Kite's credentials, so every caller names what is missing the
    same way and none ever prints a value."""
    source = os.environ if env is None else env
    values = {name: source.get(name, "").strip() for name in names}
    return values, [name for name in names if not values[name]]


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
        wanted = [API_KEY_ENV, ACCESS_TOKEN_ENV] + ([API_SECRET_ENV] if need_secret else [])
        values, missing = from_environment([*wanted, API_SECRET_ENV], env)
        missing = [name for name in missing if name in wanted]
        if missing:
            raise MissingCredentials(
                f"mode: live needs {' and '.join(missing)} in the environment "
                "(or execution.dry_run: true to rehearse without the broker)"
            )
        return cls(
            api_key=values[API_KEY_ENV],
            access_token=values[ACCESS_TOKEN_ENV],
            api_secret=values[API_SECRET_ENV],
        )

    def secrets(self) -> tuple[str, ...]:
        """Values that must never appear in output, for redaction checks."""
        return tuple(v for v in (self.api_key, self.access_token, self.api_secret) if v)
