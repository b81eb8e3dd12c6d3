"""The span export process (started by telemetry.export_process).

A gateway that exports spans (console, jsonl, otlp) starts one of these and hands it
its finished spans; this process encodes and ships them, so that the encoding (a JSON
line, an OTLP message per span) takes none of the gateway's interpreter lock.

On its standard input, frames: a 4-byte big-endian length, then a marshalled message:
- ("spans", WireBatch): export these;
- ("flush", seq, timeout_ms): force the exporter's flush, then answer.
On the file descriptor `--answers`, one line per message that wants an answer:
- "ready" once the exporter is made, or "failed: <reason>" and an exit;
- "flushed <seq> <1|0>".

Its lifetime is the gateway's: it exits when its input closes (the gateway stopped,
or died), after exporting what it holds and shutting its exporter down. It ignores
SIGINT, SIGTERM and SIGHUP (the gateway starts it so), which a terminal or a service
manager sends to the gateway's whole process group: the gateway's stop, closing the
input, is what ends it, with its last spans exported. If the gateway is killed, it
exports what it was handed and exits; if that takes more than ORPHAN_EXIT_S (an
exporter stuck on a collector), it exits anyway, the rest lost, so that a service
manager waiting for the gateway's processes to end is not held up.
"""

from __future__ import annotations

import argparse
import logging
import marshal
import os
import sys
import threading
import time
from pathlib import Path
from typing import IO

from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter

from execgw.server.heap import freeze_long_lived
from execgw.server.telemetry.jsonl import JsonLinesSpanExporter
from execgw.server.telemetry.logs import LOG_FORMATS, configure_logging
from execgw.server.telemetry.span_wire import SpanReceiver

log = logging.getLogger("execgw.server.telemetry.export")

KINDS = ("console", "jsonl", "otlp")
HEADER_BYTES = 4
# Seconds it may go on exporting once its gateway is gone (killed): then it exits, so
# that a service manager waiting for the gateway's processes to end is not held up by
# an exporter stuck on a collector.
ORPHAN_EXIT_S = 10.0


def local_span_exporter(kind: str, path: str) -> SpanExporter:
    """The exporter that does the work, made where it runs."""
    if kind == "console":
        return ConsoleSpanExporter()
    if kind == "jsonl":
        return JsonLinesSpanExporter(Path(path))
    if kind != "otlp":
        raise ValueError(f"unknown span exporter {kind!r}")
    # Imported here: only a gateway that exports over OTLP pays for loading it.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    # Endpoint, headers, TLS, compression and timeout: OTEL_EXPORTER_OTLP_[TRACES_]*.
    return OTLPSpanExporter()


def read_frame(source: IO[bytes]) -> bytes | None:
    """The next frame's payload; None at the end of the input (or a frame cut short,
    which only a writer that died mid-frame leaves)."""
    header = source.read(HEADER_BYTES)
    if len(header) < HEADER_BYTES:
        return None
    size = int.from_bytes(header, "big")
    payload = source.read(size)
    return payload if len(payload) == size else None


class _Answers:
    """The answer lines; once the gateway is gone (nobody reads them), none are sent,
    and the spans it handed over are still exported."""

    def __init__(self, sink: IO[bytes]) -> None:
        self._sink: IO[bytes] | None = sink

    def say(self, line: str) -> None:
        if self._sink is None:
            return
        try:
            self._sink.write(f"{line}\n".encode())
        except OSError:
            self._sink = None


def serve(exporter: SpanExporter, source: IO[bytes], answers: _Answers) -> None:
    receiver = SpanReceiver()
    try:
        while (payload := read_frame(source)) is not None:
            try:
                message = marshal.loads(payload)
                kind = message[0]
            except (ValueError, EOFError, TypeError, IndexError):
                log.exception("a frame from the gateway could not be read: skipped")
                continue
            if kind == "spans":
                try:
                    if type(exporter) is JsonLinesSpanExporter:
                        exporter.export_wire(message[1], receiver)
                    else:
                        exporter.export(receiver.spans(message[1]))
                except Exception:  # an exporter's bug loses this batch, not the next
                    log.exception("exporting %d spans failed", len(message[1][2]))
            elif kind == "flush":
                seq, timeout_ms = message[1], message[2]
                try:
                    flushed = exporter.force_flush(timeout_ms)
                except Exception:
                    log.exception("flushing the span exporter failed")
                    flushed = False
                answers.say(f"flushed {seq} {int(flushed is not False)}")
    finally:
        exporter.shutdown()


def _watch_parent(parent: int, check_every_s: float = 1.0) -> threading.Thread:
    """Exit ORPHAN_EXIT_S after the gateway that started it is gone; the watching
    thread."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(check_every_s)
        if not _exited.wait(ORPHAN_EXIT_S):
            log.warning(
                "the gateway is gone and spans are still being exported after %.0f s: "
                "the rest is lost",
                ORPHAN_EXIT_S,
            )
            logging.shutdown()
            os._exit(3)

    watcher = threading.Thread(target=watch, name="execgw-export-orphan", daemon=True)
    watcher.start()
    return watcher


# Set once serving ended (the input closed and the exporter shut down).
_exited = threading.Event()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="execgw.server.telemetry.export_worker")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--path", default="")
    parser.add_argument("--answers", type=int, required=True)
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default="text")
    # The gateway's pid: gone from its parent means gone (getppid() at start could
    # already be a reaper's, had the gateway died meanwhile).
    parser.add_argument("--parent", type=int)
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    with os.fdopen(args.answers, "wb", buffering=0) as sink:
        answers = _Answers(sink)
        try:
            exporter = local_span_exporter(args.kind, args.path)
        except Exception as e:
            reason = f"{type(e).__name__}: {e}".replace("\n", " ")
            answers.say(f"failed: {reason}")
            return 1
        # What it holds for good (modules, the exporter) out of the collector's way, and
        # generation 0 every 10,000 young objects, as the gateway does: a batch makes
        # thousands, all garbage once exported (~25% of the time per span at 700).
        freeze_long_lived()
        answers.say("ready")
        _watch_parent(os.getppid() if args.parent is None else args.parent)
        try:
            serve(exporter, sys.stdin.buffer, answers)
        finally:
            _exited.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
