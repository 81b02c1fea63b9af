"""Cost reports: ledger records grouped by user, feature, task, model, … with exact totals.

The core is pure: :func:`build_report` folds any iterable of :class:`CallRecord` into rows, and
:func:`render` prints them as a table, CSV or JSON. ``llmcache report`` reads the ledger and
calls both; applications get the same rows from Python.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from accounting._exceptions import ConfigError
from accounting.attribute import UNATTRIBUTED
from accounting.money import ZERO, text
from accounting.record import CacheOutcome, CallRecord, Status

__all__ = ["DIMENSIONS", "FORMATS", "ReportRow", "build_report", "parse_since", "render", "total"]

#: What a report can be grouped by; ``tag:NAME`` groups by a tag as well.
DIMENSIONS = (
    "user",
    "feature",
    "task",
    "model",
    "model_served",
    "provider",
    "operation",
    "day",
    "status",
)
FORMATS = ("table", "csv", "json")

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(slots=True, kw_only=True)
class ReportRow:
    """Totals of one group of calls.

    ``cost`` sums the priced calls only; ``unpriced`` counts the calls whose cost is unknown, so
    a row with unpriced calls is a lower bound, and every format says so.
    """

    group: dict[str, str]
    calls: int = 0
    hits: int = 0
    misses: int = 0
    bypassed: int = 0
    errors: int = 0
    refused: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    estimated_calls: int = 0
    cost: Decimal = ZERO
    saved: Decimal = ZERO
    unpriced: int = 0
    unpriced_hits: int = 0
    compression_tokens_saved: int = 0
    latency_total: float = 0.0
    _first: float = field(default=0.0, repr=False)

    @property
    def hit_rate(self) -> float | None:
        """Hits ÷ cache lookups (hits + misses); ``None`` when the cache was never consulted."""
        looked_up = self.hits + self.misses
        return self.hits / looked_up if looked_up else None

    def add(self, record: CallRecord) -> None:
        """Fold one record into the totals."""
        self.calls += 1
        if record.cache is CacheOutcome.HIT:
            self.hits += 1
            if record.saved is None:
                self.unpriced_hits += 1
            else:
                self.saved += record.saved
        elif record.cache is CacheOutcome.MISS:
            self.misses += 1
        else:
            self.bypassed += 1
        if record.status is Status.REFUSED:
            self.refused += 1
        elif record.status is Status.PROVIDER_ERROR:
            self.errors += 1
        usage = record.usage
        self.input_tokens += usage.input
        self.cached_input_tokens += usage.cached_input
        self.cache_write_tokens += usage.cache_write
        self.output_tokens += usage.output
        self.reasoning_tokens += usage.reasoning
        self.estimated_calls += usage.estimated
        if record.cost is None:
            if record.spent:
                self.unpriced += 1
        else:
            self.cost += record.cost.total
        self.compression_tokens_saved += record.compression_tokens_saved
        self.latency_total += record.latency

    def to_dict(self) -> dict[str, Any]:
        """JSON form: money as strings, the hit rate as a fraction or ``None``."""
        return {
            **self.group,
            "calls": self.calls,
            "hits": self.hits,
            "misses": self.misses,
            "bypassed": self.bypassed,
            "errors": self.errors,
            "refused": self.refused,
            "hit_rate": None if self.hit_rate is None else round(self.hit_rate, 4),
            "input_tokens": self.input_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "output_tokens": self.output_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "estimated_calls": self.estimated_calls,
            "cost_usd": text(self.cost),
            "saved_usd": text(self.saved),
            "unpriced_calls": self.unpriced,
            "unpriced_hits": self.unpriced_hits,
            "compression_tokens_saved": self.compression_tokens_saved,
            "mean_latency_s": round(self.latency_total / self.calls, 6) if self.calls else None,
        }


def parse_since(text: str, *, now: float | None = None) -> float:
    """A start time (Unix seconds) from ``7d``, ``24h``, ``30m``, ``2w`` or an ISO date/time (UTC).

    Raises:
        ConfigError: ``text`` is neither form.
    """
    now = time.time() if now is None else now
    match = _DURATION.match(text.strip())
    if match:
        return now - int(match.group(1)) * _SECONDS[match.group(2)]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"{text!r} is neither a duration (7d, 24h, 30m, 2w) nor an ISO date", where="--since"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _check_dimensions(by: Sequence[str]) -> None:
    for name in by:
        if name in DIMENSIONS or (name.startswith("tag:") and len(name) > 4):
            continue
        known = ", ".join(DIMENSIONS)
        raise ConfigError(f"unknown dimension {name!r}; use {known} or tag:NAME", where="--by")
    if len(set(by)) != len(by):
        raise ConfigError(f"a dimension is repeated in {list(by)}", where="--by")


def _value(record: CallRecord, name: str) -> str:
    who = record.attribution
    value: str | None
    if name == "user":
        value = who.user
    elif name == "feature":
        value = who.feature
    elif name == "task":
        value = who.task
    elif name == "model":
        value = record.model_requested
    elif name == "model_served":
        value = record.model_served or "unknown"
    elif name == "provider":
        value = record.provider
    elif name == "operation":
        value = record.operation
    elif name == "day":
        value = datetime.fromtimestamp(record.time, UTC).date().isoformat()
    elif name == "status":
        value = record.status.value
    else:
        value = who.tags.get(name[4:])
    return UNATTRIBUTED if value is None else value


def build_report(
    records: Iterable[CallRecord],
    *,
    by: Sequence[str] = ("user",),
    since: float | None = None,
    until: float | None = None,
) -> list[ReportRow]:
    """Group ``records`` by the dimensions ``by`` and total each group.

    Records outside ``[since, until)`` are left out. Rows come sorted by cost, highest first
    (then by group). A dimension no ``attribute`` set is reported as ``unattributed``.

    Raises:
        ConfigError: an unknown or repeated dimension.
    """
    _check_dimensions(by)
    rows: dict[tuple[str, ...], ReportRow] = {}
    for record in records:
        if since is not None and record.time < since:
            continue
        if until is not None and record.time >= until:
            continue
        group = tuple(_value(record, name) for name in by)
        row = rows.get(group)
        if row is None:
            row = rows[group] = ReportRow(group=dict(zip(by, group, strict=True)))
        row.add(record)
    return sorted(rows.values(), key=lambda r: (-r.cost, tuple(r.group.values())))


def total(rows: Iterable[ReportRow]) -> ReportRow:
    """One row summing ``rows`` (its group is empty)."""
    whole = ReportRow(group={})
    for row in rows:
        for name in (
            "calls",
            "hits",
            "misses",
            "bypassed",
            "errors",
            "refused",
            "input_tokens",
            "cached_input_tokens",
            "cache_write_tokens",
            "output_tokens",
            "reasoning_tokens",
            "estimated_calls",
            "cost",
            "saved",
            "unpriced",
            "unpriced_hits",
            "compression_tokens_saved",
            "latency_total",
        ):
            setattr(whole, name, getattr(whole, name) + getattr(row, name))
    return whole


def render(rows: Sequence[ReportRow], *, by: Sequence[str], fmt: str = "table") -> str:
    """``rows`` as a ``table`` (for people), ``csv`` or ``json`` (for programs).

    Raises:
        ConfigError: an unknown format.
    """
    if fmt == "json":
        return json.dumps([row.to_dict() for row in rows], indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        fields = [*by, *(k for k in ReportRow(group={}).to_dict())]
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow(row.to_dict())
        return out.getvalue()
    if fmt == "table":
        return _table(rows, by)
    raise ConfigError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}", where="--format")


def _money(amount: Decimal, unpriced: int) -> str:
    text = f"${amount:,.6f}" if amount < 1 else f"${amount:,.2f}"
    return f"{text} +{unpriced} unpriced" if unpriced else text


def _table(rows: Sequence[ReportRow], by: Sequence[str]) -> str:
    if not rows:
        return "no calls recorded in this period\n"
    header = [
        *by,
        "calls",
        "hit rate",
        "input tok",
        "cached",
        "output tok",
        "reasoning",
        "cost",
        "saved",
    ]
    body = []
    for row in [*rows, total(rows)]:
        rate = "-" if row.hit_rate is None else f"{row.hit_rate:.1%}"
        group = (
            [row.group.get(name, "") for name in by]
            if row.group
            else ["TOTAL", *[""] * (len(by) - 1)]
        )
        body.append(
            [
                *group,
                f"{row.calls:,}",
                rate,
                f"{row.input_tokens:,}",
                f"{row.cached_input_tokens:,}",
                f"{row.output_tokens:,}",
                f"{row.reasoning_tokens:,}",
                _money(row.cost, row.unpriced),
                _money(row.saved, row.unpriced_hits),
            ]
        )
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    left = len(by)

    def fmt_line(cells: list[str]) -> str:
        parts = [
            cell.ljust(width) if i < left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    lines = [fmt_line(header), "  ".join("-" * w for w in widths)]
    lines += [fmt_line(cells) for cells in body[:-1]]
    lines += ["  ".join("-" * w for w in widths), fmt_line(body[-1])]
    unpriced = sum(row.unpriced for row in rows)
    if unpriced:
        lines.append(
            f"{unpriced} call(s) used a model with no known price: their cost is not in the "
            "totals (add a price override to count it)."
        )
    return "\n".join(lines) + "\n"
