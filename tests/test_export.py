"""OpenTelemetry export: spans and metric points received by a real OTLP receiver.

Every exporting test sends OTLP over HTTP (protobuf), or gRPC, to a receiver running on a free
loopback port inside the test run (``tests/otlp_receiver.py``, built on ``opentelemetry-proto``)
and reads back the decoded spans and metrics and the raw bytes. Tests flush the providers rather
than sleep. The "backend down" tests point at a loopback port where nothing listens.
"""

from __future__ import annotations

import gc
import json
import logging
import socket
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as PbStatus
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from otlp_receiver import GrpcReceiver, OTLPReceiver, ReceivedSpan, attributes_of

from accounting import (
    Attribution,
    BudgetExceeded,
    CacheOutcome,
    CallRecord,
    ConfigError,
    Cost,
    Status,
    TokenUsage,
)
from accounting.export import (
    DURATION_BUCKETS,
    SCHEMA_URL,
    TOKEN_USAGE_BUCKETS,
    BatchCallExporter,
    CallEnd,
    CallExporter,
    CallSink,
    CallStart,
    ExportOptions,
    ExportResult,
    FinishedCall,
    configure_otel,
    operation_name,
    provider_name,
    resolve_target,
)
from accounting.export.attributes import request_attributes, span_name
from accounting.export.content import input_messages_json, output_messages_json

SECRET = "ZEBRA-PROMPT-7f3a91"  # a marker that must never leave the process by default
ANSWER = "OKAPI-ANSWER-c41d"
ERROR_TEXT = "QUOKKA-ERROR-5e2b"

ALICE = Attribution(user="alice", feature="support", task="answer", tags={"tenant": "acme"})


# -- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    server = OTLPReceiver().start()
    yield server
    server.stop()


def make_exporter(url: str, **kwargs: Any) -> BatchCallExporter:
    """Our own providers to ``url``, metrics exported only when flushed."""
    kwargs.setdefault("service_name", "test-export")
    kwargs.setdefault("use_global", False)
    kwargs.setdefault("metric_export_interval", 3600.0)
    return configure_otel(endpoint=url, protocol="http", **kwargs)


@pytest.fixture
def exporter(receiver: OTLPReceiver) -> Iterator[BatchCallExporter]:
    exp = make_exporter(receiver.url)
    yield exp
    exp.shutdown(timeout=5)


def start_of(**kwargs: Any) -> CallStart:
    fields: dict[str, Any] = {
        "provider": "openai",
        "request_model": "gpt-4o-mini",
        "server_address": "api.openai.com",
        "server_port": 443,
        "params": {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": SECRET}],
            "temperature": 0.2,
            "top_p": 0.9,
            "max_tokens": 256,
            "seed": 7,
            "stop": ["END"],
            "frequency_penalty": 0.1,
            "presence_penalty": 0.3,
            "n": 2,
        },
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": SECRET},
        ],
    }
    fields.update(kwargs)
    return CallStart(**fields)


def miss_record(**kwargs: Any) -> CallRecord:
    fields: dict[str, Any] = {
        "provider": "openai",
        "model_requested": "gpt-4o-mini",
        "model_served": "gpt-4o-mini-2024-07-18",
        "usage": TokenUsage(input=1200, cached_input=1024, cache_write=0, output=300, reasoning=64),
        "cost": Cost(
            input=Decimal("0.0000264"),
            cached_input=Decimal("0.0000768"),
            output=Decimal("0.0001416"),
            reasoning=Decimal("0.0000384"),
        ),
        "cache": CacheOutcome.MISS,
        "compression_tokens_saved": 40,
        "latency": 0.25,
        "attribution": ALICE,
    }
    fields.update(kwargs)
    return CallRecord(**fields)


def hit_record() -> CallRecord:
    # Even a hit record carrying the original call's usage and cost exports neither.
    return CallRecord(
        time=time.time() - 5,
        provider="openai",
        model_requested="gpt-4o-mini",
        model_served="gpt-4o-mini-2024-07-18",
        usage=TokenUsage(input=1200, output=300),
        cost=Cost(input=Decimal("0.0002832")),
        cache=CacheOutcome.HIT,
        cache_tier="redis",
        saved=Decimal("0.0002832"),
        latency=0.0015,
        attribution=ALICE,
    )


def refusal() -> BudgetExceeded:
    return BudgetExceeded(
        scope="user",
        name="alice",
        period="day",
        limit=Decimal("1.00"),
        spent=Decimal("0.99"),
        requested=Decimal("0.05"),
    )


def end_of(**kwargs: Any) -> CallEnd:
    fields: dict[str, Any] = {
        "response_id": "chatcmpl-123",
        "response_model": "gpt-4o-mini-2024-07-18",
        "finish_reasons": ("stop", "length"),
        "output_messages": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": ANSWER},
            }
        ],
    }
    fields.update(kwargs)
    return CallEnd(**fields)


def flush(exporter: BatchCallExporter) -> None:
    assert exporter.force_flush(10), "the flush did not complete"


def only_span(receiver: OTLPReceiver) -> ReceivedSpan:
    spans = receiver.spans()
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def points(receiver: OTLPReceiver, name: str) -> list[tuple[dict[str, Any], Any]]:
    """``(attributes, data point)`` of metric ``name`` in the last export."""
    return [(attributes_of(p.attributes), p) for p in receiver.last_points(name)]


def usage_keys(attrs: dict[str, Any]) -> list[str]:
    return sorted(k for k in attrs if k.startswith("gen_ai.usage.") and k != "gen_ai.usage.cost")


# -- pure parts -------------------------------------------------------------------------------


def test_provider_and_operation_names_follow_the_conventions() -> None:
    assert provider_name("openai") == "openai"
    assert provider_name("google") == "gcp.gen_ai"
    assert provider_name("gemini") == "gcp.gemini"
    assert provider_name("aws") == "aws.bedrock"
    assert provider_name("azure") == "azure.ai.openai"
    assert provider_name("x-ai") == "x_ai"
    assert provider_name("mistral") == "mistral_ai"
    # Exact lookups: no prefix or case folding; unknown names pass through as given.
    assert provider_name("openai-compatible") == "openai-compatible"
    assert provider_name("OpenAI") == "OpenAI"
    assert provider_name("local") == "local"
    assert provider_name("vllm", {"vllm": "openai"}) == "openai"
    assert operation_name("chat") == "chat"
    assert operation_name("completions") == "text_completion"
    assert operation_name("responses") == "chat"
    assert operation_name("embeddings") == "embeddings"
    assert operation_name("function") == "function"
    assert (
        span_name("completions", "gpt-3.5-turbo-instruct")
        == "text_completion gpt-3.5-turbo-instruct"
    )
    assert span_name("chat", "") == "chat"


def test_request_attributes_read_only_known_parameters_of_the_right_type() -> None:
    attrs = request_attributes(
        {
            "messages": [{"role": "user", "content": SECRET}],
            "temperature": 1,
            "top_p": True,  # a bool is not a number here
            "max_completion_tokens": 99,
            "stop": "END",
            "n": 1,  # the conventions want the choice count only when it is not 1
            "stream": False,
            "response_format": {"type": "json_schema", "json_schema": {}},
            "seed": "7",  # not an int: left out, not guessed
        }
    )
    assert attrs == {
        "gen_ai.request.temperature": 1.0,
        "gen_ai.request.max_tokens": 99,
        "gen_ai.request.stop_sequences": ("END",),
        "gen_ai.request.stream": False,
        "gen_ai.output.type": "json",
    }
    embed = request_attributes({"encoding_format": "float", "dimensions": 256, "n": 3})
    assert embed == {
        "gen_ai.request.encoding_formats": ("float",),
        "gen_ai.embeddings.dimension.count": 256,
        "gen_ai.request.choice.count": 3,
    }


def test_messages_follow_the_conventions_json_shape() -> None:
    prompt = json.loads(
        input_messages_json(
            [
                {"role": "system", "content": "be brief"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "hi"},
                        {"type": "image_url", "image_url": {"url": "data:..."}},
                    ],
                },
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"x": 1}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "42"},
            ]
        )
    )
    assert prompt == [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {"role": "user", "parts": [{"type": "text", "content": "hi"}, {"type": "image_url"}]},
        {
            "role": "assistant",
            "parts": [{"type": "tool_call", "id": "call_1", "name": "f", "arguments": {"x": 1}}],
        },
        {
            "role": "tool",
            "parts": [{"type": "tool_call_response", "id": "call_1", "response": "42"}],
        },
    ]
    assert json.loads(input_messages_json("plain")) == [
        {"role": "user", "parts": [{"type": "text", "content": "plain"}]}
    ]
    completion = json.loads(
        output_messages_json([{"message": {"role": "assistant", "content": "yes"}}], ["stop"])
    )
    assert completion == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "yes"}],
            "finish_reason": "stop",
        }
    ]


def test_resolve_target_from_arguments_and_environment() -> None:
    http = resolve_target("traces", endpoint="http://c:4318/", protocol=None, environ={})
    assert (http.protocol, http.endpoint) == ("http", "http://c:4318/v1/traces")
    metrics = resolve_target("metrics", endpoint="https://c", protocol="http/protobuf", environ={})
    assert metrics.endpoint == "https://c/v1/metrics"
    grpc = resolve_target(
        "traces", endpoint=None, protocol=None, environ={"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    )
    assert (grpc.protocol, grpc.endpoint) == ("grpc", None)  # the exporter reads the variables
    specific = resolve_target(
        "metrics",
        endpoint="http://c:4317",
        protocol=None,
        environ={
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc",
        },
    )
    assert (specific.protocol, specific.endpoint) == ("grpc", "http://c:4317")
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        resolve_target(
            "traces",
            endpoint=None,
            protocol=None,
            environ={"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
        )
    with pytest.raises(ConfigError, match="endpoint"):
        resolve_target("traces", endpoint="localhost:4318", protocol="http", environ={})
    with pytest.raises(ConfigError, match="metric_attribution"):
        ExportOptions(metric_attribution=frozenset({"user", "tenant"}))


# -- spans ------------------------------------------------------------------------------------


def test_a_miss_is_a_client_span_under_the_application_span(
    exporter: BatchCallExporter, receiver: OTLPReceiver
) -> None:
    assert isinstance(exporter, CallExporter)
    app = TracerProvider()
    with app.get_tracer("app").start_as_current_span("agent step") as step:
        before = time.time_ns()
        handle = exporter.start_call(start_of(conversation_id="conv-9"))
        started = time.time_ns()
        record = miss_record()
        ended = time.time_ns()
        exporter.end_call(handle, record, end_of())
        after = time.time_ns()
    flush(exporter)
    got = only_span(receiver)
    span = got.span
    assert got.name == "chat gpt-4o-mini"
    assert span.kind == PbSpan.SPAN_KIND_CLIENT
    assert span.trace_id == step.get_span_context().trace_id.to_bytes(16, "big")
    assert span.parent_span_id == step.get_span_context().span_id.to_bytes(8, "big")
    assert before <= span.start_time_unix_nano <= started  # started with the call
    assert ended <= span.end_time_unix_nano <= after  # ended with it
    assert span.status.code == PbStatus.STATUS_CODE_UNSET
    assert got.resource["service.name"] == "test-export"
    assert got.scope_name == "accounting.export"
    assert got.schema_url == SCHEMA_URL == "https://opentelemetry.io/schemas/1.41.0"
    assert got.attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "server.address": "api.openai.com",
        "server.port": 443,
        "gen_ai.conversation.id": "conv-9",
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.top_p": 0.9,
        "gen_ai.request.frequency_penalty": 0.1,
        "gen_ai.request.presence_penalty": 0.3,
        "gen_ai.request.max_tokens": 256,
        "gen_ai.request.seed": 7,
        "gen_ai.request.stop_sequences": ("END",),
        "gen_ai.request.choice.count": 2,
        "gen_ai.response.id": "chatcmpl-123",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.response.finish_reasons": ("stop", "length"),
        "gen_ai.usage.input_tokens": 1200,  # cached ones included
        "gen_ai.usage.output_tokens": 300,
        "gen_ai.usage.cache_read.input_tokens": 1024,
        "gen_ai.usage.reasoning.output_tokens": 64,
        "gen_ai.usage.cost": pytest.approx(0.0002832),
        "llmcache.record.id": record.id,
        "llmcache.status": "ok",
        "llmcache.cost.priced": True,
        "llmcache.cost.total_usd": pytest.approx(0.0002832),
        "llmcache.cost.total_usd_exact": "0.0002832",
        "llmcache.cost.input_usd": pytest.approx(0.0000264),
        "llmcache.cost.cached_input_usd": pytest.approx(0.0000768),
        "llmcache.cost.cache_write_usd": 0.0,
        "llmcache.cost.output_usd": pytest.approx(0.0001416),
        "llmcache.cost.reasoning_usd": pytest.approx(0.0000384),
        "llmcache.cache.outcome": "miss",
        "llmcache.compression.tokens_saved": 40,
        "llmcache.user": "alice",
        "user.id": "alice",
        "llmcache.feature": "support",
        "llmcache.task": "answer",
        "llmcache.tag.tenant": "acme",
    }


def test_a_hit_carries_no_token_counts_a_zero_cost_and_the_saving(
    exporter: BatchCallExporter, receiver: OTLPReceiver
) -> None:
    record = hit_record()
    exporter.export_record(record, end=CallEnd(response_id="chatcmpl-123"))
    flush(exporter)
    got = only_span(receiver)
    attrs = got.attributes
    assert got.name == "chat gpt-4o-mini"
    assert got.span.kind == PbSpan.SPAN_KIND_CLIENT
    assert usage_keys(attrs) == []  # Phoenix would bill these tokens otherwise
    assert attrs["gen_ai.usage.cost"] == 0.0
    assert attrs["llmcache.cost.total_usd"] == 0.0
    assert attrs["llmcache.cost.total_usd_exact"] == "0"
    assert attrs["llmcache.cache.outcome"] == "hit"
    assert attrs["llmcache.cache.tier"] == "redis"
    assert attrs["llmcache.cache.saved_usd"] == pytest.approx(0.0002832)
    assert attrs["llmcache.cache.saved_usd_exact"] == "0.0002832"
    assert attrs["gen_ai.response.id"] == "chatcmpl-123"
    # Timed by the record: it started at record.time and lasted record.latency.
    assert got.span.start_time_unix_nano == int(record.time * 1e9)
    assert got.span.end_time_unix_nano - got.span.start_time_unix_nano == int(0.0015 * 1e9)


def test_a_provider_error_ends_the_span_in_error_without_its_message(
    exporter: BatchCallExporter, receiver: OTLPReceiver
) -> None:
    class RateLimitError(Exception):
        pass

    handle = exporter.start_call(start_of())
    try:
        raise RateLimitError(f"rate limited while answering {ERROR_TEXT}")
    except RateLimitError as exc:
        record = miss_record(
            usage=TokenUsage(),
            cost=Cost(),
            status=Status.PROVIDER_ERROR,
            error_type="RateLimitError",
        )
        exporter.end_call(handle, record, CallEnd(error=exc))
    flush(exporter)
    got = only_span(receiver)
    attrs = got.attributes
    assert got.span.status.code == PbStatus.STATUS_CODE_ERROR
    assert got.span.status.message == "RateLimitError"
    assert attrs["error.type"] == "RateLimitError"
    assert attrs["llmcache.status"] == "provider_error"
    assert usage_keys(attrs) == []  # no answer, no usage
    assert list(got.span.events) == []  # no exception event: its message may quote the prompt
    assert ERROR_TEXT.encode() not in receiver.raw()


def test_a_budget_refusal_is_an_error_span_with_the_budget_figures(
    exporter: BatchCallExporter, receiver: OTLPReceiver
) -> None:
    handle = exporter.start_call(start_of())
    record = miss_record(  # as the meter records a refusal: the cache was bypassed
        usage=TokenUsage(),
        cost=None,
        cache=CacheOutcome.BYPASS,
        status=Status.REFUSED,
        error_type="BudgetExceeded",
        latency=0.0001,
    )
    exporter.end_call(handle, record, CallEnd(error=refusal()))
    flush(exporter)
    got = only_span(receiver)
    attrs = got.attributes
    assert got.span.status.code == PbStatus.STATUS_CODE_ERROR
    assert got.span.status.message == "BudgetExceeded: day budget of user alice (limit $1.00)"
    assert attrs["error.type"] == "BudgetExceeded"
    assert attrs["llmcache.status"] == "refused"
    assert usage_keys(attrs) == []
    assert attrs["llmcache.cost.total_usd"] == 0.0  # nothing was spent
    assert {k: v for k, v in attrs.items() if k.startswith("llmcache.budget.")} == {
        "llmcache.budget.scope": "user",
        "llmcache.budget.name": "alice",
        "llmcache.budget.period": "day",
        "llmcache.budget.limit_usd": 1.0,
        "llmcache.budget.spent_usd": 0.99,
        "llmcache.budget.requested_usd": 0.05,
    }


def test_an_unpriced_call_has_no_cost_rather_than_zero(
    exporter: BatchCallExporter, receiver: OTLPReceiver
) -> None:
    exporter.end_call(exporter.start_call(start_of()), miss_record(cost=None), end_of())
    flush(exporter)
    attrs = only_span(receiver).attributes
    assert attrs["llmcache.cost.priced"] is False
    assert "llmcache.cost.total_usd" not in attrs
    assert "gen_ai.usage.cost" not in attrs
    [(dims, point)] = points(receiver, "llmcache.calls.unpriced")
    assert point.as_int == 1 and dims["gen_ai.request.model"] == "gpt-4o-mini"
    assert points(receiver, "llmcache.cost.spent") == []


def test_gen_ai_usage_cost_can_be_turned_off(receiver: OTLPReceiver) -> None:
    exporter = make_exporter(
        receiver.url, options=ExportOptions(gen_ai_usage_cost=False, user_id_attribute=False)
    )
    try:
        exporter.end_call(exporter.start_call(start_of()), miss_record(), end_of())
        flush(exporter)
    finally:
        exporter.shutdown(timeout=5)
    attrs = only_span(receiver).attributes
    assert "gen_ai.usage.cost" not in attrs and "user.id" not in attrs
    assert attrs["llmcache.cost.total_usd"] == pytest.approx(0.0002832)


# -- metrics ----------------------------------------------------------------------------------


def test_metric_points_and_their_attributes(
    exporter: BatchCallExporter, receiver: OTLPReceiver
) -> None:
    exporter.end_call(exporter.start_call(start_of()), miss_record(latency=0.25), end_of())
    exporter.end_call(exporter.start_call(start_of()), miss_record(latency=1.5), end_of())
    exporter.export_record(hit_record())
    exporter.export_record(
        miss_record(  # as the meter records a refusal: the cache was bypassed
            usage=TokenUsage(),
            cost=None,
            cache=CacheOutcome.BYPASS,
            status=Status.REFUSED,
            error_type="BudgetExceeded",
        ),
        end=CallEnd(error=refusal()),
    )
    flush(exporter)
    metrics = receiver.metrics()
    assert metrics["gen_ai.client.token.usage"][-1].metric.unit == "{token}"
    assert metrics["gen_ai.client.operation.duration"][-1].metric.unit == "s"
    assert metrics["llmcache.cost.spent"][-1].metric.unit == "{USD}"

    conv = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "server.address": "api.openai.com",
        "server.port": 443,
    }
    tokens = {
        dims["gen_ai.token.type"]: (dims, p)
        for dims, p in points(receiver, "gen_ai.client.token.usage")
    }
    assert set(tokens) == {"input", "output"}
    for kind, total in (("input", 2400), ("output", 600)):  # the two misses; not the hit
        dims, point = tokens[kind]
        assert dims == {**conv, "gen_ai.token.type": kind}
        assert point.count == 2 and point.sum == total
        assert list(point.explicit_bounds) == list(TOKEN_USAGE_BUCKETS)

    [(dims, point)] = points(receiver, "gen_ai.client.operation.duration")
    assert dims == conv  # the hit and the refusal never reached the provider
    assert point.count == 2 and point.sum == pytest.approx(1.75)
    assert list(point.explicit_bounds) == list(DURATION_BUCKETS)

    ours = {
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "llmcache.user": "alice",
        "llmcache.feature": "support",
        "llmcache.task": "answer",
    }
    [(dims, point)] = points(receiver, "llmcache.cost.spent")
    assert dims == ours and point.as_double == pytest.approx(2 * 0.0002832)
    [(dims, point)] = points(receiver, "llmcache.cost.saved")
    assert dims == ours and point.as_double == pytest.approx(0.0002832)
    lookups = {
        dims["llmcache.cache.outcome"]: (dims, p.as_int)
        for dims, p in points(receiver, "llmcache.cache.lookups")
    }
    assert lookups["hit"] == (
        {**ours, "llmcache.cache.outcome": "hit", "llmcache.cache.tier": "redis"},
        1,
    )
    assert lookups["miss"] == ({**ours, "llmcache.cache.outcome": "miss"}, 2)
    assert set(lookups) == {"hit", "miss"}  # the refusal bypassed the cache: no lookup


def test_the_user_dimension_can_be_dropped_from_metrics(receiver: OTLPReceiver) -> None:
    exporter = make_exporter(
        receiver.url, options=ExportOptions(metric_attribution=frozenset({"feature", "task"}))
    )
    try:
        exporter.end_call(exporter.start_call(start_of()), miss_record(), end_of())
        exporter.export_record(hit_record())
        unattributed = miss_record(attribution=Attribution())
        exporter.end_call(exporter.start_call(start_of()), unattributed, end_of())
        flush(exporter)
    finally:
        exporter.shutdown(timeout=5)
    for name in ("llmcache.cost.spent", "llmcache.cost.saved", "llmcache.cache.lookups"):
        found = points(receiver, name)
        assert found, name
        assert all("llmcache.user" not in dims for dims, _ in found), name
    features = {dims["llmcache.feature"] for dims, _ in points(receiver, "llmcache.cost.spent")}
    assert features == {"support", "unattributed"}  # as reports name it
    assert only_span_with(receiver, "alice")  # spans keep the user


def only_span_with(receiver: OTLPReceiver, user: str) -> bool:
    return any(s.attributes.get("llmcache.user") == user for s in receiver.spans())


# -- privacy ----------------------------------------------------------------------------------


def test_prompt_and_completion_text_are_never_exported_by_default(
    exporter: BatchCallExporter, receiver: OTLPReceiver
) -> None:
    for _ in range(3):
        exporter.end_call(exporter.start_call(start_of()), miss_record(), end_of())
    exporter.export_record(
        miss_record(), start=start_of(), end=end_of(output_messages=[{"content": ANSWER}])
    )
    flush(exporter)
    raw = receiver.raw()
    assert len(receiver.spans()) == 4 and receiver.metrics()
    assert SECRET.encode() not in raw
    assert ANSWER.encode() not in raw
    assert not any("gen_ai.input.messages" in s.attributes for s in receiver.spans())


def test_content_capture_is_opt_in_and_uses_the_conventions_attributes(
    receiver: OTLPReceiver,
) -> None:
    exporter = make_exporter(receiver.url, capture_content=True)
    messages = [{"role": "user", "content": SECRET}]
    try:
        handle = exporter.start_call(start_of(messages=messages))
        messages.append({"role": "assistant", "content": "later"})  # the app goes on: not seen
        exporter.end_call(handle, miss_record(), end_of())
        flush(exporter)
    finally:
        exporter.shutdown(timeout=5)
    attrs = only_span(receiver).attributes
    assert json.loads(attrs["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": SECRET}]}
    ]
    assert json.loads(attrs["gen_ai.output.messages"]) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": ANSWER}],
            "finish_reason": "stop",
        }
    ]
    holders = {k for k, v in attrs.items() if isinstance(v, str) and (SECRET in v or ANSWER in v)}
    assert holders == {"gen_ai.input.messages", "gen_ai.output.messages"}
    # And nowhere else in what was sent: each marker appears once, in its attribute.
    assert receiver.raw().count(SECRET.encode()) == 1
    assert receiver.raw().count(ANSWER.encode()) == 1


# -- providers: the application's, the global ones, the environment, gRPC --------------------


def test_the_application_providers_are_used_and_never_shut_down(receiver: OTLPReceiver) -> None:
    resource = Resource.create({"service.name": "the-app"})
    app_traces = TracerProvider(resource=resource)
    app_traces.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{receiver.url}/v1/traces"))
    )
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{receiver.url}/v1/metrics"), export_interval_millis=3_600_000
    )
    app_metrics = MeterProvider(metric_readers=[reader], resource=resource)
    try:
        exporter = configure_otel(
            endpoint="http://127.0.0.1:9",  # unused: both signals have a provider
            tracer_provider=app_traces,
            meter_provider=app_metrics,
        )
        assert exporter.stats().delivery is None  # the app's pipeline: not ours to count
        with app_traces.get_tracer("app").start_as_current_span("request") as request:
            exporter.end_call(exporter.start_call(start_of()), miss_record(), end_of())
        flush(exporter)
        exporter.shutdown(timeout=5)
        ours = [s for s in receiver.spans() if s.name == "chat gpt-4o-mini"]
        assert len(ours) == 1 and ours[0].resource["service.name"] == "the-app"
        assert ours[0].span.parent_span_id == request.get_span_context().span_id.to_bytes(8, "big")
        assert "gen_ai.client.token.usage" in receiver.metrics()
        # Still working after our shutdown: the application's providers are its own.
        with app_traces.get_tracer("app").start_as_current_span("after"):
            pass
        assert app_traces.force_flush(10_000)
        assert "after" in [s.name for s in receiver.spans()]
    finally:
        app_traces.shutdown()
        app_metrics.shutdown()


GLOBAL_APP = """
import sys
from opentelemetry import metrics, trace
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from accounting import CallRecord, TokenUsage
from accounting.export import CallStart, configure_otel

url = sys.argv[1]
resource = Resource.create({"service.name": "global-app"})
tp = TracerProvider(resource=resource)
tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url + "/v1/traces")))
trace.set_tracer_provider(tp)
reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=url + "/v1/metrics"))
metrics.set_meter_provider(MeterProvider(metric_readers=[reader], resource=resource))

exporter = configure_otel()  # no endpoint: the application's global providers are used
assert exporter._sink.tracer_provider is tp
assert exporter.stats().delivery is None
exporter.end_call(
    exporter.start_call(CallStart(provider="openai", request_model="gpt-4o-mini")),
    CallRecord(provider="openai", model_requested="gpt-4o", usage=TokenUsage(input=3, output=2)),
)
assert exporter.force_flush(10)
exporter.shutdown(5)
assert trace.get_tracer_provider() is tp  # never replaced
print("ok")
"""


def test_the_global_providers_are_used_when_the_application_set_them(
    receiver: OTLPReceiver, tmp_path: Path
) -> None:
    # A fresh interpreter: a global provider can be set once per process.
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(GLOBAL_APP))
    out = subprocess.run(
        [sys.executable, str(script), receiver.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    [span] = [s for s in receiver.spans() if s.name == "chat gpt-4o-mini"]
    assert span.resource["service.name"] == "global-app"
    assert "gen_ai.client.token.usage" in receiver.metrics()


def test_the_standard_environment_variables_configure_our_providers(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    exporter = configure_otel(use_global=False, metric_export_interval=3600.0)
    try:
        exporter.end_call(exporter.start_call(start_of()), miss_record(), end_of())
        flush(exporter)
    finally:
        exporter.shutdown(timeout=5)
    assert only_span(receiver).resource["service.name"] == "from-env"


def test_export_over_grpc() -> None:
    server = GrpcReceiver().start()
    exporter = configure_otel(
        endpoint=server.url,
        protocol="grpc",
        service_name="grpc-app",
        use_global=False,
        metric_export_interval=3600.0,
    )
    try:
        exporter.end_call(exporter.start_call(start_of()), miss_record(), end_of())
        flush(exporter)
        [span] = server.spans()
        assert span.name == "chat gpt-4o-mini"
        assert span.resource["service.name"] == "grpc-app"
        assert span.attributes["llmcache.cost.total_usd"] == pytest.approx(0.0002832)
        assert "gen_ai.client.token.usage" in server.metrics()
        assert exporter.stats().delivery.spans_exported == 1  # type: ignore[union-attr]
    finally:
        exporter.shutdown(timeout=5)
        server.stop()


# -- failures never reach the caller -------------------------------------------------------


def our_warnings(caplog: pytest.LogCaptureFixture, text: str) -> int:
    return sum(
        1 for r in caplog.records if r.name == "accounting.export" and text in r.getMessage()
    )


def test_an_unreachable_backend_costs_the_calls_nothing_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    # A short export timeout: the exporter gives up at the first refused connection.
    exporter = make_exporter(dead, timeout=0.5)
    with caplog.at_level(logging.WARNING, logger="accounting.export"):
        for round_ in range(3):
            for _ in range(20):
                handle = exporter.start_call(start_of())
                exporter.end_call(handle, miss_record(), end_of())  # never raises
            exporter.export_record(hit_record())
            exporter.force_flush(5)
            assert exporter.stats().delivery.spans_failed == 21 * (round_ + 1)  # type: ignore[union-attr]
        stats = exporter.stats()
        t0 = time.monotonic()
        exporter.shutdown(timeout=5)
        assert time.monotonic() - t0 < 3.0  # a failing backend does not hold up the exit
    assert stats.exported == 63 and stats.failed == stats.dropped == stats.errors == 0
    assert stats.delivery is not None and stats.delivery.spans_exported == 0
    assert stats.delivery.metric_exports_failed == 3
    # Logged once each, not per call nor per batch.
    assert our_warnings(caplog, "could not export") == 2  # spans, metrics
    assert our_warnings(caplog, dead) == 2  # the endpoint is named; the headers never are


def test_a_flush_or_shutdown_never_waits_out_the_exporters_retries() -> None:
    # The default export timeout (10 s): the OTLP exporter keeps retrying the dead port.
    exporter = make_exporter(f"http://127.0.0.1:{free_port()}")
    for _ in range(5):
        exporter.end_call(exporter.start_call(start_of()), miss_record(), end_of())
    t0 = time.monotonic()
    assert not exporter.force_flush(1.2)  # not done: it says so, on time
    assert time.monotonic() - t0 < 2.0
    t0 = time.monotonic()
    exporter.shutdown(timeout=10)  # the stuck export is aborted, not waited for
    assert time.monotonic() - t0 < 2.0
    delivery = exporter.stats().delivery
    assert delivery is not None and delivery.spans_failed == 5 and delivery.spans_exported == 0


def test_a_first_export_at_shutdown_to_a_dead_backend_gives_up_quickly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A short CLI run: nothing was exported before the end, so the backend is not yet known to
    # be down when shutdown() starts; the exporter would retry it for up to 10 s. The pipeline
    # keeps checking while it waits, and gives up once the export is stuck (about a second).
    dead = f"http://127.0.0.1:{free_port()}"
    exporter = make_exporter(dead)
    for _ in range(5):
        exporter.end_call(exporter.start_call(start_of()), miss_record(), end_of())
    with caplog.at_level(logging.WARNING, logger="accounting.export"):
        t0 = time.monotonic()
        exporter.shutdown(timeout=5)
        elapsed = time.monotonic() - t0
    assert elapsed < 2.0, elapsed  # the whole 5 s before the fix
    delivery = exporter.stats().delivery
    # What was lost is counted by the time shutdown() returns, and logged once.
    assert delivery is not None and (delivery.spans_failed, delivery.spans_exported) == (5, 0)
    assert our_warnings(caplog, "could not export") == 2  # spans, metrics


def test_a_first_flush_to_a_dead_backend_says_so_quickly() -> None:
    exporter = make_exporter(f"http://127.0.0.1:{free_port()}")
    try:
        for _ in range(5):
            exporter.end_call(exporter.start_call(start_of()), miss_record(), end_of())
        t0 = time.monotonic()
        assert not exporter.force_flush(5)
        assert time.monotonic() - t0 < 2.0  # the whole 5 s before the fix
    finally:
        exporter.shutdown(timeout=5)


def test_a_live_backend_gets_every_span_at_shutdown(receiver: OTLPReceiver) -> None:
    # More calls than one batch of spans, all still queued when shutdown() starts.
    exporter = make_exporter(receiver.url, schedule_delay=3600.0)
    calls = 700
    for _ in range(calls):
        exporter.end_call(exporter.start_call(start_of()), miss_record(), end_of())
    exporter.shutdown(timeout=5)
    assert len(receiver.spans()) == calls
    stats = exporter.stats()
    assert (stats.exported, stats.failed, stats.dropped) == (calls, 0, 0)
    assert stats.delivery is not None
    assert (stats.delivery.spans_exported, stats.delivery.spans_failed) == (calls, 0)


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A collector that accepts connections and never answers (a black-holed network path)."""
    server = socket.create_server(("127.0.0.1", 0), backlog=64)
    server.settimeout(0.05)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conns.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(5)
    for conn in conns:
        conn.close()
    server.close()


def test_a_collector_that_never_answers_holds_nothing_up_past_its_timeout(
    black_hole: str,
) -> None:
    # The request in flight cannot be cut: we only ever wait for it as long as we were told.
    exporter = make_exporter(black_hole, timeout=5.0, schedule_delay=0.05)
    threads = threading.active_count()
    for _ in range(5):
        exporter.end_call(exporter.start_call(start_of()), miss_record(), end_of())
    t0 = time.monotonic()
    assert not exporter.force_flush(0.5)
    for _ in range(20):
        assert not exporter.force_flush(0.01)  # joins the flush in progress: no new thread
    assert time.monotonic() - t0 < 1.5
    assert threading.active_count() <= threads
    t0 = time.monotonic()
    exporter.shutdown(timeout=1.0)
    assert time.monotonic() - t0 < 2.0


def test_a_flush_or_shutdown_never_waits_for_a_sink_stuck_in_export() -> None:
    sink = GatedSink()
    exporter = BatchCallExporter(sink, max_batch_size=1, schedule_delay=0.01)
    exporter.end_call(exporter.start_call(start_of()), miss_record())
    assert sink.entered.wait(10)  # the thread is inside the sink
    exporter.end_call(exporter.start_call(start_of()), miss_record())  # queued behind it
    t0 = time.monotonic()
    assert not exporter.force_flush(0.3)
    assert time.monotonic() - t0 < 1.0
    t0 = time.monotonic()
    exporter.shutdown(timeout=0.3)
    assert time.monotonic() - t0 < 1.0
    stats = exporter.stats()
    assert (stats.queued, stats.dropped) == (0, 1)  # what could not be exported is counted


class Prompt(list[Any]):
    """A message list a weak reference can watch."""


def test_queued_calls_keep_no_prompt_or_completion_without_capture() -> None:
    sink = GatedSink()
    exporter = BatchCallExporter(sink, max_batch_size=1, schedule_delay=0.01)
    exporter.end_call(exporter.start_call(start_of()), miss_record())
    assert sink.entered.wait(10)  # the thread is busy: the next call stays queued
    prompt = Prompt([{"role": "user", "content": SECRET}])
    output = Prompt([{"index": 0, "message": {"role": "assistant", "content": ANSWER}}])
    watched = [weakref.ref(prompt), weakref.ref(output)]
    params = {"model": "m", "messages": prompt, "temperature": 0.2}
    handle = exporter.start_call(start_of(messages=prompt, params=params))
    exporter.end_call(handle, miss_record(), end_of(output_messages=output))
    del prompt, output, params, handle
    gc.collect()
    assert exporter.stats().queued == 1
    assert [ref() for ref in watched] == [None, None]  # nothing queued holds them
    sink.gate.set()
    assert exporter.force_flush(5)
    queued = sink.calls[-1]
    assert dict(queued.request) == {"temperature": 0.2}  # the parameters are kept
    assert queued.start.messages is None and queued.end.output_messages is None
    exporter.shutdown(timeout=5)


def test_importing_accounting_does_not_load_the_otel_setup() -> None:
    code = (
        "import sys, accounting, accounting.export.call\n"
        "assert 'accounting.export.setup' not in sys.modules, 'setup imported eagerly'\n"
        "from accounting.export import configure_otel\n"
        "from accounting.export.setup import configure_otel as direct\n"
        "assert configure_otel is direct\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_a_renamed_private_otel_name_does_not_break_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry import metrics as metrics_api  # noqa: PLC0415
    from opentelemetry.metrics import _internal  # noqa: PLC0415

    from accounting.export import setup  # noqa: PLC0415

    proxy = metrics_api.get_meter_provider()  # no test process sets a global provider
    assert type(proxy).__name__ == "_ProxyMeterProvider"
    # The private name goes away (the API itself needs it, so hand the proxy out directly).
    monkeypatch.delattr(_internal, "_PROXY_METER_PROVIDER")
    monkeypatch.setattr(metrics_api, "get_meter_provider", lambda: proxy)
    assert setup._global_meter_provider() is None  # still "not configured"


FORK_APP = """
import os, sys, time
os.environ["OTEL_BSP_SCHEDULE_DELAY"] = "60000"  # spans wait in the span queue at the fork
from accounting import CallRecord, TokenUsage
from accounting.export import CallStart, configure_otel

exporter = configure_otel(endpoint=sys.argv[1], use_global=False, max_queue_size=4,
                          metric_export_interval=3600.0)

def call():
    exporter.end_call(
        exporter.start_call(CallStart(provider="openai", request_model="m")),
        CallRecord(provider="openai", model_requested="m", usage=TokenUsage(input=3, output=2)),
    )

for _ in range(3):
    call()
deadline = time.monotonic() + 10
while exporter.stats().exported < 3 and time.monotonic() < deadline:
    time.sleep(0.01)
pid = os.fork()
if pid == 0:
    for _ in range(3):
        call()
    exporter.force_flush(10)
    delivery = exporter.stats().delivery
    print(delivery.spans_exported, delivery.spans_dropped, flush=True)
    os._exit(0)
os.waitpid(pid, 0)
os._exit(0)
"""


def test_a_forked_child_starts_with_an_empty_span_queue(
    receiver: OTLPReceiver, tmp_path: Path
) -> None:
    script = tmp_path / "forking.py"
    script.write_text(textwrap.dedent(FORK_APP))
    out = subprocess.run(
        [sys.executable, str(script), receiver.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3", "0"]  # the parent's queued spans do not count


EXIT_APP = """
import atexit, sys, threading
from accounting import CallRecord, TokenUsage
from accounting.export import CallStart, configure_otel

exporter = configure_otel(endpoint=sys.argv[1], use_global=False, metric_export_interval=3600.0)
for _ in range(3):
    exporter.end_call(
        exporter.start_call(CallStart(provider="openai", request_model="m")),
        CallRecord(provider="openai", model_requested="m", usage=TokenUsage(input=3, output=2)),
    )

def no_threads_at_exit():
    # As Python 3.12+ does: "can't create new thread at interpreter shutdown".
    def refuse(self):
        raise RuntimeError("can't create new thread at interpreter shutdown")
    threading.Thread.start = refuse

atexit.register(no_threads_at_exit)  # runs before the exporter's own exit hook (LIFO)
"""


def test_what_is_pending_at_exit_is_flushed_without_starting_a_thread(
    receiver: OTLPReceiver, tmp_path: Path
) -> None:
    script = tmp_path / "exiting.py"
    script.write_text(textwrap.dedent(EXIT_APP))
    out = subprocess.run(
        [sys.executable, str(script), receiver.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "can't create new thread" not in out.stderr
    assert len(receiver.spans()) == 3


def test_endpoint_credentials_and_headers_never_reach_the_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    with caplog.at_level(logging.DEBUG):
        exporter = make_exporter(
            f"http://user:hunter2-pw@127.0.0.1:{port}",
            headers={"authorization": "Bearer sk-test-secret"},
            timeout=0.5,
        )
        for _ in range(3):
            exporter.end_call(exporter.start_call(start_of()), miss_record(), end_of())
        exporter.force_flush(5)
        exporter.shutdown(timeout=5)
    assert our_warnings(caplog, f"spans to http://127.0.0.1:{port}/v1/traces ") == 1
    assert "sk-test-secret" not in caplog.text
    assert "hunter2-pw" not in caplog.text


def test_logged_endpoints_lose_userinfo_query_and_fragment() -> None:
    from accounting.export.setup import _redact  # noqa: PLC0415

    assert _redact("https://u:p@collector:4318/v1/traces?key=s#f") == (
        "https://collector:4318/v1/traces"
    )
    assert _redact("http://[::1]:4317") == "http://[::1]:4317"


def test_a_backend_refusing_the_data_is_counted(receiver: OTLPReceiver) -> None:
    receiver.status = 400  # not retryable: the exporter gives up at once
    exporter = make_exporter(receiver.url, headers={"authorization": "Bearer sk-test-secret"})
    try:
        exporter.end_call(exporter.start_call(start_of()), miss_record(), end_of())
        exporter.force_flush(5)
        delivery = exporter.stats().delivery
        assert delivery is not None
        assert (delivery.spans_failed, delivery.spans_exported) == (1, 0)
        assert delivery.metric_exports_failed == 1
        receiver.status = 200  # the backend is back: what follows gets through
        exporter.end_call(exporter.start_call(start_of()), miss_record(), end_of())
        flush(exporter)
        assert exporter.stats().delivery.spans_exported == 1  # type: ignore[union-attr]
    finally:
        exporter.shutdown(timeout=5)


class GatedSink:
    """A sink of ours that blocks until released, then records what it got."""

    def __init__(self, fail: bool = False) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.calls: list[FinishedCall] = []
        self.fail = fail

    def export(self, batch: Sequence[FinishedCall]) -> ExportResult:
        self.entered.set()
        self.gate.wait(10)
        if self.fail:
            raise RuntimeError("sink broke")
        self.calls.extend(batch)
        return ExportResult(exported=len(batch))

    def force_flush(self, timeout: float = 30.0) -> bool:
        return True

    def shutdown(self, timeout: float = 30.0) -> None:
        self.gate.set()


def test_a_full_queue_drops_calls_counts_them_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = GatedSink()
    assert isinstance(sink, CallSink)
    exporter = BatchCallExporter(sink, max_queue_size=4, max_batch_size=1, schedule_delay=0.01)
    with caplog.at_level(logging.WARNING, logger="accounting.export"):
        exporter.end_call(exporter.start_call(start_of()), miss_record())
        assert sink.entered.wait(10)  # the thread is stuck in the sink with one call
        for _ in range(10):
            exporter.end_call(exporter.start_call(start_of()), miss_record())
        stats = exporter.stats()
        assert (stats.queued, stats.dropped) == (4, 6)
        sink.gate.set()
        exporter.force_flush(5)
    assert exporter.stats().exported == 5 and len(sink.calls) == 5
    assert our_warnings(caplog, "export queue full") == 1
    exporter.shutdown(timeout=5)
    exporter.end_call(exporter.start_call(start_of()), miss_record())  # after shutdown
    assert exporter.stats().dropped == 7


def test_a_failing_sink_or_bad_input_never_reaches_the_caller(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = GatedSink(fail=True)
    sink.gate.set()
    exporter = BatchCallExporter(sink)
    with caplog.at_level(logging.WARNING, logger="accounting.export"):
        for _ in range(3):
            exporter.end_call(exporter.start_call(start_of()), miss_record())
        bad = CallStart(provider="openai", request_model="m", params=["not", "a", "mapping"])  # type: ignore[arg-type]
        handle = exporter.start_call(bad)  # a handle all the same
        exporter.end_call(handle, miss_record())
        exporter.force_flush(5)
    stats = exporter.stats()
    assert stats.errors == 1 and stats.failed == 4 and stats.exported == 0
    assert our_warnings(caplog, "export sink GatedSink failed") == 1
    assert our_warnings(caplog, "export fault in start_call") == 1
    exporter.shutdown(timeout=5)
