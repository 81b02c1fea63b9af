"""Ledger store on Redis: shared aggregate counters plus the stream of records.

For processes and hosts that share accounting. Each append is one Lua script call, atomic on
the server, that adds the records' counters (:func:`~accounting.ledger.base.counters`) to
per-day hashes and XADDs each record's JSON to a stream, so counters and stream never disagree.
Keys, under ``prefix`` (default ``llmcache:ledger:``):

- ``<prefix>totals:<YYYY-MM-DD>:<dimension>``: a hash per UTC day and dimension (``user``,
  ``feature``, ``task``, ``model``, ``all``), field ``<counter>:<name>`` (e.g.
  ``output_cost:alice``), HINCRBY'd. Money is integer pico-dollars: exact, and atomic to add.
  One small hash per day and dimension. With ``aggregate_retention`` (400 days by default) the
  script that increments a hash also sets it to expire that many seconds after the end of its
  day, or after now for a day written to after its end (a late replay), whichever is later; so
  old days leave the server by themselves and a hash never exists without an expiry.
  ``aggregate_retention=None`` keeps them forever (the server then grows by five hashes a day).
- ``<prefix>records``: the stream, one entry per record, fields ``r`` (the record's JSON) and
  ``h`` (its checksum). With ``maxlen`` set, each XADD trims the stream to about ``maxlen``
  entries (``MAXLEN ~``: Redis trims whole nodes, so a few more may stay); the counters are
  not affected by the trim. Without it (the default) the stream keeps every record and grows
  without bound: set ``maxlen`` on a long-lived server (a small record takes about 600 bytes).
- ``<prefix>seen:<YYYY-MM-DD>``: a set per UTC day (of ``record.time``) of the ids of the
  records written, which makes writes idempotent (below). Each write sets it to expire
  ``dedupe_retention`` seconds (7 days by default) after the end of its day or after now,
  whichever is later. It costs about 90 bytes of server memory per record (a small record's
  stream entry takes about 600).

Each record is counted once. A record may be written again after a crash (a process that died
while replaying its spill leaves the batch it was writing to be replayed once more) or when a
reply was lost (a timeout after the server applied the write): the script first checks every
record's id against its day's set and, if any is there, writes nothing and names them; the
client drops those and sends the rest again, with counters summed without them. So a record
written again within ``dedupe_retention`` of its previous write adds nothing; later it would
be counted twice.

Durability is the server's: an append returns once the server applied it; whether that
survives a server crash depends on its persistence (``appendonly yes`` and ``appendfsync``).

Redis Cluster: the script touches several keys, which must then share a slot: put a hash
tag in the prefix (``llmcache:{ledger}:``) and pass a cluster client.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final
from urllib.parse import urlsplit

import redis
import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

from accounting._exceptions import LedgerError
from accounting.ledger.base import (
    LedgerTotals,
    aggregate,
    check_dimension,
    day_bounds,
    day_of,
    decode_record,
    encode_record,
)
from accounting.record import CallRecord

__all__ = [
    "DEFAULT_AGGREGATE_RETENTION",
    "DEFAULT_DEDUPE_RETENTION",
    "DEFAULT_PREFIX",
    "RedisStore",
]

log = logging.getLogger("accounting.ledger")

#: Key prefix used when none is given.
DEFAULT_PREFIX: Final = "llmcache:ledger:"
# Stream entries read per XRANGE while iterating records().
_PAGE: Final = 500
# RedisClusterException is not a RedisError: a cluster client raises it when no node can be
# reached. Without it here, records() and totals() let it out as itself, not as LedgerError.
_ERRORS: Final = (redis.exceptions.RedisError, redis.exceptions.RedisClusterException, OSError)
#: Seconds after a record was written (and after its UTC day) during which writing it again
#: adds nothing.
DEFAULT_DEDUPE_RETENTION: Final = 7 * 86400.0
#: Seconds the aggregate hashes of a day are kept after the end of that day (or after the last
#: write to them, if later): 400 days, so this day last year can still be read.
DEFAULT_AGGREGATE_RETENTION: Final = 400 * 86400.0
# One script call per append: the stream entries and the counter increments run atomically,
# and one command costs the client far less than a MULTI of dozens of HINCRBYs.
# KEYS: the stream, then the seen sets and totals hashes that ARGV points at by index.
# ARGV: maxlen (0 = no trim), the number of records n, the number of seen sets m; per seen set
# its index in KEYS, its expiry (Unix ms), the number of ids c and the c ids; the number of
# totals hashes to expire e and per hash its index in KEYS and its expiry (Unix ms); per record
# its JSON and checksum; then per (day, dimension, name): the index of its hash, the name, and its
# counters as "calls=1,output_cost=12" (counter names are [a-z_]; the name, which may hold any
# character, travels on its own). Increments reach HINCRBY as the digit strings they arrived
# as: Lua numbers are doubles and would round amounts past 2^53 pico-dollars, which is also why
# the counters are summed by the client, and why a batch holding a record written already is
# refused whole (the ids written already are returned) rather than written in part.
# Ids are checked and added with SMISMEMBER and SADD of up to 1,000 ids at a time (Lua's
# unpack has a limit); a server older than Redis 6.2 has no SMISMEMBER: one SISMEMBER each.
_APPEND: Final = """
local maxlen = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local m = tonumber(ARGV[3])
local sets = {}
local i = 4
for s = 1, m do
  local c = tonumber(ARGV[i + 2])
  sets[s] = {KEYS[tonumber(ARGV[i])], ARGV[i + 1], i + 3, i + 2 + c}
  i = i + 3 + c
end
local e = tonumber(ARGV[i])
local expiring = {}
for x = 1, e do
  expiring[x] = {KEYS[tonumber(ARGV[i + 2 * x - 1])], ARGV[i + 2 * x]}
end
i = i + 1 + 2 * e
local seen = {}
for _, set in ipairs(sets) do
  for from = set[3], set[4], 1000 do
    local to = math.min(from + 999, set[4])
    local found = redis.pcall('SMISMEMBER', set[1], unpack(ARGV, from, to))
    if type(found) == 'table' and found.err then
      found = {}
      for k = from, to do
        found[k - from + 1] = redis.call('SISMEMBER', set[1], ARGV[k])
      end
    end
    for k, f in ipairs(found) do
      if f == 1 then
        seen[#seen + 1] = ARGV[from + k - 1]
      end
    end
  end
end
if #seen > 0 then
  return seen
end
for _, set in ipairs(sets) do
  for from = set[3], set[4], 1000 do
    redis.call('SADD', set[1], unpack(ARGV, from, math.min(from + 999, set[4])))
  end
  redis.call('PEXPIREAT', set[1], set[2])
end
for _ = 1, n do
  if maxlen > 0 then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'r', ARGV[i], 'h', ARGV[i + 1])
  else
    redis.call('XADD', KEYS[1], '*', 'r', ARGV[i], 'h', ARGV[i + 1])
  end
  i = i + 2
end
while i <= #ARGV do
  local key = KEYS[tonumber(ARGV[i])]
  local suffix = ':' .. ARGV[i + 1]
  for counter, c in string.gmatch(ARGV[i + 2], '([%w_]+)=(%-?%d+)') do
    redis.call('HINCRBY', key, counter .. suffix, c)
  end
  i = i + 3
end
for _, hash in ipairs(expiring) do
  redis.call('PEXPIREAT', hash[1], hash[2])
end
return seen
"""


def _hash_tag(prefix: str) -> str | None:
    """The hash tag of the keys under ``prefix``, or ``None``.

    Redis hashes only the text between a key's first ``{`` and the first ``}`` after it, when
    that text is not empty; the suffixes put after the prefix hold no braces.
    """
    start = prefix.find("{")
    end = prefix.find("}", start + 1) if start >= 0 else -1
    return prefix[start + 1 : end] if end > start + 1 else None


def _redact(url: str) -> str:
    # A password in the URL must not reach logs or error messages.
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable url>"
    if password is None:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    netloc = userinfo.partition(":")[0] + ":***@" + hostinfo
    return f"{parts.scheme}://{netloc}{parts.path}"


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class RedisStore:
    """Ledger records and aggregate counters on a Redis server, shared by processes and hosts.

    Args:
        url: ``redis://``, ``rediss://`` or ``unix://`` URL (with database and credentials);
            or pass ``client`` instead.
        client: a ``redis.Redis`` (or cluster) client to use as it is configured; it is not
            closed by :meth:`close`.
        prefix: put before every key.
        maxlen: trim the record stream to about this many entries (``None``: keep all).
        socket_timeout: seconds a command may take (for a client made from ``url``).
        connect_timeout: seconds a connection attempt may take (for a client made from ``url``).
        skew: seconds by which a record's time may precede its arrival in the stream (the
            call's duration, clock differences between hosts, a replay after an outage):
            :meth:`records` starts its scan this much before ``since``.
        dedupe_retention: seconds during which a record's id is remembered after it was
            written (and after the end of its UTC day), so that writing it again adds nothing
            (7 days by default; see the module).
        aggregate_retention: seconds the aggregate hashes of a UTC day are kept after the
            end of that day (or after the latest write to them, if later): 400 days by
            default; ``None`` keeps them forever (see the module).

    Raises:
        ValueError: neither or both of ``url`` and ``client``, or a bad option value.

    A client made from ``url`` makes no retries: the :class:`~accounting.ledger.Ledger`
    decides what a failure means. Construction touches no network. Thread-safe.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Any = None,
        prefix: str = DEFAULT_PREFIX,
        maxlen: int | None = None,
        socket_timeout: float = 0.25,
        connect_timeout: float = 0.25,
        skew: float = 3600.0,
        dedupe_retention: float = DEFAULT_DEDUPE_RETENTION,
        aggregate_retention: float | None = DEFAULT_AGGREGATE_RETENTION,
    ) -> None:
        if (url is None) == (client is None):
            raise ValueError("RedisStore needs exactly one of url or client")
        if maxlen is not None and maxlen < 1:
            raise ValueError(f"RedisStore maxlen must be >= 1 or None, got {maxlen}")
        if socket_timeout <= 0 or connect_timeout <= 0:
            raise ValueError("RedisStore socket_timeout and connect_timeout must be > 0")
        if skew < 0:
            raise ValueError(f"RedisStore skew must be >= 0, got {skew}")
        if dedupe_retention <= 0:
            raise ValueError(f"RedisStore dedupe_retention must be > 0, got {dedupe_retention}")
        if aggregate_retention is not None and aggregate_retention <= 0:
            raise ValueError(
                f"RedisStore aggregate_retention must be > 0 or None, got {aggregate_retention}"
            )
        if isinstance(client, redis.RedisCluster) and _hash_tag(prefix) is None:
            # Without a hash tag the stream, seen and totals keys fall in different slots, and
            # each append failed in the script call ("EVALSHA - all keys must map to the same
            # key slot"): the Ledger kept every record in its spill, retrying forever.
            raise ValueError(
                f"RedisStore prefix {prefix!r} has no hash tag, needed on a Redis Cluster (the "
                "append script touches several keys, which must share a slot): put one in it, "
                "e.g. 'llmcache:{ledger}:'"
            )
        self.prefix = prefix
        self.maxlen = maxlen
        self.skew = skew
        self.dedupe_retention = dedupe_retention
        self.aggregate_retention = aggregate_retention
        self.stream = f"{prefix}records"
        if url is not None:
            self.name = f"redis:{_redact(url)}"
            self._client: Any = redis.Redis.from_url(
                url,
                socket_timeout=socket_timeout,
                socket_connect_timeout=connect_timeout,
                retry=Retry(NoBackoff(), 0),
            )
            self._own = True
        else:
            self.name = f"redis:{client!r}"
            self._client = client
            self._own = False
        self._closed = False
        self._corrupt = 0
        self._duplicates = 0
        # EVALSHA, loaded on first use (and again after a server restart: NOSCRIPT).
        self._script = self._client.register_script(_APPEND)

    def __repr__(self) -> str:
        return f"RedisStore({self.name!r}, prefix={self.prefix!r})"

    @property
    def corrupt(self) -> int:
        """Stream entries (and counter fields) skipped because they failed to decode."""
        return self._corrupt

    @property
    def duplicates(self) -> int:
        """Records not written because they had been already (a replay, a lost reply)."""
        return self._duplicates

    def seen_key(self, day: str) -> str:
        """The set of the ids of the records of UTC day ``day`` (``YYYY-MM-DD``) written."""
        return f"{self.prefix}seen:{day}"

    def totals_key(self, day: str, by: str) -> str:
        """The hash holding dimension ``by`` of UTC day ``day`` (``YYYY-MM-DD``)."""
        return f"{self.prefix}totals:{day}:{by}"

    def _live(self) -> Any:
        if self._closed:
            raise LedgerError(f"{self!r} is closed", store=self.name)
        return self._client

    def _error(self, exc: BaseException) -> LedgerError:
        return LedgerError(f"ledger {self.name}: {type(exc).__name__}: {exc}", store=self.name)

    # -- LedgerStore ----------------------------------------------------------------------------

    def append(self, record: CallRecord) -> None:
        """Add one record's counters and stream entry, atomically.

        Raises:
            LedgerError: the server did not confirm the write (down, timeout, refused).
        """
        self.append_many((record,))

    def append_many(self, records: Sequence[CallRecord]) -> None:
        """Add the counters and stream entries of ``records`` atomically, each record once.

        The counters of the batch are summed first (one HINCRBY per day, dimension, name and
        counter), so a batch of hits by a few users costs a few increments and one XADD each.
        Records written already (same id, within ``dedupe_retention``) are left out and
        counted in :attr:`duplicates`; that takes a second script call, only then.

        Raises:
            LedgerError: the server did not confirm the write; it applied all or nothing
                (unless the reply alone was lost, and then writing again adds nothing).
        """
        unique = list({r.id: r for r in records}.values())
        self._duplicates += len(records) - len(unique)
        while unique:
            client = self._live()
            keys, args = self._arguments(unique)
            try:
                seen = self._script(keys=keys, args=args, client=client)
            except _ERRORS as exc:
                raise self._error(exc) from exc
            if not seen:
                return
            written = {_text(i) for i in seen}
            self._duplicates += len(written)
            unique = [r for r in unique if r.id not in written]

    def _arguments(self, records: Sequence[CallRecord]) -> tuple[list[str], list[str | int]]:
        """KEYS and ARGV of the append script for ``records`` (distinct ids)."""
        keys = [self.stream]
        per_day: dict[str, list[str]] = {}
        args: list[str | int] = []
        for record in records:
            day = day_of(record.time)
            ids = per_day.get(day)
            if ids is None:
                ids = per_day[day] = []
            ids.append(record.id)
        now = time.time()
        head: list[str | int] = [self.maxlen or 0, len(records), len(per_day)]
        for day, ids in per_day.items():
            keys.append(self.seen_key(day))
            _, _, end = day_bounds(day)
            head.extend((len(keys), int((max(end, now) + self.dedupe_retention) * 1000), len(ids)))
            head.extend(ids)
        for record in records:
            args.extend(encode_record(record))
        index: dict[str, int] = {}
        expiring: list[str | int] = []
        retention = self.aggregate_retention
        for (day, by, name), values in aggregate(records).items():
            key = self.totals_key(day, by)
            k = index.get(key)
            if k is None:
                keys.append(key)
                k = index[key] = len(keys)
                if retention is not None:
                    _, _, end = day_bounds(day)
                    expiring.extend((k, int((max(end, now) + retention) * 1000)))
            args.extend((k, name, ",".join(f"{c}={n}" for c, n in values.items())))
        head.append(len(expiring) // 2)
        return keys, head + expiring + args

    def records(
        self, since: float | None = None, until: float | None = None
    ) -> Iterator[CallRecord]:
        """The records with ``since <= time < until``, in the order they reached the stream.

        The scan starts ``skew`` seconds before ``since`` and runs to the end of the stream
        (a late replay may hold old records). Records trimmed by ``maxlen`` are gone; corrupt
        entries are skipped, logged with their stream id and counted in :attr:`corrupt`.

        Raises:
            LedgerError: the server cannot be read.
        """
        client = self._live()
        start = "-" if since is None else f"{max(0, int((since - self.skew) * 1000))}-0"
        while True:
            try:
                page = client.xrange(self.stream, min=start, max="+", count=_PAGE)
            except _ERRORS as exc:
                raise self._error(exc) from exc
            for sid, fields in page:
                try:
                    record = decode_record(_field(fields, "r"), _field(fields, "h"))
                except Exception as exc:  # a report must outlive any bad entry
                    self._corrupt += 1
                    log.warning(
                        "ledger %s: skipping corrupt stream entry %s: %s",
                        self.name,
                        _text(sid),
                        exc,
                    )
                    continue
                if (since is None or record.time >= since) and (
                    until is None or record.time < until
                ):
                    yield record
            if len(page) < _PAGE:
                return
            start = "(" + _text(page[-1][0])

    def close(self) -> None:
        """Stop using the server; closes the client if this store made it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._own:
            self._client.close()

    # -- TotalsStore ----------------------------------------------------------------------------

    def totals(self, day: str | dt.date, *, by: str = "user") -> dict[str, LedgerTotals]:
        """Totals of the UTC day ``day`` per name of dimension ``by``, read from its hash.

        Raises:
            ValueError: ``by`` is not a dimension, or ``day`` not a ``YYYY-MM-DD`` date.
            LedgerError: the server cannot be read.
        """
        check_dimension(by)
        name, _, _ = day_bounds(day)
        client = self._live()
        try:
            raw = client.hgetall(self.totals_key(name, by))
        except _ERRORS as exc:
            raise self._error(exc) from exc
        per: dict[str, dict[str, int]] = {}
        for key, value in raw.items():
            counter, sep, who = _text(key).partition(":")
            try:
                if not sep:
                    raise ValueError("no ':' in the field name")
                n = int(value)
            except ValueError as exc:
                self._corrupt += 1
                log.warning("ledger %s: skipping bad counter %r: %s", self.name, _text(key), exc)
                continue
            per.setdefault(who, {})[counter] = n
        return {who: LedgerTotals.from_counters(v) for who, v in sorted(per.items())}


def _field(fields: Mapping[Any, Any], name: str) -> Any:
    # Stream fields come back as bytes, or as str from a client with decode_responses=True.
    value = fields.get(name.encode())
    return fields.get(name) if value is None else value
