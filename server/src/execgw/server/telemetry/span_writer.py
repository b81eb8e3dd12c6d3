"""The jsonl exporter's writer process: span lines formatted off the gateway's GIL.

Formatting a span's JSON line costs the gateway's interpreter a few microseconds, seven
times an order, and the interpreter is what bounds the gateway's throughput. So the
exporter hands spans to this process as plain values (jsonl_lines.PlainSpan) in msgpack
frames on a pipe, a fraction of that cost, and the process formats and appends them.

Frames on stdin, each a 4-byte big-endian length then a msgpack array:
- ["r", index, text]: resource `index`'s line ending (`,"resource":{...}}` and "\\n");
- ["s", items]: spans in order, each a PlainSpan plus its resource index, or a whole
  line already formatted by the gateway (a span with a status or a trace state);
- ["f", token]: write out everything before, then answer `token` and a newline on
  stdout (the exporter's force_flush waits for it).
End of stdin: write out and exit. A failed write loses its batch (a full disk loses
spans, never an order) and is reported on stdout as a line starting with "!" (at most
one a minute), which the gateway logs when it next reads an answer.

`SpanWriter` is the gateway's end: it starts the process, sends frames, and says when
the process is gone so the exporter can write in process instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import msgspec

from execgw.server.telemetry.jsonl_lines import LineFormatter

log = logging.getLogger(__name__)

_HEADER_BYTES = 4
# Seconds between two reports of failed writes.
REPORT_EVERY_S = 60.0


def frame(value: Any, encode: Any = msgspec.msgpack.encode) -> bytes:
    body: bytes = encode(value)
    return len(body).to_bytes(_HEADER_BYTES, "big") + body


class SpanWriter:
    """The writer process, seen from the gateway. Not thread safe: the exporter calls
    it under its lock."""

    def __init__(self, path: Path) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "execgw.server.span_writer_main", str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
            # Out of the terminal's process group: a Ctrl-C stops the gateway, which
            # then closes the pipe; the writer writes what it has and exits.
            start_new_session=True,
        )
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._stdin: IO[bytes] = self._proc.stdin
        self._stdout: IO[bytes] = self._proc.stdout
        self._tokens = 0
        self.alive = True

    def send(self, data: bytes) -> bool:
        """False once the process is gone (it is not asked again)."""
        if not self.alive:
            return False
        try:
            self._stdin.write(data)
            self._stdin.flush()
        except (OSError, ValueError):
            self._gone()
            return False
        return True

    def flush(self, timeout_s: float) -> bool:
        """Whether everything sent so far is in the file, within the timeout."""
        self._tokens += 1
        token = str(self._tokens).encode()
        if not self.send(frame(["f", token])):
            return False
        deadline = time.monotonic() + timeout_s
        answer = b""
        fd = self._stdout.fileno()
        while True:
            lines = answer.split(b"\n")
            for problem in lines[:-1]:
                if problem.startswith(b"!"):
                    log.warning("span writer: %s", problem[1:].decode(errors="replace"))
                elif problem == token:
                    return True
            answer = lines[-1]
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return False
            chunk = os.read(fd, 4096)
            if not chunk:
                self._gone()
                return False
            answer += chunk

    def close(self, timeout_s: float) -> None:
        # Closing the pipe is what tells the writer to finish (a dead one cannot care).
        with contextlib.suppress(OSError, ValueError):
            self._stdin.close()
        if self._proc.poll() is None:
            try:
                self._proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("the span writer did not stop in %.0f s: killed", timeout_s)
                self._proc.kill()
                self._proc.wait()
        with contextlib.suppress(OSError):
            for line in self._stdout.read().split(b"\n"):
                if line.startswith(b"!"):
                    log.warning("span writer: %s", line[1:].decode(errors="replace"))
        self._stdout.close()
        self.alive = False

    def _gone(self) -> None:
        if self.alive:
            log.warning(
                "the span writer process is gone (exit code %s): spans are written in process",
                self._proc.poll(),
            )
        self.alive = False


def _read_exact(stream: IO[bytes], size: int) -> bytes | None:
    data = stream.read(size)
    return data if data is not None and len(data) == size else None


def _write_all(out: Any, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = out.write(view)
        view = view[written:]


def serve(path: Path, frames: IO[bytes], answers: IO[bytes]) -> None:
    """The writer process's loop (also run in a thread by tests)."""
    formatter = LineFormatter()
    endings: dict[int, str] = {}
    decode = msgspec.msgpack.Decoder().decode
    last_report = float("-inf")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unbuffered: a batch is written whole or not at all, and nothing failed is left
    # to fail again at close.
    with path.open("ab", buffering=0) as out:
        while True:
            header = _read_exact(frames, _HEADER_BYTES)
            if header is None:
                break
            body = _read_exact(frames, int.from_bytes(header, "big"))
            if body is None:
                break
            message = decode(body)
            kind = message[0]
            if kind == "s":
                parts: list[str] = []
                for item in message[1]:
                    if type(item) is str:
                        parts.append(item)
                    else:
                        parts.append(formatter.line(*item[:-1]))
                        parts.append(endings[item[-1]])
                try:
                    _write_all(out, "".join(parts).encode())
                except OSError as e:
                    now = time.monotonic()
                    if now - last_report >= REPORT_EVERY_S:
                        last_report = now
                        answers.write(f"!cannot write {path}: {e}\n".encode())
                        answers.flush()
            elif kind == "r":
                endings[message[1]] = message[2]
            elif kind == "f":
                answers.write(message[1] + b"\n")
                answers.flush()
