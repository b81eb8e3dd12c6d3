"""Kite Connect credentials, from the environment only, and the means to keep them out
of every log line, error and file.

The ticker's WebSocket URL carries both as query parameters, so that URL is never
logged; any text that could hold them (a library's exception, a server's error
message) goes through `redact` first.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from execgw.server.config import ConfigError
from execgw.server.venues.kite.credentials import (
    ACCESS_TOKEN_ENV,
    API_KEY_ENV,
    from_environment,
)

REDACTED = "[redacted]"


@dataclass(frozen=True, slots=True)
class KiteCredentials:
    # Not in the repr: a credentials object printed in a log must not show them.
    api_key: str = field(repr=False)
    access_token: str = field(repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, purpose: str) -> KiteCredentials:
        """Both variables, or a ConfigError naming the missing ones (never a value)."""
        values, missing = from_environment([API_KEY_ENV, ACCESS_TOKEN_ENV], environ)
        if missing:
            raise ConfigError(
                f"{purpose} needs {' and '.join(missing)} in the environment "
                "(credentials are never read from the config file)"
            )
        return cls(values[API_KEY_ENV], values[ACCESS_TOKEN_ENV])

    def ticker_url(self, ws_root: str) -> str:
        """The ticker URL with the credentials in its query: never log it."""
        query = urlencode({"api_key": self.api_key, "access_token": self.access_token})
        return f"{ws_root}?{query}"

    def redact(self, text: str) -> str:
        """`text` with every occurrence of either credential replaced."""
        # The longer first, should one contain the other.
        for secret in sorted((self.access_token, self.api_key), key=len, reverse=True):
            if secret:
                text = text.replace(secret, REDACTED)
        return text

    def logger(self, name: str) -> RedactingLogger:
        """A logger for a library that may log what it sends (a request line with the
        query at DEBUG): every message it writes is redacted first."""
        return RedactingLogger(logging.getLogger(name), self)


class RedactingLogger(logging.LoggerAdapter[logging.Logger]):
    def __init__(self, logger: logging.Logger, credentials: KiteCredentials) -> None:
        super().__init__(logger, {})
        self._credentials = credentials

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            text = str(msg) % args if args else str(msg)
            self.logger.log(level, self._credentials.redact(text), **kwargs)
