"""The spill: records a ledger store could not take, kept (bounded) until it can again.

Two forms, one small interface (``add``, ``take``, ``done``, ``close``):

- :class:`FileSpill` (a directory given): each record is appended as one line (checksum, space,
  JSON) to this process's own file ``spill-<pid>-<random>.jsonl`` in the directory, with
  ``os.write`` and no fsync: the records survive the process being killed, as the SQLite
  ledger's commits do (not a power loss). The file is locked (``flock``) while its owner has it
  open; a later :class:`~accounting.ledger.Ledger` with the same directory *adopts* the files
  whose lock is free (their owner exited or died) and replays them into its store. Adoption
  needs ``flock`` (POSIX); elsewhere the files are kept for an operator.
- :class:`MemorySpill` (no directory, or a file that cannot be written): records in memory,
  lost if the process dies before the store works again.

Either holds at most ``limit`` records; beyond that a record is dropped (the caller counts it).
Records are replayed in the order they were spilled.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import os
import secrets
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Final, Protocol

from accounting.ledger.base import decode_record, encode_record
from accounting.record import CallRecord

if sys.platform != "win32":
    import fcntl

__all__ = ["FileSpill", "MemorySpill", "Spill", "orphan_files", "read_spill_file"]

log = logging.getLogger("accounting.ledger")

_PATTERN: Final = "spill-*.jsonl"
# Bytes read at a time while taking records back from a spill file.
_READ: Final = 1 << 20


class Spill(Protocol):
    """What the ledger needs of a spill."""

    @property
    def size(self) -> int:
        """Records held now."""
        ...

    @property
    def corrupt(self) -> int:
        """Lines that failed to decode when read back (a write cut short by a crash)."""
        ...

    def add(self, record: CallRecord) -> bool:
        """Keep ``record``; ``False`` when the spill is full (the record is not kept)."""
        ...

    def take(self, n: int) -> list[CallRecord]:
        """The oldest ``n`` records held, without removing them (one replayer at a time)."""
        ...

    def done(self) -> None:
        """Remove the records the last :meth:`take` returned: the store has them now."""
        ...

    def close(self) -> None:
        """Release the spill; records still held stay in its file, if it has one."""
        ...


class MemorySpill:
    """Records in memory, at most ``limit``; lost if the process dies."""

    def __init__(self, *, limit: int) -> None:
        self.limit = limit
        self._records: collections.deque[CallRecord] = collections.deque()
        self._taken = 0
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        """Records held now."""
        return len(self._records)

    @property
    def corrupt(self) -> int:
        """Always 0: records in memory are never decoded."""
        return 0

    def add(self, record: CallRecord) -> bool:
        """Keep ``record`` unless ``limit`` are held already."""
        with self._lock:
            if len(self._records) >= self.limit:
                return False
            self._records.append(record)
            return True

    def take(self, n: int) -> list[CallRecord]:
        """The oldest ``n`` records, left in place until :meth:`done`."""
        with self._lock:
            taken = list(itertools.islice(self._records, n))
            self._taken = len(taken)
            return taken

    def done(self) -> None:
        """Forget the records the last :meth:`take` returned."""
        with self._lock:
            for _ in range(self._taken):
                self._records.popleft()
            self._taken = 0

    def close(self) -> None:
        """Nothing to release."""


class FileSpill:
    """Records appended to this process's own locked file in ``directory``, at most ``limit``.

    The file is made at the first :meth:`add`, emptied (truncated) whenever every record in it
    has been replayed, and removed by :meth:`close` when empty. A record that cannot be
    written (disk full) raises :class:`OSError` from :meth:`add`; the caller then keeps it in
    memory.
    """

    def __init__(self, directory: Path, *, limit: int) -> None:
        self.directory = directory
        self.limit = limit
        self.path = directory / f"spill-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
        self._fd: int | None = None
        self._head = 0  # offset of the first record not yet replayed
        self._end = 0  # offset after the last record written
        self._count = 0
        self._taken: tuple[int, int] = (0, 0)  # (records, end offset) of the last take()
        self._corrupt = 0
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        """Records held now."""
        return self._count

    @property
    def corrupt(self) -> int:
        """Lines skipped when read back because they failed to decode."""
        return self._corrupt

    def _open(self) -> int:
        if self._fd is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            if sys.platform != "win32":
                # Held while this process has the file: adopters skip a locked file.
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._fd = fd
        return self._fd

    def add(self, record: CallRecord) -> bool:
        """Append ``record`` to the file unless ``limit`` are held already.

        Raises:
            OSError: the file cannot be written (nothing was added).
        """
        text, checksum = encode_record(record)
        line = f"{checksum} {text}\n".encode()
        with self._lock:
            if self._count >= self.limit:
                return False
            fd = self._open()
            written = os.write(fd, line)
            if written != len(line):
                # A short write (disk full) leaves half a line: cut it off, so the next
                # record starts on a line of its own.
                os.ftruncate(fd, self._end)
                raise OSError(f"short write to {self.path} ({written} of {len(line)} bytes)")
            self._end += written
            self._count += 1
            return True

    def take(self, n: int) -> list[CallRecord]:
        """The oldest ``n`` records, read back from the file, left in place until :meth:`done`.

        Raises:
            OSError: the file cannot be read.
        """
        with self._lock:
            if self._fd is None or self._count == 0:
                self._taken = (0, self._head)
                return []
            records: list[CallRecord] = []
            lines = 0
            offset = self._head
            size = _READ
            while lines < n and offset < self._end:
                chunk = os.pread(self._fd, min(size, self._end - offset), offset)
                cut = chunk.rfind(b"\n")
                if cut < 0:
                    size *= 2  # one line longer than a read: read more (every line ends)
                    continue
                for line in chunk[: cut + 1].splitlines(keepends=True):
                    if lines == n:
                        break
                    offset += len(line)
                    lines += 1
                    record = _decode_line(line, self.path)
                    if record is None:
                        self._corrupt += 1
                    else:
                        records.append(record)
            self._taken = (lines, offset)
            return records

    def done(self) -> None:
        """Drop the records the last :meth:`take` returned; empty the file when none is left."""
        with self._lock:
            lines, offset = self._taken
            self._taken = (0, offset)
            self._count -= lines
            self._head = offset
            if self._count == 0 and self._fd is not None:
                os.ftruncate(self._fd, 0)
                self._head = self._end = 0

    def close(self) -> None:
        """Close the file (freeing its lock for adoption); remove it when empty."""
        with self._lock:
            fd, self._fd = self._fd, None
            if fd is None:
                return
            try:
                if self._count == 0:
                    self.path.unlink(missing_ok=True)
                elif self._head > 0:
                    # Records already replayed are at the head: rewrite the file without them,
                    # so whoever adopts it does not replay them twice.
                    rest = os.pread(fd, self._end - self._head, self._head)
                    tmp = self.path.with_suffix(".tmp")
                    tmp.write_bytes(rest)
                    os.replace(tmp, self.path)
            finally:
                os.close(fd)


def _decode_line(line: bytes, path: Path) -> CallRecord | None:
    checksum, _, text = line.rstrip(b"\n").partition(b" ")
    try:
        return decode_record(text, checksum)
    except Exception as exc:  # a torn line must not stop the others from being replayed
        log.warning("ledger spill %s: skipping a corrupt line: %s", path, exc)
        return None


def orphan_files(directory: Path, own: Path | None) -> Iterator[tuple[Path, int]]:
    """Spill files in ``directory`` whose owner has closed them or died, each opened and locked.

    Yields ``(path, fd)`` with the lock held; the caller replays the file, then removes it (or
    leaves it for later) and closes ``fd``. Needs ``flock``: yields nothing on Windows.
    """
    if sys.platform == "win32":
        return
    try:
        paths = sorted(directory.glob(_PATTERN))
    except OSError:
        return
    for path in paths:
        if path == own:
            continue
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue  # removed meanwhile by another adopter
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Another adopter may have replayed and removed it between our open and our lock:
            # then this inode has no name any more, and its records are in the store.
            if os.fstat(fd).st_nlink == 0:
                raise BlockingIOError
        except OSError:
            os.close(fd)
            continue
        try:
            yield path, fd
        finally:
            # Also when the caller stops early (the store failed during a replay).
            with contextlib.suppress(OSError):
                os.close(fd)


def read_spill_file(fd: int, path: Path) -> list[CallRecord]:
    """Every record of an (adopted) spill file; corrupt lines are logged and skipped."""
    with os.fdopen(os.dup(fd), "rb") as f:
        return [r for line in f if (r := _decode_line(line, path)) is not None]
