"""One writing process per journal: an exclusive flock on `<journal>.lock`.

SQLite's own locking lets two processes take turns writing, which is exactly what
must not happen: each would hand out the same order ids from its own memory. The lock
is held for the life of the writer and released by the kernel when the process dies,
so a kill -9 never leaves a stale lock behind. The file itself is never deleted:
a process that unlinked it could let a newcomer lock a fresh inode beside a holder
that still has the old one.

The file's content names the holder, so whoever is refused can say who has it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

FILE_MODE = 0o600


def lock_path(journal: Path) -> Path:
    return journal.with_name(journal.name + ".lock")


@dataclass(frozen=True, slots=True)
class LockHolder:
    pid: int
    host: str
    since: str
    listen: str = ""

    def describe(self) -> str:
        where = f"listening on {self.listen}" if self.listen else "not listening yet"
        return f"execgw pid {self.pid} on host {self.host} ({where}, since {self.since})"


class JournalLockHeld(Exception):
    """Another process writes this journal."""

    def __init__(self, journal: Path, holder: LockHolder | None) -> None:
        who = holder.describe() if holder else "another process (its lock file is unreadable)"
        super().__init__(f"journal {journal} is in use by {who}")
        self.holder = holder


class JournalLock:
    def __init__(self, journal: Path, fd: int, holder: LockHolder) -> None:
        self.journal = journal
        self._fd = fd
        self.holder = holder

    @classmethod
    def acquire(cls, journal: Path) -> JournalLock:
        path = lock_path(journal)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise JournalLockHeld(journal, holder) from None
        except BaseException:
            os.close(fd)
            raise
        holder = LockHolder(
            pid=os.getpid(),
            host=socket.gethostname(),
            since=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        lock = cls(journal, fd, holder)
        lock._write_holder()
        return lock

    def record_listen(self, address: str) -> None:
        """Known only once the port is bound, so written after the lock is taken."""
        self.holder = LockHolder(self.holder.pid, self.holder.host, self.holder.since, address)
        self._write_holder()

    def release(self) -> None:
        if self._fd >= 0:
            # Closing the descriptor is what releases an flock.
            os.close(self._fd)
            self._fd = -1

    def _write_holder(self) -> None:
        data = (json.dumps(asdict(self.holder), sort_keys=True) + "\n").encode("utf-8")
        # Overwrite in place, then cut: a reader racing this sees a line that may not
        # parse, never an empty file for long, and the lock is never on another inode.
        os.pwrite(self._fd, data, 0)
        os.ftruncate(self._fd, len(data))


def _read_holder(fd: int) -> LockHolder | None:
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        data = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return LockHolder(
            pid=int(data["pid"]),
            host=str(data["host"]),
            since=str(data["since"]),
            listen=str(data.get("listen", "")),
        )
    return None
