"""Head anchors: the chain head (sequence, hash, time) appended to a JSON-lines file
that the operator keeps out of an intruder's reach.

A hash at sequence S commits to every event up to S. An intruder who rewrites the
journal and recomputes the chain changes the hash at every anchored sequence after
the edit; one who deletes the newest events leaves a journal that ends before the
last anchor. `execgw journal verify --anchor FILE` checks both.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from execgw.server.clock import Clock
from execgw.server.journal import Journal, JournalCorrupt
from execgw.server.journal_lock import FILE_MODE, make_private_dirs

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HeadAnchor:
    sequence: int
    hash: str
    time: str
    # Which journal wrote it, for a human reading the file; verify does not compare it,
    # because a journal is often audited from a copy at another path.
    journal: str = ""


class AnchorFileError(Exception):
    """The anchor file cannot be read, or holds something that is not an anchor."""


def append_anchor(path: Path, anchor: HeadAnchor) -> None:
    """One line, appended and fsynced. O_APPEND also works on a file the operator made
    append-only (chattr +a), which is one way to keep it out of reach."""
    line = (json.dumps(asdict(anchor), sort_keys=True) + "\n").encode("utf-8")
    make_private_dirs(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_anchors(path: Path) -> list[HeadAnchor]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise AnchorFileError(f"cannot read anchor file {path}: {e}") from None
    lines = text.split("\n")
    anchors = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            anchor = HeadAnchor(
                sequence=int(data["sequence"]),
                hash=str(data["hash"]),
                time=str(data["time"]),
                journal=str(data.get("journal", "")),
            )
            if anchor.sequence < 0:
                raise ValueError("negative sequence")
            anchors.append(anchor)
        except (ValueError, TypeError, KeyError):
            if number == len(lines):
                # No newline after it: a write torn by a crash, not a forged line.
                continue
            raise AnchorFileError(f"{path} line {number} is not a head anchor") from None
    if not anchors:
        raise AnchorFileError(f"{path} holds no head anchors: there is nothing to check against")
    return anchors


@dataclass(frozen=True, slots=True)
class AnchorReport:
    checked: int
    # Anchors below the oldest retained event: pruning removed what they vouch for.
    pruned: int
    latest: HeadAnchor


def check_anchors(
    journal: Journal,
    anchors: Sequence[HeadAnchor],
    *,
    head_sequence: int,
    first_sequence: int,
    before_first_hash: str,
) -> AnchorReport:
    """Raise JournalCorrupt at the first anchor the journal contradicts.

    The arguments come from a verified walk (audit.VerifyReport): its head, its oldest
    retained event and the seal of the event before that one (from the sealed pruning
    record). Anchors must have been read before that walk, so a running gateway's newer
    anchors cannot look like a truncation. Only an anchor below the sealed pruning
    boundary counts as pruned: any other anchor's event must be in the journal."""
    checked = pruned = 0
    for anchor in anchors:
        if anchor.sequence > head_sequence:
            raise JournalCorrupt(
                f"the journal ends at sequence {head_sequence} but the anchor of {anchor.time} "
                f"recorded sequence {anchor.sequence}: events {head_sequence + 1}.."
                f"{anchor.sequence} are missing (truncated tail)"
            )
        if anchor.sequence < first_sequence - 1:
            pruned += 1
            continue
        if anchor.sequence == first_sequence - 1:
            actual = before_first_hash
        else:
            row = journal.row(anchor.sequence)
            if row is None:
                raise JournalCorrupt(
                    f"the anchor of {anchor.time} recorded sequence {anchor.sequence}, which "
                    "is not in the journal and was not pruned"
                )
            actual = row.hash
        if actual != anchor.hash:
            raise JournalCorrupt(
                f"sequence {anchor.sequence} has hash {actual[:16]}… but the anchor of "
                f"{anchor.time} recorded {anchor.hash[:16]}…: the journal was rewritten at or "
                f"before sequence {anchor.sequence}"
            )
        checked += 1
    if checked == 0:
        raise JournalCorrupt(
            f"none of the {len(anchors)} anchors is within the retained journal, so none "
            "could be compared"
        )
    return AnchorReport(checked=checked, pruned=pruned, latest=anchors[-1])


class HeadAnchorRecorder:
    """Appends the head at start, every `interval_s` when it moved, and at clean stop."""

    def __init__(self, journal: Journal, path: Path, interval_s: float, clock: Clock) -> None:
        self._journal = journal
        self._path = path
        self._interval_s = interval_s
        self._clock = clock
        self._last: tuple[int, str] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # Failing here stops start-up: an unwritable anchor path is a config mistake
        # better found now than in an audit.
        await self._record()
        self._task = asyncio.create_task(self._every_interval(), name="head-anchors")

    async def abort(self) -> None:
        """Stop recording without a final anchor (a start that failed)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def stop(self) -> None:
        """Call after the last commit, so the final anchor is the final head."""
        await self.abort()
        try:
            await self._record()
        except OSError as e:
            log.error("could not write the final head anchor to %s: %s", self._path, e)

    async def _every_interval(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                # An idle gateway adds no lines: the last one still vouches for the head.
                await self._record(only_if_moved=True)
            except OSError as e:  # anchors must not stop trading; the next try may work
                log.error("could not write a head anchor to %s: %s", self._path, e)

    async def _record(self, *, only_if_moved: bool = False) -> None:
        sequence, digest = await asyncio.to_thread(self._journal.head)
        if only_if_moved and (sequence, digest) == self._last:
            return
        anchor = HeadAnchor(
            sequence=sequence,
            hash=digest,
            time=self._clock.now().isoformat(),
            journal=str(self._journal.path),
        )
        await asyncio.to_thread(append_anchor, self._path, anchor)
        self._last = (sequence, digest)
