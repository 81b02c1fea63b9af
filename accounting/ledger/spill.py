"""The spill: records a ledger store could not take (or not yet), kept until it can.

Two forms, one small interface (``add``, ``take``, ``done``, ``close``, and ``snapshot`` for
reports):

- :class:`FileSpill` (a directory given): this process's own file
  ``spill-<pid>-<random>.jsonl`` in the directory. It starts with a fixed-width header line,
  ``#head <offset>``, then holds one line per record (checksum, space, JSON). :meth:`~FileSpill.add`
  writes the line with one ``pwrite`` before it returns, and no fsync: a record that was added
  survives the process being killed (SIGKILL, a crash, an OOM kill: the kernel has it), as the
  SQLite ledger's commits do, but not a power loss or a kernel crash. :meth:`~FileSpill.done`
  rewrites the header in place (no fsync either) to the offset of the first record not yet
  replayed, so whoever adopts the file after a crash starts there: at most the batch being
  replayed when the process died is written twice (the stores keep one copy of a record: see
  their ``append_many``). The file is locked (``flock``) while its owner has it open; a later
  :class:`~accounting.ledger.Ledger` with the same directory *adopts* the files whose lock is
  free (their owner exited or died: :func:`orphan_files`, :meth:`FileSpill.adopt`) and replays
  them into its store. Adoption needs ``flock`` (POSIX); elsewhere the files are kept for an
  operator.
- :class:`MemorySpill` (no directory, or a file that cannot be written): records in memory,
  lost if the process dies before the store works again.

Either holds at most ``limit`` records; beyond that a record is refused (the caller drops and
counts it). Records are replayed in the order they were spilled.
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
# The header: fixed width, so rewriting it never moves the records after it. One small pwrite
# within the file's first page: a killed process leaves the old header or the new one.
_HEAD: Final = b"#head %020d\n"
_HEAD_SIZE: Final = len(_HEAD % 0)


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

    def done(self) -> int:
        """Remove what the last :meth:`take` returned (the store has it now); how many went."""
        ...

    def snapshot(self) -> list[CallRecord]:
        """Every record held now, oldest first, without removing any (for reports).

        Raises:
            OSError: the spill file cannot be read.
        """
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

    def done(self) -> int:
        """Forget the records the last :meth:`take` returned; how many they were."""
        with self._lock:
            taken, self._taken = self._taken, 0
            for _ in range(taken):
                self._records.popleft()
            return taken

    def snapshot(self) -> list[CallRecord]:
        """Every record held now, oldest first, left in place."""
        with self._lock:
            return list(self._records)

    def close(self) -> None:
        """Nothing to release."""


class FileSpill:
    """Records appended to this process's own locked file in ``directory``, at most ``limit``.

    The file is made at the first :meth:`add`, emptied (truncated to its header) whenever
    every record in it has been replayed, and removed by :meth:`close` when empty. A record
    that cannot be written (disk full) raises :class:`OSError` from :meth:`add`; the caller then
    keeps it in memory. Durability: see the module.
    """

    def __init__(self, directory: Path, *, limit: int) -> None:
        self.directory = directory
        self.limit = limit
        self.path = directory / f"spill-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
        self._fd: int | None = None
        self._head = _HEAD_SIZE  # offset of the first record not yet replayed
        self._end = _HEAD_SIZE  # offset after the last record written
        self._count = 0
        self._taken: tuple[int, int] = (0, _HEAD_SIZE)  # (lines, end offset) of the last take()
        self._corrupt = 0
        self._headed = True  # the file has a header to keep the head offset in
        self._lock = threading.Lock()

    @classmethod
    def adopt(cls, path: Path, fd: int) -> FileSpill:
        """The records left in the spill file ``path`` by a process that is gone.

        Args:
            path: the file (for messages).
            fd: the file opened read-write and locked (:func:`orphan_files`); the spill owns it
                from now on and closes it in :meth:`close` (pass a ``dup`` to keep yours).

        Returns:
            A spill that holds the file's records from its header's offset on, takes nothing
            more (``limit`` 0), and persists its progress in the header at each :meth:`done`,
            so a replay cut short by another crash resumes there. A last line cut short by a
            crash is counted in :attr:`corrupt` and ignored.

        Raises:
            OSError: the file cannot be read.
        """
        spill = cls(path.parent, limit=0)
        spill.path = path
        spill._fd = fd
        head = _read_head(fd, path)
        # A file without a header (written before headers existed) keeps its progress in
        # memory only: a header written over its first record would destroy it.
        spill._headed = head > 0
        end = head
        count = 0
        size = os.fstat(fd).st_size
        offset = head
        while offset < size:
            chunk = os.pread(fd, min(_READ, size - offset), offset)
            if not chunk:
                break
            count += chunk.count(b"\n")
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                end = offset + cut + 1
            offset += len(chunk)
        if end < size:
            spill._corrupt += 1
            log.warning("ledger spill %s: ignoring a last line cut short", path)
        spill._head = head
        spill._end = end
        spill._count = count
        spill._taken = (0, head)
        return spill

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
            # Not O_APPEND: records go at self._end and the header at 0, both by pwrite (Linux
            # ignores pwrite's offset on an O_APPEND file).
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                if sys.platform != "win32":
                    # Held while this process has the file: adopters skip a locked file.
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                _write_head(fd, _HEAD_SIZE)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
        return self._fd

    def add(self, record: CallRecord) -> bool:
        """Write ``record`` to the file (one ``pwrite``, done when this returns) unless full.

        Returns:
            ``True`` when the record is in the file, ``False`` when ``limit`` are held already.

        Raises:
            OSError: the file cannot be written (nothing was added).
        """
        text, checksum = encode_record(record)
        line = f"{checksum} {text}\n".encode()
        with self._lock:
            if self._count >= self.limit:
                return False
            fd = self._open()
            written = os.pwrite(fd, line, self._end)
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

    def done(self) -> int:
        """Drop what the last :meth:`take` returned, in the file's header too; how many lines.

        The file is emptied (down to its header) when no record is left.

        Raises:
            OSError: the header cannot be written (the records stay held, to be taken again).
        """
        with self._lock:
            lines, offset = self._taken
            self._taken = (0, offset)
            if lines == 0 or self._fd is None:
                return 0
            if not self._headed:
                self._head = offset
            elif self._count == lines:
                # Truncate first: a crash between the two leaves a header past the end of the
                # file, which an adopter reads as "nothing left".
                os.ftruncate(self._fd, _HEAD_SIZE)
                _write_head(self._fd, _HEAD_SIZE)
                self._head = self._end = _HEAD_SIZE
            else:
                _write_head(self._fd, offset)
                self._head = offset
            self._count -= lines
            return lines

    def snapshot(self) -> list[CallRecord]:
        """Every record held now, read back from the file, oldest first, left in place.

        Corrupt lines are logged and skipped (they are counted in :attr:`corrupt` when
        :meth:`take` meets them, not here: a report must not count them again).

        Raises:
            OSError: the file cannot be read.
        """
        with self._lock:
            if self._fd is None or self._count == 0 or self._end <= self._head:
                return []
            # The lock keeps add/take/done out while the held range is read: one consistent
            # copy. A spill holds at most ``limit`` lines (100,000 by default), read at once.
            data = os.pread(self._fd, self._end - self._head, self._head)
        return [
            r for line in data.splitlines(keepends=True) if (r := _decode_line(line, self.path))
        ]

    def close(self) -> None:
        """Close the file (freeing its lock for adoption); remove it when empty."""
        with self._lock:
            fd, self._fd = self._fd, None
            if fd is None:
                return
            try:
                if self._count == 0:
                    self.path.unlink(missing_ok=True)
                # Else the header says where the records not yet replayed start: an adopter
                # begins there.
            finally:
                os.close(fd)


def _write_head(fd: int, offset: int) -> None:
    header = _HEAD % offset
    if os.pwrite(fd, header, 0) != len(header):
        raise OSError("short write of a spill file's header")


def _read_head(fd: int, path: Path) -> int:
    """Where a spill file's records not yet replayed start (its header's offset)."""
    first = os.pread(fd, _HEAD_SIZE, 0)
    if not first.startswith(b"#"):
        return 0  # no header: every line is a record
    try:
        if len(first) != _HEAD_SIZE or not first.startswith(b"#head "):
            raise ValueError(first)
        return max(_HEAD_SIZE, int(first[6:-1]))
    except ValueError:
        # A header that does not parse: replay every record after it (the stores keep one
        # copy of a record written twice).
        log.warning("ledger spill %s: unreadable header %r; replaying every record", path, first)
        return _HEAD_SIZE


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
    leaves it for later). ``fd`` is closed when the caller moves on. Needs ``flock``: yields
    nothing on Windows.
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
    """The records of a spill file not yet replayed (from its header's offset on).

    Corrupt lines are logged and skipped. ``fd`` may be any descriptor of the file (it is
    read with ``pread``, not moved, not closed).
    """
    head = _read_head(fd, path)
    size = os.fstat(fd).st_size
    data = os.pread(fd, size - head, head) if size > head else b""
    lines = data.splitlines(keepends=True)
    return [r for line in lines if (r := _decode_line(line, path)) is not None]
