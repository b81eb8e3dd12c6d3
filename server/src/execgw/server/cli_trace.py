"""`execgw trace summary FILE [--session ID]`: orders, stage latencies and the slowest
orders of a span file written by `telemetry.exporter: jsonl` (see telemetry.summary).

Tables for people; `--json` prints one JSON object per line instead, each with a
"section" (file, orders, stage, slowest), latencies in milliseconds.

Exit codes: 0 done (also for a file with no spans yet), 1 the file cannot be read or
holds no span of the session asked for.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from execgw.server import cli_render as render
from execgw.server.telemetry.summary import DEFAULT_SLOWEST, Summary, read_spans, summarize
from execgw.server.telemetry.tracing import EXPORT_DELAY_S


def add_trace_commands(sub: Any) -> None:
    trace = sub.add_parser("trace", help="read the spans the gateway wrote")
    trace_sub = trace.add_subparsers(dest="trace_command", required=True)
    summary = trace_sub.add_parser(
        "summary",
        help="orders by status and reject reason, latency per stage, the slowest orders",
    )
    summary.add_argument("file", metavar="FILE", help="spans, one JSON object a line (jsonl)")
    summary.add_argument("--session", metavar="ID", help="only the spans of this session")
    summary.add_argument(
        "--slowest",
        type=_positive,
        default=DEFAULT_SLOWEST,
        metavar="N",
        help=f"how many of the slowest orders to list (default {DEFAULT_SLOWEST})",
    )
    summary.add_argument("--json", action="store_true", help="one JSON object per line")
    summary.set_defaults(func=_summary)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _summary(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        with path.open(encoding="utf-8", errors="replace") as lines:
            found = read_spans(lines, args.session)
    except OSError as e:
        print(f"execgw: trace summary: cannot read {path}: {e.strerror or e}", file=sys.stderr)
        return 1
    if args.session is not None and not found.spans:
        seen = ", ".join(found.sessions) or "none"
        print(
            f"execgw: trace summary: no spans of session {args.session!r} in {path} "
            f"(sessions there: {seen}); a running gateway writes its spans in batches, "
            f"by default about {EXPORT_DELAY_S:g} s after they end, and the rest as it stops",
            file=sys.stderr,
        )
        return 1
    summary = summarize(found, slowest=args.slowest)
    if args.json:
        _print_json(summary, path, args.session)
    else:
        _print_tables(summary, path, args.session)
    return 0


def _ms(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 3)


def _print_json(summary: Summary, path: Path, session: str | None) -> None:
    def emit(section: str, **fields: Any) -> None:
        print(json.dumps({"section": section, **fields}, sort_keys=True))

    emit(
        "file",
        path=str(path),
        spans=summary.spans,
        unreadable_lines=summary.unreadable,
        sessions=summary.sessions,
        session=session,
    )
    for count in summary.orders:
        emit(
            "orders",
            status=count.status,
            reject_reason=count.reject_reason or None,
            count=count.count,
        )
    for stage in summary.stages:
        emit(
            "stage",
            stage=stage.stage,
            count=stage.count,
            p50_ms=_ms(stage.p50_ms),
            p90_ms=_ms(stage.p90_ms),
            p99_ms=_ms(stage.p99_ms),
            max_ms=_ms(stage.max_ms),
        )
    for rank, order in enumerate(summary.slowest, start=1):
        emit(
            "slowest",
            rank=rank,
            order_id=order.order_id,
            status=order.status,
            reject_reason=order.reject_reason or None,
            symbol=order.symbol,
            side=order.side,
            qty=order.qty,
            latency_ms=_ms(order.latency_ms),
            slowest_stage=order.slowest_stage or None,
            slowest_stage_ms=_ms(order.slowest_stage_ms),
            trace_id=order.trace_id,
        )


def _fixed(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.3f}"


def _print_tables(summary: Summary, path: Path, session: str | None) -> None:
    sessions = ", ".join(summary.sessions) or "none"
    scope = f"session {session}" if session is not None else f"sessions: {sessions}"
    unreadable = f", {summary.unreadable} unreadable lines" if summary.unreadable else ""
    render.line(f"{path}: {summary.spans} spans ({scope}){unreadable}")
    if not summary.spans:
        render.line(
            f"no spans (a running gateway writes them in batches, by default about "
            f"{EXPORT_DELAY_S:g} s after they end, and the rest as it stops)"
        )
        return
    if summary.orders:
        render.table(
            "orders by status",
            ["STATUS", "REJECT REASON", "ORDERS"],
            [[c.status, c.reject_reason, str(c.count)] for c in summary.orders],
            numeric=["ORDERS"],
        )
    else:
        render.line("no orders")
    latency = ["SPANS", "P50 MS", "P90 MS", "P99 MS", "MAX MS"]
    render.table(
        "latency by stage",
        ["STAGE", *latency],
        [
            [
                s.stage,
                str(s.count),
                _fixed(s.p50_ms),
                _fixed(s.p90_ms),
                _fixed(s.p99_ms),
                _fixed(s.max_ms),
            ]
            for s in summary.stages
        ],
        numeric=latency,
    )
    if summary.slowest:
        render.table(
            "slowest orders",
            ["ORDER", "STATUS", "SYMBOL", "SIDE", "QTY", "MS", "SLOWEST STAGE", "TRACE ID"],
            [
                [
                    o.order_id,
                    " ".join(filter(None, (o.status, o.reject_reason))),
                    o.symbol,
                    o.side,
                    "" if o.qty is None else str(o.qty),
                    _fixed(o.latency_ms),
                    f"{o.slowest_stage} {_fixed(o.slowest_stage_ms)}".strip(),
                    o.trace_id,
                ]
                for o in summary.slowest
            ],
            numeric=["MS"],
        )
