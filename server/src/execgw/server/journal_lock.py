"""One writing process per journal: an exclusive flock on the database file itself, and
one on `<journal>.lock` beside it, which names the holder.

SQLite's own locking lets two processes take turns writing, which is exactly what
must not happen: each would hand out the same order ids from its own memory. The locks
are held for the life of the writer and released by the kernel when the process dies,
so a kill -9 never leaves a stale lock behind.

Two locks, because a journal has two identities:
- The file (its inode). A symlink, a hard link or another mount of the same file is
  the same journal; the flock on the database file refuses a second writer however it
  names the file. This flock is taken through a descriptor of our own on the database
  file, and closing *any* descriptor of a file drops every POSIX lock this process
  holds on it, SQLite's included. So this module never closes such a descriptor while
  a Journal of this process has the file open: a refused attempt in a process that
  already has the file open keeps its descriptor until the last of them closes.
- The path (resolved). `<resolved journal>.lock` carries the holder's pid, host and
  address for whoever is refused, and refuses a writer of a file that was moved into
  the journal's place while the old one is still written. It is never deleted: a
  process that unlinked it could let a newcomer lock a fresh inode beside a holder
  that still has the old one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def lock_path(journal: Path) -> Path:
    """The holder file of a journal; a symlink to the journal has the same one."""
    resolved = journal.resolve()
    return resolved.with_name(resolved.name + ".lock")


def make_private_dirs(directory: Path) -> None:
    """Create `directory` and each missing parent with mode 0700 (mkdir -p would give
    the parents the umask's default); directories that exist keep their mode."""
    missing: list[Path] = []
    current = directory
    while not current.is_dir() and current.parent != current:
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            if not path.is_dir():
                raise


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
    """Another writer has this journal."""

    def __init__(self, journal: Path, holder: LockHolder | None, *, who: str = "") -> None:
        if not who:
            who = holder.describe() if holder else "another process (its lock file is unreadable)"
        super().__init__(f"journal {journal} is in use by {who}")
        self.holder = holder


# -- the database file's own lock, per inode and per process -------------------------


@dataclass(slots=True)
class _Inode:
    # Descriptors of the database file this module opened; fds[0] carries the flock.
    fds: list[int] = field(default_factory=list)
    # Journals of this process with the file open (the writer and every reader).
    users: int = 0
    holder: LockHolder | None = None


InodeKey = tuple[int, int]  # (st_dev, st_ino)
_guard = threading.Lock()
_inodes: dict[InodeKey, _Inode] = {}


def _forget_if_unused(key: InodeKey, entry: _Inode) -> None:
    """Close our descriptors once no Journal of this process has the file open: only
    then can closing them not drop a lock SQLite holds."""
    if entry.users == 0 and entry.holder is None:
        for fd in entry.fds:
            os.close(fd)
        del _inodes[key]


def _lock_inode(journal: Path, holder: LockHolder) -> InodeKey:
    with _guard:
        key = _inode_of(journal)
        entry = None if key is None else _inodes.get(key)
        if key is None or entry is None or not entry.fds:
            # O_CREAT: the inode must exist to be locked. An empty file is what SQLite
            # itself starts from, and it is private from its first moment. The file may
            # have been replaced since the stat: fstat says which inode this is.
            fd = os.open(journal, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
            st = os.fstat(fd)
            key = (st.st_dev, st.st_ino)
            entry = _inodes.setdefault(key, _Inode())
            entry.fds.append(fd)
        if entry.holder is not None:
            raise JournalLockHeld(journal, entry.holder)
        try:
            fcntl.flock(entry.fds[0], fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _forget_if_unused(key, entry)
            pid = _flock_holder_pid(key)
            who = "another process" if pid is None else f"process {pid} on this host"
            raise JournalLockHeld(
                journal,
                None,
                who=f"{who}, which opened the same file under another path (a hard link?)",
            ) from None
        entry.holder = holder
        entry.users += 1
        return key


def _inode_of(path: Path) -> InodeKey | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


def _unlock_inode(key: InodeKey) -> None:
    with _guard:
        entry = _inodes[key]
        fcntl.flock(entry.fds[0], fcntl.LOCK_UN)
        entry.holder = None
        entry.users -= 1
        _forget_if_unused(key, entry)


def note_reader_open(journal: Path) -> InodeKey | None:
    """Call before a read-only connection opens `journal`; keeps this module from
    closing a descriptor of that file while the connection may hold SQLite's locks."""
    with _guard:
        try:
            key = _inode_of(journal)
        except OSError:
            key = None
        if key is not None:  # else the connection fails and says why
            _inodes.setdefault(key, _Inode()).users += 1
        return key


def note_reader_closed(key: InodeKey | None) -> None:
    if key is None:
        return
    with _guard:
        entry = _inodes.get(key)
        if entry is not None:
            entry.users -= 1
            _forget_if_unused(key, entry)


def _flock_holder_pid(key: InodeKey) -> int | None:
    """Who holds the flock on this inode, from /proc/locks (Linux), if it can be told."""
    dev, ino = key
    wanted = f"{os.major(dev):02x}:{os.minor(dev):02x}:{ino}"
    with (
        contextlib.suppress(OSError, ValueError, IndexError),
        open("/proc/locks", encoding="ascii") as locks,
    ):
        for line in locks:
            # "3: FLOCK  ADVISORY  WRITE 15887 fe:00:2147755 0 EOF"; waiters have "->".
            fields = line.split()
            if fields[1:4] == ["FLOCK", "ADVISORY", "WRITE"] and fields[5] == wanted:
                return int(fields[4])
    return None


class JournalLock:
    def __init__(self, journal: Path, fd: int, inode: InodeKey, holder: LockHolder) -> None:
        self.journal = journal
        self._fd = fd
        self._inode = inode
        self.holder = holder

    @classmethod
    def acquire(cls, journal: Path) -> JournalLock:
        """Lock the path, then the file. Creates the (empty) database file if missing."""
        fd = os.open(lock_path(journal), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
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
        try:
            inode = _lock_inode(journal, holder)
        except BaseException:
            os.close(fd)
            raise
        lock = cls(journal, fd, inode, holder)
        lock._write_holder()
        return lock

    def record_listen(self, address: str) -> None:
        """Known only once the port is bound, so written after the lock is taken."""
        self.holder = LockHolder(self.holder.pid, self.holder.host, self.holder.since, address)
        with _guard:
            entry = _inodes.get(self._inode)
            if entry is not None and entry.holder is not None:
                entry.holder = self.holder
        self._write_holder()

    def release(self) -> None:
        """Call only after the journal's own connection is closed."""
        if self._fd >= 0:
            _unlock_inode(self._inode)
            # Closing the descriptor is what releases the flock on the holder file.
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
