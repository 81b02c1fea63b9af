"""The ``llmcache`` command: ``demo``, ``stats``, ``clear``, ``report`` and ``serve``.

``stats`` and ``clear`` work on the configured cache: memory + disk under ``--dir`` (else
``LLMCACHE_DIR``, else the user cache directory), plus Redis with ``--redis-url`` (else
``LLMCACHE_REDIS_URL``). ``report`` reads the cost ledger: ``ledger.sqlite3`` under ``--dir``
(else ``LLMCACHE_DIR``, else the user data directory), or the file or ``redis://`` URL given
with ``--ledger``. Exit status: 0 on success, 2 when the cache cannot be opened or one of
its tiers fails (one line on standard error names the problem), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from accounting import ConfigError, LedgerError, report
from accounting.export import CallExporter
from accounting.ledger import LedgerStore, SQLiteStore, default_ledger_path
from llmcache import __version__, demo
from llmcache.cache import Cache
from llmcache.config import ENV_REDIS_URL, CacheConfig
from llmcache.keys import validate_name
from llmcache.paths import ENV_DIR
from llmcache.testing import __main__ as testing
from llmcache.tiers.base import SizedTier, Tier
from llmcache.tiers.disk import DiskTier
from llmcache.tiers.memory import MemoryTier
from llmcache.tiers.redis import redact

__all__ = ["main"]

# A key no entry is ever stored under: reading it tells whether a tier answers at all.
_PROBE_KEY = "llmcache:~probe"

_COUNTERS_NOTE = (
    "Hit and miss counters are kept per process (Cache.stats() in your application); "
    "this command sees only what the tiers hold."
)


class _Failure(Exception):
    """A problem to report in one line, exit status 2."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``llmcache`` command line and return its exit status.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).
    """
    args = _parser().parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.run
    try:
        return command(args)
    except _Failure as exc:
        print(f"llmcache {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`llmcache stats | head`): stop quietly, as Unix tools do.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (stays open: Python flushes it at exit)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmcache", description="Caching and cost accounting for LLM calls."
    )
    parser.add_argument("--version", action="version", version=f"llmcache {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--dir",
        metavar="DIR",
        help=f"llmcache directory; the disk tier is DIR/cache (default: ${ENV_DIR}, "
        "else the user cache directory)",
    )
    redis_url = argparse.ArgumentParser(add_help=False)
    redis_url.add_argument(
        "--redis-url",
        metavar="URL",
        help=f"add a Redis tier: redis://, rediss:// or unix:// URL (default: ${ENV_REDIS_URL})",
    )

    p = commands.add_parser(
        "demo",
        parents=[where],
        help="show the cache at work on the embedded default (memory + disk)",
        description="Show the cache at work: a slow function made fast, agents asking "
        "overlapping questions, a restart served from disk, and agents on a wrapped OpenAI "
        "client talking to a local OpenAI-compatible server (costs go to the ledger).",
    )
    p.add_argument(
        "--otlp-endpoint",
        metavar="URL",
        help="also export the wrapped client's calls (hits and misses) as OpenTelemetry spans "
        "to this OTLP endpoint: a base URL (http://localhost:4318) or a traces URL "
        "(http://localhost:6006/v1/traces); headers from $OTEL_EXPORTER_OTLP_HEADERS",
    )
    p.add_argument(
        "--otlp-protocol",
        choices=("http", "grpc"),
        help="OTLP/HTTP (protobuf) or gRPC (default: $OTEL_EXPORTER_OTLP_PROTOCOL, else http)",
    )
    p.set_defaults(run=_demo)

    p = commands.add_parser(
        "stats",
        parents=[where, redis_url],
        help="show what each tier of the configured cache holds",
        description="Show what each tier of the configured cache holds. " + _COUNTERS_NOTE,
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=_stats)

    p = commands.add_parser(
        "clear",
        parents=[where, redis_url],
        help="empty the configured cache, or invalidate one namespace",
        description="Remove every entry from the disk and Redis tiers, or with --namespace "
        "make one namespace's entries stop matching (O(1), seen by running processes too).",
    )
    p.add_argument("--namespace", metavar="N", help="invalidate namespace N only")
    p.set_defaults(run=_clear)

    p = commands.add_parser(
        "serve",
        help="run the local OpenAI-compatible server (llmcache.testing) until stopped",
        description="Run llmcache.testing's OpenAI-compatible server: deterministic answers, "
        "usage counted with tiktoken, optional latency. Prints its base URL, then serves until "
        "Ctrl-C or SIGTERM. Point any OpenAI client at it to test offline.",
    )
    testing.add_arguments(p)
    p.set_defaults(run=_serve)

    p = commands.add_parser(
        "report",
        help="what LLM calls cost, by user, feature, task, model, day ...",
        description="Read the cost ledger: calls, tokens by type, cost, cache hit rate, money "
        "saved by the cache and unpriced calls, grouped as asked.",
    )
    p.add_argument(
        "--by",
        default="user",
        metavar="DIMS",
        help=f"comma-separated grouping: {', '.join(report.DIMENSIONS)}, tag:NAME (default: user)",
    )
    p.add_argument(
        "--since", default="7d", metavar="WHEN", help="7d, 24h, 30m, 2w or an ISO date (UTC)"
    )
    p.add_argument("--until", metavar="WHEN", help="end of the period (default: now)")
    p.add_argument("--format", default="table", choices=report.FORMATS)
    p.add_argument(
        "--ledger",
        metavar="PATH_OR_URL",
        help="a ledger SQLite file or a redis:// URL (default: ledger.sqlite3 under --dir, "
        f"${ENV_DIR}, else the user data directory)",
    )
    p.add_argument("--dir", metavar="DIR", help=f"llmcache directory (default: ${ENV_DIR})")
    p.set_defaults(run=_report)
    return parser


@contextmanager
def _quiet_cache_logs() -> Iterator[None]:
    """Keep the cache's log lines off the terminal: failures are reported in one line."""
    logger = logging.getLogger("llmcache")
    handler = logging.NullHandler()
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _open(args: argparse.Namespace) -> tuple[CacheConfig, Cache]:
    config = CacheConfig.resolve(directory=args.dir, redis_url=getattr(args, "redis_url", None))
    try:
        return config, config.open()
    except ValueError as exc:
        raise _Failure(str(exc)) from None


def _probe(tier: Tier) -> str | None:
    """Return why ``tier`` cannot be read, or ``None`` when it answers."""
    try:
        tier.get(_PROBE_KEY)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _scope(tier: Tier) -> str:
    if isinstance(tier, MemoryTier):
        return "process"
    if isinstance(tier, DiskTier):
        return "machine"
    return "shared"


# -- demo -----------------------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    # The demo is about the embedded default: no Redis, even when LLMCACHE_REDIS_URL is set.
    config = dataclasses.replace(CacheConfig.resolve(directory=args.dir), redis_url=None)
    exporter, target = _demo_exporter(args.otlp_endpoint, args.otlp_protocol)
    try:
        ledger = Path(args.dir).expanduser() / "ledger.sqlite3" if args.dir else None
        ctx = demo.DemoContext(
            config=config,
            out=sys.stdout,
            ledger_path=ledger,
            exporter=exporter,
            export_target=target,
        )
    except ValueError as exc:
        if exporter is not None:
            exporter.shutdown(timeout=1.0)
        raise _Failure(str(exc)) from None
    # OpenTelemetry's exporter logs every retry against a dead backend; the demo's closing
    # line (and accounting.export's one warning) say what became of the spans, once.
    otel_logs = logging.getLogger("opentelemetry")
    quiet = logging.NullHandler()
    if exporter is not None:
        otel_logs.addHandler(quiet)
    try:
        demo.run(ctx)
    finally:
        otel_logs.removeHandler(quiet)
    return 0


#: The path OTLP/HTTP backends document as their endpoint (Phoenix: http://host:6006/v1/traces).
_TRACES_PATH = "/v1/traces"


def _demo_exporter(
    endpoint: str | None, protocol: str | None
) -> tuple[CallExporter | None, str | None]:
    """The demo's OTLP span exporter and where its spans go (for the closing line), or Nones."""
    if endpoint is None:
        return None, None
    # Imported here: the OpenTelemetry SDK and its exporters load only when asked for.
    from opentelemetry.metrics import NoOpMeterProvider  # noqa: PLC0415

    from accounting.export import configure_otel, resolve_target  # noqa: PLC0415

    # configure_otel takes a base URL, as OTEL_EXPORTER_OTLP_ENDPOINT is, and appends
    # /v1/traces; accept the traces URL too, which is what trace backends tell users to paste.
    base = endpoint.rstrip("/")
    if base.endswith(_TRACES_PATH):
        base = base[: -len(_TRACES_PATH)]
    try:
        target = resolve_target("traces", endpoint=base, protocol=protocol, environ=os.environ)
        exporter = configure_otel(
            endpoint=base,
            protocol=protocol,
            service_name="llmcache-demo",
            use_global=False,
            # Spans only: trace backends (Phoenix, Jaeger) have no OTLP metrics endpoint, and a
            # metric export refused every minute would only add noise to the demo.
            meter_provider=NoOpMeterProvider(),
        )
    except ConfigError as exc:
        raise _Failure(f"--otlp-endpoint {_without_credentials(endpoint)}: {exc}") from None
    return exporter, f"{_without_credentials(target.endpoint or base)} (OTLP/{target.protocol})"


def _without_credentials(url: str) -> str:
    """``url`` without userinfo, query and fragment: fit to print (they may hold keys)."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "<unparsable URL>"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


# -- serve ----------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    return testing.run(args)


# -- stats ----------------------------------------------------------------------------------------


def _stats(args: argparse.Namespace) -> int:
    config, cache = _open(args)
    try:
        rows = [_tier_row(config, tier) for tier in cache.tiers]
    finally:
        cache.close()
    if args.json:
        doc = {
            "directory": str(config.directory),
            "tiers": rows,
            "counters": "per-process",
            "note": _COUNTERS_NOTE,
        }
        print(json.dumps(doc, indent=2))
    else:
        _print_rows(config, rows)
    failed = [row for row in rows if row["error"] is not None]
    if failed:
        row = failed[0]
        raise _Failure(f"the {row['name']} tier ({row['where']}) cannot be reached: {row['error']}")
    return 0


def _tier_row(config: CacheConfig, tier: Tier) -> dict[str, Any]:
    error = _probe(tier)
    entries = size = None
    # The memory tier of this command is its own, always empty: other processes' are not visible.
    if error is None and isinstance(tier, SizedTier) and not isinstance(tier, MemoryTier):
        try:
            entries, size = tier.usage()
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
    return {
        "name": tier.name,
        "where": config.describe(tier),
        "scope": _scope(tier),
        "entries": entries,
        "bytes": size,
        "error": error,
    }


def _print_rows(config: CacheConfig, rows: list[dict[str, Any]]) -> None:
    names = " + ".join(row["name"] for row in rows)
    print(f"llmcache cache in {config.directory} ({names})")
    width = max(len(row["where"]) for row in rows)
    print(f"  {'tier':<8}{'where':<{width + 2}}{'entries':>9}{'bytes':>14}")
    for row in rows:
        if row["error"] is not None:
            held = f"unreachable: {row['error']}"
        elif row["scope"] == "process":
            held = "each process has its own; not visible from here"
        elif row["entries"] is None:
            held = "(the tier does not report its size)"
        else:
            held = f"{row['entries']:>9,}{row['bytes']:>14,}"
        print(f"  {row['name']:<8}{row['where']:<{width + 2}}{held}")
    print(_COUNTERS_NOTE)


# -- clear ----------------------------------------------------------------------------------------


def _clear(args: argparse.Namespace) -> int:
    if args.namespace is not None:
        try:
            validate_name("namespace", args.namespace)
        except ValueError as exc:
            raise _Failure(str(exc)) from None
    config, cache = _open(args)
    try:
        for tier in cache.tiers:
            error = _probe(tier)
            if error is not None:
                where = config.describe(tier)
                raise _Failure(f"the {tier.name} tier ({where}) cannot be reached: {error}")
        shared = ", ".join(
            f"{tier.name} ({config.describe(tier)})"
            for tier in cache.tiers
            if not isinstance(tier, MemoryTier)
        )
        before = _faults(cache)
        with _quiet_cache_logs():
            if args.namespace is None:
                cache.clear()
                done = (
                    f"cleared {shared}.\nRunning processes stop matching what their memory "
                    "tier holds within their generation_refresh (1 s by default)."
                )
            else:
                generation = cache.invalidate_namespace(args.namespace)
                done = (
                    f"namespace {args.namespace!r} invalidated (generation {generation}) in "
                    f"{shared}: its entries no longer match. Running processes see it within "
                    "their generation_refresh (1 s by default)."
                )
        # The cache never raises a tier's failure (it counts it): look at the counts.
        stats = cache.stats().tiers
        for tier, seen, was, now in zip(cache.tiers, stats, before, _faults(cache), strict=True):
            if now > was:
                detail = seen.last_error or "skipped: its circuit breaker is open"
                raise _Failure(f"the {tier.name} tier ({config.describe(tier)}) failed: {detail}")
    finally:
        cache.close()
    print(done)
    return 0


def _faults(cache: Cache) -> list[int]:
    return [tier.errors + tier.skipped for tier in cache.stats().tiers]


# -- report ---------------------------------------------------------------------------------------


def _ledger_store(args: argparse.Namespace) -> tuple[str, LedgerStore | None]:
    where: str | None = args.ledger
    if where is not None and where.split("://", 1)[0] in ("redis", "rediss", "unix"):
        from accounting.ledger import RedisStore  # noqa: PLC0415 - redis only when asked for

        try:
            return redact(where), RedisStore(where)
        except ValueError as exc:
            raise _Failure(f"--ledger {redact(where)}: {exc}") from None
    if where is not None:
        path = Path(where).expanduser()
    elif args.dir is not None:
        path = Path(args.dir).expanduser() / "ledger.sqlite3"
    else:
        path = default_ledger_path()
    if not path.exists():
        return str(path), None
    if not path.is_file():
        raise _Failure(f"the ledger {path} is not a file")
    return str(path), SQLiteStore(path)


def _report(args: argparse.Namespace) -> int:
    by = [name.strip() for name in args.by.split(",") if name.strip()]
    try:
        since = report.parse_since(args.since)
        until = None if args.until is None else report.parse_since(args.until)
        report.build_report([], by=by)  # checks --by before the ledger is opened
    except ConfigError as exc:
        raise _Failure(str(exc)) from None
    where, store = _ledger_store(args)
    if store is None:
        print(f"no ledger at {where} yet: no call has been recorded", file=sys.stderr)
        rows: list[report.ReportRow] = []
    else:
        try:
            rows = report.build_report(store.records(since, until), by=by)
        except (LedgerError, OSError) as exc:
            raise _Failure(f"cannot read the ledger {where}: {exc}") from None
        finally:
            store.close()
        if store.corrupt:
            print(
                f"{store.corrupt} corrupt record(s) in {where} were skipped",
                file=sys.stderr,
            )
    sys.stdout.write(report.render(rows, by=by, fmt=args.format))
    return 0
