"""`python -m execgw.server.span_writer_main PATH`: the jsonl exporter's writer process
(telemetry.span_writer). Its own module, so that running it never imports it twice."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from execgw.server.telemetry.span_writer import serve


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: python -m execgw.server.span_writer_main PATH", file=sys.stderr)
        return 2
    # It stops when the gateway closes the pipe (or dies), never on a signal meant for it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(Path(sys.argv[1]), sys.stdin.buffer, sys.stdout.buffer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
