"""`make kite-demo`: the live path without a Kite account.

Starts the Kite stand-in (tests/kite_standin.py) on the port configs/kite-demo.yaml
names as broker.kite.root, with postbacks to its broker.kite.postback_listen and a few
market prices, then `execgw serve` on that config with the stand-in's demo credentials
in its environment. Ctrl-C stops both. Everything the gateway sends to "Kite" is a real
HTTP call of the official kiteconnect SDK to the stand-in.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "configs" / "kite-demo.yaml"
JOURNAL = REPO / "var" / "kite-demo.db"
# The stand-in's defaults: demo values, not secrets.
DEMO_ENV = {
    "KITE_API_KEY": "standin_key",
    "KITE_ACCESS_TOKEN": "standin_token",
    "KITE_API_SECRET": "standin_secret",
}
MARKET_PRICES = ("NSE:INFY=1500", "NSE:RELIANCE=2900", "NSE:TCS=4100")
READY_TIMEOUT_S = 15.0


def _execgw() -> list[str]:
    script = Path(sys.executable).with_name("execgw")
    return [str(script)] if script.exists() else [sys.executable, "-m", "execgw.server.cli"]


def _wait_ready(standin: subprocess.Popen[str]) -> str:
    """The stand-in prints its URL once it serves; its first line, or exit."""
    out = standin.stdout
    assert out is not None
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(out.readline()), daemon=True)
    reader.start()
    reader.join(READY_TIMEOUT_S)
    if not line or not line[0].startswith("http"):
        raise SystemExit(f"kite-demo: the stand-in did not start (exit {standin.poll()})")
    return line[0].strip()


def main() -> int:
    from execgw.server.config import load_config

    config = load_config(CONFIG)
    kite = config.broker.kite
    port = urlsplit(kite.root).port
    if port is None or kite.postback_listen is None:
        raise SystemExit(f"{CONFIG}: broker.kite.root needs a port, and postback_listen a value")
    # The stand-in keeps its order book in memory: a journal of an earlier run would
    # hold orders it never heard of. The demo starts afresh.
    for suffix in ("", "-wal", "-shm", ".lock"):
        Path(f"{JOURNAL}{suffix}").unlink(missing_ok=True)

    command = [sys.executable, str(REPO / "tests" / "kite_standin.py"), "--port", str(port)]
    command += ["--postback-url", f"http://{kite.postback_listen}/"]
    for price in MARKET_PRICES:
        command += ["--market-price", price]
    standin = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        url = _wait_ready(standin)
        steps = (
            ("execgw submit NSE:INFY BUY 10 --strategy demo", "MARKET: Kite fills it at once"),
            ("execgw submit NSE:INFY BUY 5 --strategy demo --price 1490", "LIMIT: rests, PLACED"),
            ("execgw orders --json", "venue_order_id is Kite's order id"),
            (f"curl -d order_id=KITE_ORDER_ID {url}/_standin/fill", "a fill at the broker"),
            (f"curl -d fault=timeout_after_accept {url}/_standin/inject", "a late answer"),
            ("execgw tail --from-sequence 1", "every event, as it happens"),
        )
        width = max(len(command) for command, _ in steps)
        lines = "\n".join(f"  {command:<{width}}  # {why}" for command, why in steps)
        print(
            f"\nkite-demo: Kite stand-in at {url}, a live gateway on {config.listen} "
            f"(.venv/bin/execgw in the repository). In another shell:\n{lines}\n"
            "Ctrl-C stops both.\n",
            file=sys.stderr,
            flush=True,
        )
        gateway = subprocess.Popen(
            [*_execgw(), "serve", "--config", str(CONFIG)], env={**os.environ, **DEMO_ENV}
        )
        try:
            return gateway.wait()
        except KeyboardInterrupt:
            # The terminal's Ctrl-C reached the gateway too: let it drain.
            return gateway.wait()
    finally:
        if standin.poll() is None:
            standin.send_signal(signal.SIGTERM)
        try:
            standin.wait(timeout=10)
        except subprocess.TimeoutExpired:
            standin.kill()


if __name__ == "__main__":
    sys.exit(main())
