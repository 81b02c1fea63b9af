"""Time added to an LLM call by OpenTelemetry export, with the backend unreachable.

Run::

    python benchmarks/bench_export.py            # table
    python benchmarks/bench_export.py --json     # the same figures as JSON

``accounting.export.configure_otel`` points at a dead loopback port (nothing listens), so
every OTLP export fails after its retries, and the span queue fills and drops: the worst case
for the application. What the request path pays per call is ``CallStart(...)`` +
``start_call`` when the call starts, and ``CallEnd(...)`` + ``end_call`` when it ends (the
ledger record is built anyway and is not timed). Target: < 20 µs per call at the median.

Three measurements, in one process run:

* **paced**: calls as an application makes them. Between ``start_call`` and ``end_call`` the
  thread waits ``--gap-us`` microseconds (a stand-in for the provider's answer, which in real
  life takes 100s of ms: the thread sleeps and releases the GIL, as it would on a socket), so
  the exporter's background thread gets to run, as it would. As in a real call, the code that
  runs first after the wait is not export's: the ledger record is built there (untimed, on both
  sides), so the wake-up's cold caches are not charged to export. Each exporter call alternates
  with a baseline call of the same shape and no exporter (what the request path does when
  export is off); the added time is the difference of their medians. The verdict is on it.
* **burst**: the same calls back to back with no gap, far faster than the background thread
  can turn them into spans: the queue fills and calls are dropped (counted). Shows the cost of
  the request path when export cannot keep up.
* **off-path**: the background thread's own CPU per call (one span and its metric points
  through the OpenTelemetry SDK), which the request path does not wait for.

The machine's load average is printed with the figures: on a busy machine the p99 also counts
preemptions by other processes, and waits for the GIL while a background thread holds it (any
Python program with OpenTelemetry's batch processors has those).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import subprocess
import sys
import time
from decimal import Decimal
from importlib import metadata
from pathlib import Path
from typing import Any

from _bench import free_port, summary

from accounting import Attribution, CacheOutcome, CallRecord, Cost, TokenUsage
from accounting.export import (
    BatchCallExporter,
    CallEnd,
    CallStart,
    FinishedCall,
    configure_otel,
)
from accounting.export.otel import OTelSink

TARGET_US = 20.0
MAX_SAMPLES = 400_000
pc = time.perf_counter_ns

PARAMS: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
    "temperature": 0.2,
    "top_p": 1.0,
    "max_tokens": 512,
    "seed": 42,
}


def make_record(hit: bool = False) -> CallRecord:
    """A realistic ledger record of a miss (or a hit)."""
    return CallRecord(
        provider="openai",
        model_requested="gpt-4o-mini",
        model_served="gpt-4o-mini-2024-07-18",
        usage=TokenUsage() if hit else TokenUsage(input=812, cached_input=512, output=164),
        cost=Cost() if hit else Cost(input=Decimal("0.000045"), output=Decimal("0.0000984")),
        cache=CacheOutcome.HIT if hit else CacheOutcome.MISS,
        cache_tier="memory" if hit else None,
        saved=Decimal("0.0001434") if hit else None,
        latency=0.000_05 if hit else 0.8,
        attribution=Attribution(user="alice", feature="support", task="answer"),
    )


# -- measuring --------------------------------------------------------------------------------


def request_kwargs() -> dict[str, Any]:
    """What the application passes the client (built by the caller anyway: not timed)."""
    return dict(PARAMS)


def exporter_call(exporter: BatchCallExporter, gap: float) -> int:
    """One call with export: nanoseconds spent in the request path's export code."""
    params = request_kwargs()
    t0 = pc()
    handle = exporter.start_call(
        CallStart(
            provider="openai",
            request_model="gpt-4o-mini",
            server_address="api.openai.com",
            server_port=443,
            params=params,
        )
    )
    t1 = pc()
    if gap:
        time.sleep(gap)  # the provider answering: the thread releases the GIL
    record = make_record()  # the accountant builds the record anyway: not timed
    t2 = pc()
    exporter.end_call(
        handle,
        record,
        CallEnd(response_id="chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT", finish_reasons=("stop",)),
    )
    t3 = pc()
    return (t1 - t0) + (t3 - t2)


def baseline_call(gap: float) -> int:
    """The same call with export off: the same untimed work, nothing in the timed parts."""
    request_kwargs()
    t0 = pc()
    t1 = pc()
    if gap:
        time.sleep(gap)
    make_record()
    t2 = pc()
    t3 = pc()
    return (t1 - t0) + (t3 - t2)


def bench_paced(endpoint: str, seconds: float, gap_us: float) -> dict[str, Any]:
    """Alternate exporter calls and baseline calls, each with a simulated upstream wait."""
    exporter = configure_otel(endpoint=endpoint, service_name="bench-export")
    gap = gap_us / 1e6
    for _ in range(2000):  # warm-up
        exporter_call(exporter, gap)
        baseline_call(gap)
    gc.collect()
    with_export: list[int] = []
    without: list[int] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(with_export) < MAX_SAMPLES:
        for _ in range(50):
            with_export.append(exporter_call(exporter, gap))
            without.append(baseline_call(gap))
    stats = exporter.stats()
    t0 = time.perf_counter()
    exporter.shutdown(timeout=2.0)
    shutdown_s = time.perf_counter() - t0
    a, b = summary(with_export), summary(without)
    return {
        "gap_us": gap_us,
        "export": a,
        "baseline": b,
        "added_p50_us": round(a["p50_us"] - b["p50_us"], 2),
        "added_p99_us": round(a["p99_us"] - b["p99_us"], 2),
        "stats_before_shutdown": _stats(stats),
        "stats_after_shutdown": _stats(exporter.stats()),
        "shutdown_s": round(shutdown_s, 3),
    }


def bench_burst(endpoint: str, seconds: float) -> dict[str, Any]:
    """Calls back to back: the queue fills and most calls are dropped (counted)."""
    exporter = configure_otel(endpoint=endpoint, service_name="bench-export")
    samples: list[int] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(samples) < MAX_SAMPLES:
        for _ in range(100):
            samples.append(exporter_call(exporter, 0.0))
    stats = exporter.stats()
    exporter.shutdown(timeout=2.0)
    return {"export": summary(samples), "stats": _stats(stats)}


def bench_off_path(endpoint: str, calls: int) -> dict[str, Any]:
    """CPU per call of the background thread: the sink making spans and metric points."""
    exporter = configure_otel(endpoint=endpoint, service_name="bench-export")
    sink = exporter._sink
    assert isinstance(sink, OTelSink)
    now = time.time_ns()
    start = CallStart(
        provider="openai",
        request_model="gpt-4o-mini",
        server_address="api.openai.com",
        server_port=443,
    )
    request = {k: v for k, v in PARAMS.items() if k not in ("model", "messages")}
    batch = [
        FinishedCall(
            start=start,
            record=make_record(hit=i % 3 == 0),
            end=CallEnd(response_id="chatcmpl-1", finish_reasons=("stop",)),
            start_ns=now,
            end_ns=now + 800_000_000,
            request=request,
        )
        for i in range(512)
    ]
    sink.export(batch)  # warm-up
    times: list[float] = []
    done = 0
    while done < calls:
        t0 = pc()
        sink.export(batch)
        times.append((pc() - t0) / len(batch) / 1000.0)
        done += len(batch)
    exporter.shutdown(timeout=2.0)
    times.sort()
    return {"calls": done, "per_call_us_median": round(times[len(times) // 2], 2)}


def _stats(stats: Any) -> dict[str, Any]:
    out = {k: getattr(stats, k) for k in ("queued", "exported", "failed", "dropped", "errors")}
    if stats.delivery is not None:
        d = stats.delivery
        out["delivery"] = {
            k: getattr(d, k)
            for k in (
                "spans_exported",
                "spans_failed",
                "spans_dropped",
                "metric_exports",
                "metric_exports_failed",
            )
        }
    return out


def revision() -> str | None:
    """The git revision of the working tree, if any."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def print_table(report: dict[str, Any]) -> None:
    """The figures as text."""
    env = report["environment"]
    print(f"$ {report['command']}")
    print(
        f"python {env['python']} on {env['machine']}, {env['cpus']} cpus, "
        f"opentelemetry-sdk {env['opentelemetry_sdk']}, load {env['loadavg_1min']}"
    )
    print(f"backend: {env['endpoint']} (nothing listens)\n")
    paced = report["paced"]
    print(f"paced (upstream wait {paced['gap_us']:.0f} µs between start_call and end_call)")
    print(f"  {'':24}{'p50 µs':>10}{'p99 µs':>10}{'mean µs':>10}{'n':>10}")
    for name in ("export", "baseline"):
        s = paced[name]
        label = "with export" if name == "export" else "export off"
        print(f"  {label:24}{s['p50_us']:>10}{s['p99_us']:>10}{s['mean_us']:>10}{s['n']:>10}")
    verdict = "PASS" if paced["added_p50_us"] < TARGET_US else "MISS"
    print(
        f"  added per call: p50 {paced['added_p50_us']} µs, p99 {paced['added_p99_us']} µs"
        f"  (target p50 < {TARGET_US:.0f} µs: {verdict})"
    )
    print(f"  stats: {paced['stats_before_shutdown']}")
    print(f"  shutdown with the backend down: {paced['shutdown_s']} s\n")
    burst = report["burst"]
    s = burst["export"]
    print("burst (no gap: the queue fills, calls are dropped and counted)")
    print(f"  with export: p50 {s['p50_us']} µs, p99 {s['p99_us']} µs, n {s['n']}")
    print(f"  stats: {burst['stats']}\n")
    off = report["off_path"]
    print(
        f"off-path: the background thread spends {off['per_call_us_median']} µs of CPU per call "
        f"(span + metric points, {off['calls']} calls), not on the request path"
    )
    print(f"\nverdict: {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time added per LLM call by OpenTelemetry export, backend unreachable."
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per phase")
    parser.add_argument(
        "--gap-us", type=float, default=200.0, help="simulated upstream wait in paced calls"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    # A dead backend makes OpenTelemetry's exporters and ours log by design: not our output.
    for name in ("opentelemetry", "accounting"):
        logging.getLogger(name).addHandler(logging.NullHandler())
        logging.getLogger(name).propagate = False

    endpoint = f"http://127.0.0.1:{free_port()}"
    load_before = os.getloadavg()[0]
    gc.collect()
    gc.freeze()
    paced = bench_paced(endpoint, args.seconds, args.gap_us)
    burst = bench_burst(endpoint, min(args.seconds, 2.0))
    off_path = bench_off_path(endpoint, 20_000)
    report = {
        "command": "python benchmarks/bench_export.py" + (" --json" if args.json else ""),
        "environment": {
            "revision": revision(),
            "python": platform.python_version(),
            "machine": f"{platform.system()} {platform.machine()}",
            "cpus": os.cpu_count(),
            "opentelemetry_sdk": metadata.version("opentelemetry-sdk"),
            "endpoint": endpoint,
            "seconds": args.seconds,
            "loadavg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        },
        "target_p50_us": TARGET_US,
        "paced": paced,
        "burst": burst,
        "off_path": off_path,
        "verdict": "PASS" if paced["added_p50_us"] < TARGET_US else "MISS",
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
