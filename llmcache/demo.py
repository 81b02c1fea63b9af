"""``llmcache demo``: the cache at work on the embedded default (memory + disk).

The demo is a list of :class:`Section` objects run in order against one :class:`DemoContext`,
which holds the cache of "this process", the simulated model and the output. A new part of
llmcache shows itself by adding a section to :data:`SECTIONS`.

The model is simulated (a 200 ms sleep), so the demo needs no network and no API key. Its
entries live in their own namespace, invalidated at the start of every run, so each run tells
the same story whatever an earlier run left on disk.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TextIO

from accounting.export import BatchCallExporter, CallExporter
from llmcache.cache import Cache, Fetched
from llmcache.config import CacheConfig
from llmcache.decorators import CachedFunction, cached
from llmcache.stats import CacheStats

__all__ = ["LATENCY", "NAMESPACE", "SECTIONS", "DemoContext", "Section", "SlowModel", "run"]

#: Seconds one simulated LLM call takes.
LATENCY = 0.2
#: Namespace of the demo's entries, invalidated at the start of every run.
NAMESPACE = "demo"
# Demo entries expire by themselves: earlier runs' entries (unreachable after the invalidation)
# then do not sit in the user's disk cache until it fills up.
_ENTRY_TTL = 3600.0
# Seconds the demo's end waits, at most, for its spans to reach the OTLP backend.
_EXPORT_TIMEOUT = 5.0

# Four agents work in rounds: in each round every agent asks one question at the same moment.
# Round 1 has all four ask the same new question (single-flight: one call); later rounds mix new
# questions with ones already answered (hits).
QUESTIONS = {
    "A": "What is our refund policy?",
    "B": "Summarize ticket #4512.",
    "C": "Which plan includes SSO?",
    "D": "How do I rotate an API key?",
}
ROUNDS = ("AAAA", "BCBC", "ABCA", "DADB", "CDAB", "BADC")
AGENTS = 4


class SlowModel:
    """A stand-in for an LLM: each call sleeps ``latency`` seconds and is counted."""

    def __init__(self, latency: float = LATENCY) -> None:
        self.latency = latency
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, question: str) -> str:
        """Answer ``question`` slowly."""
        with self._lock:
            self.calls += 1
        time.sleep(self.latency)
        return f"(a model's answer to: {question})"


def _cached_ask(cache: Cache, model: SlowModel) -> CachedFunction[[str], str]:
    # Built by a factory so every "process" of the demo gets the same function, bound to its
    # own cache. `key=` says the question alone identifies a call: the captured model is a
    # stand-in with no canonical encoding and must not split entries between "processes".
    @cached(cache=cache, ttl=_ENTRY_TTL, key=lambda question: question)
    def ask(question: str) -> str:
        """Ask the model a question."""
        return model(question)

    return ask


class DemoContext:
    """What the sections share: output, configuration, the model and this process's cache.

    Args:
        config: where the cache lives.
        out: where the demo writes.
        ledger_path: the cost ledger's SQLite file (default: ``default_ledger_path()``, where
            ``llmcache report`` reads).
        exporter: where the wrapped client's calls go as spans
            (:func:`accounting.export.configure_otel`); the demo shuts it down at its end.
            ``None`` exports nothing.
        export_target: where ``exporter`` sends them, for the demo's closing line.

    Raises:
        ValueError: the cache directory cannot be opened.
    """

    def __init__(
        self,
        *,
        config: CacheConfig,
        out: TextIO,
        ledger_path: Path | None = None,
        exporter: CallExporter | None = None,
        export_target: str | None = None,
    ) -> None:
        self.config = config
        self.out = out
        self.ledger_path = ledger_path
        self.exporter = exporter
        self.export_target = export_target
        self.model = SlowModel()
        self.cache = config.open(namespace=NAMESPACE)
        self.ask = _cached_ask(self.cache, self.model)

    def say(self, text: str = "") -> None:
        """Write a line and flush, so the story appears as it happens."""
        self.out.write(text + "\n")
        self.out.flush()

    def restart(self) -> None:
        """Simulate a new process: a fresh cache on the same directory (empty memory tier)."""
        self.cache.close()
        self.cache = self.config.open(namespace=NAMESPACE)
        self.ask = _cached_ask(self.cache, self.model)

    def close(self) -> None:
        """Close the current cache and shut the exporter down (both safe to call twice)."""
        try:
            self.cache.close()
        finally:
            if self.exporter is not None:
                self.exporter.shutdown(_EXPORT_TIMEOUT)


@dataclasses.dataclass(frozen=True, slots=True)
class Section:
    """One part of the demo: a title and what it does."""

    title: str
    run: Callable[[DemoContext], None]


# -- the workload ---------------------------------------------------------------------------------


def _outcome(fetched: Fetched[str]) -> str:
    if fetched.info.hit:
        return fetched.info.tier or "?"
    return "coalesced" if fetched.info.coalesced else "ran"


def _workload(ask: Callable[[str], str | Fetched[str]]) -> tuple[float, Counter[str]]:
    """Run the agents' rounds through ``ask``; return the wall time and how each ask was served."""
    barrier = threading.Barrier(AGENTS, timeout=30)
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def agent(index: int) -> None:
        try:
            for round_ in ROUNDS:
                barrier.wait()
                result = ask(QUESTIONS[round_[index]])
                kind = _outcome(result) if isinstance(result, Fetched) else "ran"
                with lock:
                    outcomes[kind] += 1
        except BaseException:
            barrier.abort()  # let the other agents stop instead of waiting for this one
            raise

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=AGENTS) as pool:
        for future in [pool.submit(agent, i) for i in range(AGENTS)]:
            future.result()
    return time.perf_counter() - start, outcomes


_NOT_TIERS = ("ran", "coalesced")


def _served(outcomes: Counter[str]) -> str:
    parts = [f"{outcomes['ran']} calls ran"]
    if outcomes["coalesced"]:
        parts.append(f"{outcomes['coalesced']} shared another agent's call in flight")
    parts += [f"{n} served from {tier}" for tier, n in outcomes.items() if tier not in _NOT_TIERS]
    return ", ".join(parts)


def _stats_table(ctx: DemoContext, before: CacheStats, after: CacheStats) -> None:
    """Print what ``cache.stats()`` counted between two snapshots, per tier and in total."""
    ctx.say(
        f"   {'tier':<8}{'hits':>6}{'misses':>8}{'hit rate':>10}   (cache.stats(), this workload)"
    )
    for old, new in zip(before.tiers, after.tiers, strict=True):
        hits, misses = new.hits - old.hits, new.misses - old.misses
        seen = hits + misses + new.corrupt - old.corrupt
        rate = hits / seen if seen else 0.0
        ctx.say(f"   {new.name:<8}{hits:>6}{misses:>8}{rate:>10.0%}")
    lookups, hits = after.lookups - before.lookups, after.hits - before.hits
    ctx.say(
        f"   all tiers: {lookups} lookups, {hits} hits ({hits / lookups if lookups else 0:.0%}), "
        f"{after.upstream_calls - before.upstream_calls} upstream calls, "
        f"{after.coalesced - before.coalesced} coalesced"
    )


def _fmt(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


# -- sections -------------------------------------------------------------------------------------


def slow_function_made_fast(ctx: DemoContext) -> None:
    """One question asked twice: the second answer comes from memory."""
    ctx.say(f"   @cached def ask(question) -> str   (each real call sleeps {_fmt(LATENCY)})")
    question = "What is a cache?"
    for label in ("first call ", "second call"):
        start = time.perf_counter()
        fetched = ctx.ask.fetch(question)
        took = time.perf_counter() - start
        how = "ran the function" if not fetched.info.hit else f"{fetched.info.tier} hit"
        ctx.say(f"   {label}       {_fmt(took):>9}  {how}")
    repeats = 1000
    start = time.perf_counter()
    tiers = Counter(ctx.ask.fetch(question).info.tier for _ in range(repeats))
    each = (time.perf_counter() - start) / repeats
    served = ", ".join(f"{n:,} {tier} hits" for tier, n in tiers.items())
    ctx.say(f"   {repeats:,} more calls  {_fmt(each):>9}  each on average ({served})")


def agents_with_overlapping_questions(ctx: DemoContext) -> None:
    """Four agents in rounds, uncached then cached: fewer calls, less wall time, single-flight."""
    asked = len(ROUNDS) * AGENTS
    distinct = len(set("".join(ROUNDS)))
    ctx.say(
        f"   {AGENTS} agents, {len(ROUNDS)} rounds, one question each per round "
        f"({asked} questions, {distinct} distinct)"
    )
    bare_time, bare = _workload(ctx.model)
    ctx.say(f"   without the cache  {_fmt(bare_time):>8}   {_served(bare)}")
    before = ctx.cache.stats()
    cached_time, outcomes = _workload(ctx.ask.fetch)
    ctx.say(f"   with the cache     {_fmt(cached_time):>8}   {_served(outcomes)}")
    ctx.say(
        f"   {bare_time / cached_time:.1f}x faster; "
        f"{bare['ran'] - outcomes['ran']} of {bare['ran']} model calls saved"
    )
    ctx.say()
    _stats_table(ctx, before, ctx.cache.stats())


def restart_serves_from_disk(ctx: DemoContext) -> None:
    """A new cache on the same directory: the memory tier is empty, the disk tier is not."""
    ctx.restart()
    ctx.say("   a new Cache on the same directory (as a new process would have): memory is empty")
    before = ctx.cache.stats()
    took, outcomes = _workload(ctx.ask.fetch)
    ctx.say(f"   the same workload  {_fmt(took):>8}   {_served(outcomes)}")
    ctx.say()
    _stats_table(ctx, before, ctx.cache.stats())


def agents_on_a_wrapped_client(ctx: DemoContext) -> None:
    """Four agents on ``wrap(OpenAI(base_url=<local server>))``: see :mod:`llmcache.demo_openai`."""
    # Imported here: the openai SDK takes a while to load, and only this section needs it.
    from llmcache import demo_openai  # noqa: PLC0415

    demo_openai.agents_on_a_wrapped_client(ctx)


#: The demo's sections, in order.
SECTIONS: tuple[Section, ...] = (
    Section("A slow function made fast", slow_function_made_fast),
    Section("Agents asking overlapping questions", agents_with_overlapping_questions),
    Section("Restart: the disk tier remembers", restart_serves_from_disk),
    Section("Agents on a wrapped OpenAI client", agents_on_a_wrapped_client),
)


def run(ctx: DemoContext | None = None, *, sections: Sequence[Section] = SECTIONS) -> None:
    """Run the demo's sections in order, then close the context's cache.

    Args:
        ctx: where the cache lives and where to write (default: ``LLMCACHE_DIR`` or the user
            cache directory, standard output).
        sections: what to show (default: :data:`SECTIONS`).

    Raises:
        ValueError: (only when ``ctx`` is not given) the cache directory cannot be opened.
    """
    if ctx is None:
        ctx = DemoContext(config=CacheConfig.resolve(), out=sys.stdout)
    try:
        generation = ctx.cache.invalidate_namespace(NAMESPACE)
        ctx.say("llmcache demo: the cache at work on the embedded default (memory + disk)")
        ctx.say(f"disk tier: {ctx.config.disk_directory}")
        ctx.say(
            f'namespace "{NAMESPACE}" invalidated for this run (generation {generation}), '
            "so earlier runs do not count"
        )
        start = time.perf_counter()
        for number, section in enumerate(sections, 1):
            ctx.say()
            ctx.say(f"{number}. {section.title}")
            section.run(ctx)
        ctx.say()
        ctx.say(f"done in {_fmt(time.perf_counter() - start)}.")
        if ctx.exporter is not None:
            _finish_export(ctx, ctx.exporter)
        ctx.say(f"See also: llmcache stats, llmcache clear --namespace {NAMESPACE}")
    finally:
        ctx.close()


def _finish_export(ctx: DemoContext, exporter: CallExporter) -> None:
    """Ship the spans before the process exits, and say where they went and how many."""
    # Against a dead backend the shutdown gives up about a second after its first export
    # stalls, not after _EXPORT_TIMEOUT, and counts what it could not deliver before returning.
    exporter.shutdown(_EXPORT_TIMEOUT)
    where = ctx.export_target or "the exporter"
    if not isinstance(exporter, BatchCallExporter):
        ctx.say(f"traces: flushed to {where}")
        return
    stats = exporter.stats()
    calls = stats.exported + stats.failed + stats.dropped
    delivery = stats.delivery
    if delivery is None:
        # The application's own providers: what they do with the spans is theirs to say.
        ctx.say(f"traces: {stats.exported} of {calls} spans handed to OpenTelemetry for {where}")
        return
    failed = delivery.spans_failed + stats.failed
    dropped = delivery.spans_dropped + stats.dropped
    line = f"traces: {delivery.spans_exported} of {calls} spans sent to {where}"
    if failed or dropped:
        line += f"; {failed} failed (backend down or refusing), {dropped} dropped"
    ctx.say(line)
