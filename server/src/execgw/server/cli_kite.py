"""`execgw kite session`: Kite Connect's daily login exchange, from a shell.

After logging in at https://kite.zerodha.com/connect/login?v=3&api_key=..., Kite
redirects to the app's redirect URL with a `request_token`. This exchanges it for the
day's access token with the official SDK (`generate_session`), and prints one line to
evaluate or paste into the gateway's environment file:

    export KITE_ACCESS_TOKEN=...

The API key and secret come from the environment only (KITE_API_KEY, KITE_API_SECRET),
never from the command line, where other users could read them in the process list.
Nothing but that line goes to stdout; hints and errors go to stderr, and no error ever
shows the secret.
"""

from __future__ import annotations

import argparse
import enum
import shlex
import sys
from pathlib import Path
from typing import Any

from execgw.server.config import ConfigError, GatewayConfig, load_config
from execgw.server.venues.kite.credentials import (
    ACCESS_TOKEN_ENV,
    API_KEY_ENV,
    API_SECRET_ENV,
    from_environment,
)


class KiteExit(enum.IntEnum):
    """Exit codes of `execgw kite session`."""

    OK = 0
    # Kite refused the exchange (a bad checksum, a used or expired request token), or
    # could not be reached; its message is on stderr.
    REFUSED = 1
    # KITE_API_KEY or KITE_API_SECRET unset, or the --config file unusable.
    USAGE = 2


def _fail(message: str, code: KiteExit, *secrets: str) -> int:
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    print(f"execgw: kite session: {message}", file=sys.stderr)
    return code


def _session(args: argparse.Namespace) -> int:
    try:
        config = load_config(Path(args.config)) if args.config else GatewayConfig()
    except ConfigError as e:
        return _fail(f"config error: {e}", KiteExit.USAGE)
    values, missing = from_environment([API_KEY_ENV, API_SECRET_ENV])
    api_key, api_secret = values[API_KEY_ENV], values[API_SECRET_ENV]
    if missing:
        return _fail(
            f"needs {' and '.join(missing)} in the environment (the app's key and secret "
            "from https://developers.kite.trade/apps)",
            KiteExit.USAGE,
        )
    request_token = args.request_token.strip()
    if not request_token:
        return _fail("--request-token is empty", KiteExit.USAGE)

    # Imported here: the other subcommands do not need the SDK loaded.
    import requests
    from kiteconnect import KiteConnect
    from kiteconnect import exceptions as kite_errors

    settings = config.broker.kite
    kite = KiteConnect(api_key, root=settings.root, timeout=settings.timeout_s)
    try:
        session: Any = kite.generate_session(request_token, api_secret=api_secret)
    except kite_errors.KiteException as e:
        hint = ""
        if isinstance(e, kite_errors.TokenException):
            hint = (
                " (a request token works once and for a few minutes: log in again for a new "
                f"one, and check that {API_SECRET_ENV} is this app's secret)"
            )
        return _fail(
            f"Kite refused the login ({type(e).__name__}): {e}{hint}",
            KiteExit.REFUSED,
            api_secret,
        )
    except requests.exceptions.RequestException as e:
        return _fail(
            f"cannot reach Kite at {settings.root} ({type(e).__name__})",
            KiteExit.REFUSED,
            api_secret,
        )
    access_token = session.get("access_token") if isinstance(session, dict) else None
    if not isinstance(access_token, str) or not access_token:
        return _fail("Kite's answer has no access_token", KiteExit.REFUSED)
    user = session.get("user_id") or "?"
    print(f"export {ACCESS_TOKEN_ENV}={shlex.quote(access_token)}", flush=True)
    print(
        f"execgw: logged in to Kite as {user}; the access token is valid until about 06:00 "
        f"IST tomorrow. Put the line above in the gateway's environment (or run "
        f'eval "$(execgw kite session ...)"), then restart it.',
        file=sys.stderr,
    )
    return KiteExit.OK


def add_kite_commands(sub: Any) -> None:
    """Register `execgw kite ...` on the `execgw` parser."""
    kite = sub.add_parser("kite", help="Zerodha Kite Connect: the daily login")
    kite_sub = kite.add_subparsers(dest="kite_command", required=True)
    session = kite_sub.add_parser(
        "session",
        help="exchange a login's request_token for the day's access token",
        description=(
            f"Runs Kite's login exchange (generate_session) with {API_KEY_ENV} and "
            f"{API_SECRET_ENV} from the environment, and prints "
            f"`export {ACCESS_TOKEN_ENV}=...` on stdout."
        ),
    )
    session.add_argument(
        "--request-token",
        required=True,
        metavar="T",
        help="the request_token Kite appended to the redirect URL after login",
    )
    session.add_argument("--config", help="take broker.kite.root and timeout_s from this config")
    session.set_defaults(func=_session)
