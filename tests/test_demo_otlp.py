"""``llmcache demo --otlp-endpoint``: the demo's calls as spans, received by a real OTLP receiver.

Each test runs the real command in a subprocess (``python -m llmcache demo``, ``LLMCACHE_DIR``
on a fresh directory), once against the receiver of ``tests/otlp_receiver.py`` and once against a
loopback port where nothing listens.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from otlp_receiver import OTLPReceiver, ReceivedSpan

# The questions the demo's agents ask: none may reach a span (content capture is off).
from llmcache.demo_openai import _ASKS

SPAN_NAME = "chat gpt-4o-mini"
# "traces: 48 of 48 spans sent to URL (OTLP/http)[; F failed (...), D dropped]"
TRACES_LINE = re.compile(r"^traces: (\d+) of (\d+) spans sent to (\S+) \(OTLP/http\)(.*)$", re.M)
# "ledger: 4 calls paid $0.000082; 44 answered without the provider saved $0.000887 (...)"
LEDGER_LINE = re.compile(r"ledger: (\d+) calls paid \$([\d.]+); (\d+) answered without")


def demo_env(llmcache_dir: Path) -> dict[str, str]:
    """This environment without llmcache's or OpenTelemetry's settings, on ``llmcache_dir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMCACHE_", "OTEL_"))}
    env["LLMCACHE_DIR"] = str(llmcache_dir)
    return env


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    server = OTLPReceiver().start()
    try:
        yield server
    finally:
        server.stop()


def test_the_demo_exports_its_hits_and_misses_as_spans(
    receiver: OTLPReceiver, tmp_path: Path
) -> None:
    endpoint = f"{receiver.url}/v1/traces"  # the traces URL, as trace backends document it
    result = subprocess.run(
        [sys.executable, "-m", "llmcache", "demo", "--otlp-endpoint", endpoint],
        env=demo_env(tmp_path / "llmcache"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    line = TRACES_LINE.search(result.stdout)
    assert line, result.stdout
    assert line[3] == endpoint  # not /v1/traces/v1/traces
    assert line[1] == line[2] and line[4] == ""  # everything sent, nothing lost

    spans = receiver.spans()
    assert len(spans) == int(line[1])
    assert {s.name for s in spans} == {SPAN_NAME}
    assert {s.span.kind for s in spans} == {PbSpan.SPAN_KIND_CLIENT}
    assert {s.resource.get("service.name") for s in spans} == {"llmcache-demo"}
    by_outcome: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        by_outcome.setdefault(span.attributes["llmcache.cache.outcome"], []).append(span)
    assert set(by_outcome) == {"hit", "miss"}

    for miss in by_outcome["miss"]:
        attrs = miss.attributes
        assert attrs["gen_ai.usage.input_tokens"] > 0
        assert attrs["gen_ai.usage.output_tokens"] > 0
        assert attrs["gen_ai.usage.cost"] > 0
        assert attrs["gen_ai.usage.cost"] == attrs["llmcache.cost.total_usd"]
    for hit in by_outcome["hit"]:
        attrs = hit.attributes
        assert attrs["gen_ai.usage.cost"] == 0
        assert attrs["llmcache.cache.saved_usd"] > 0
        assert attrs["llmcache.cache.tier"] in {"memory", "disk", "single-flight"}
        assert "gen_ai.usage.input_tokens" not in attrs  # a hit used no provider tokens

    # The spans tell what the demo's ledger says: as many paid calls, as much spent.
    ledger = LEDGER_LINE.search(result.stdout)
    assert ledger, result.stdout
    assert len(by_outcome["miss"]) == int(ledger[1])
    assert len(by_outcome["hit"]) == int(ledger[3])
    spent = sum(s.attributes["gen_ai.usage.cost"] for s in by_outcome["miss"])
    assert f"{spent:.6f}" == ledger[2]

    # Spans only (trace backends such as Phoenix take no metrics), and no prompt text in them.
    assert {path for path, _ in receiver.bodies} == {"/v1/traces"}
    raw = receiver.raw()
    for question in _ASKS.values():
        assert question.encode() not in raw


def test_a_dead_endpoint_neither_breaks_nor_holds_up_the_demo(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}/v1/traces"  # nothing listens there
    with subprocess.Popen(
        [sys.executable, "-m", "llmcache", "demo", "--otlp-endpoint", endpoint],
        env=demo_env(tmp_path / "llmcache"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        watchdog = threading.Timer(60, proc.kill)  # a hung demo fails this test, not the run
        watchdog.start()
        assert proc.stdout is not None and proc.stderr is not None
        lines: list[str] = []
        done_at = None
        for text in proc.stdout:
            lines.append(text)
            if text.startswith("done in "):  # the sections are over: the exporter's turn
                done_at = time.monotonic()
        returncode = proc.wait()
        ended = time.monotonic()
        stderr = proc.stderr.read()
    watchdog.cancel()
    out = "".join(lines)
    assert returncode == 0, out + stderr
    assert done_at is not None, out
    # The shutdown sees its first export stall (~1 s) and gives up: without that, it would
    # wait out its 5 s timeout while the OTLP exporter retries.
    assert ended - done_at < 4.0, f"{ended - done_at:.2f} s from 'done in' to exit"
    line = TRACES_LINE.search(out)
    assert line, out
    assert line[1] == "0"
    assert line[4] == f"; {line[2]} failed (backend down or refusing), 0 dropped"
    # The calls themselves were unaffected: the ledger line is there as in any run.
    assert LEDGER_LINE.search(out), out
    # One warning from accounting.export, none per retry from OpenTelemetry, no traceback.
    assert len(stderr.splitlines()) == 1, stderr
    assert stderr.startswith(f"could not export {line[2]} spans to {endpoint}")
