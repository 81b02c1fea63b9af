"""The metric instruments, made once per meter, and recording a call's points on them."""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry.metrics import Counter, Histogram, Meter

from accounting.export.attributes import (
    CACHE_LOOKUPS,
    COST_SAVED,
    COST_SPENT,
    DURATION_BUCKETS,
    DURATION_HISTOGRAM,
    TOKEN_USAGE_BUCKETS,
    UNPRICED_CALLS,
    USAGE_HISTOGRAM,
    MetricPoint,
)

__all__ = ["Instruments"]


class Instruments:
    """The GenAI conventions' client histograms and our cost and cache counters on a meter.

    The histograms carry the conventions' bucket boundaries as advice: an SDK uses them unless
    the application configured a view of its own for the instrument.
    """

    def __init__(self, meter: Meter) -> None:
        token_usage: Histogram = meter.create_histogram(
            USAGE_HISTOGRAM,
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=list(TOKEN_USAGE_BUCKETS),
        )
        duration: Histogram = meter.create_histogram(
            DURATION_HISTOGRAM,
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        spent: Counter = meter.create_counter(
            COST_SPENT,
            unit="{USD}",
            description="What LLM calls cost, in US dollars (the ledger keeps exact amounts).",
        )
        saved: Counter = meter.create_counter(
            COST_SAVED,
            unit="{USD}",
            description="What cache hits saved: the cost of the calls they replaced, in USD.",
        )
        lookups: Counter = meter.create_counter(
            CACHE_LOOKUPS, unit="{lookup}", description="Cache lookups, by outcome and tier."
        )
        unpriced: Counter = meter.create_counter(
            UNPRICED_CALLS,
            unit="{call}",
            description="Calls whose model had no known price (their cost is unknown, not 0).",
        )
        self._histograms = {USAGE_HISTOGRAM: token_usage, DURATION_HISTOGRAM: duration}
        self._counters = {
            COST_SPENT: spent,
            COST_SAVED: saved,
            CACHE_LOOKUPS: lookups,
            UNPRICED_CALLS: unpriced,
        }

    def record(self, points: Iterable[MetricPoint]) -> None:
        """Record each point on its instrument.

        Raises:
            KeyError: a point names no instrument made here (a bug, not a runtime fault).
        """
        for point in points:
            histogram = self._histograms.get(point.instrument)
            if histogram is not None:
                histogram.record(point.value, point.attributes)
            else:
                self._counters[point.instrument].add(point.value, point.attributes)
