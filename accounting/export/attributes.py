"""Pure: a finished call → span name, span attributes, span error, metric points.

Follows the OpenTelemetry GenAI semantic conventions as released in semantic-conventions
v1.41.0 (``docs/gen-ai/gen-ai-spans.md`` and ``gen-ai-metrics.md``; status "development";
the GenAI documents have since moved to their own repository). What they do not cover is in
our ``llmcache.*`` namespace:

==========================================  ===============================================
``llmcache.record.id``                      the ledger record's id (joins a span to its row)
``llmcache.status``                         ``ok`` / ``provider_error`` / ``refused``
``llmcache.cost.total_usd``                 what the call spent, USD (double); 0 on a hit
``llmcache.cost.total_usd_exact``           the same as the ledger's exact decimal (string)
``llmcache.cost.{input,cached_input,cache_write,output,reasoning}_usd``  by token type
``llmcache.cost.priced``                    false when no price was known: no cost written
``llmcache.cache.outcome`` / ``.tier``      ``hit`` / ``miss`` / ``bypass``; the tier of a hit
``llmcache.cache.saved_usd`` (+ ``_exact``)  on a hit, what the original call cost
``llmcache.compression.tokens_saved``       prompt tokens removed by compression
``llmcache.usage.estimated``                token counts were counted locally, not reported
``llmcache.user`` / ``.feature`` / ``.task``  the attribution; tags as ``llmcache.tag.<name>``
``llmcache.budget.*``                       a refusal: scope, name, period, limit_usd,
                                            spent_usd, requested_usd
==========================================  ===============================================

Money: OpenTelemetry attributes cannot hold a ``Decimal``, so spans and metric points carry
USD as floats (double), good for dashboards and sums; the ledger keeps the exact amounts, and
spans repeat the total and the saving as exact decimal strings (``*_exact``).

A hit served from our cache carries no ``gen_ai.usage.*`` token counts (a backend that prices
tokens itself, such as Phoenix, would bill it), a cost of 0 and the saving. Token-usage and
duration metric points are only recorded for calls that reached the provider.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from accounting.attribute import UNATTRIBUTED, Attribution
from accounting.export.call import FinishedCall
from accounting.export.options import ExportOptions
from accounting.money import text
from accounting.record import CacheOutcome, CallRecord, Status

__all__ = [
    "DURATION_BUCKETS",
    "PARAM_KEYS",
    "PROVIDER_NAMES",
    "SCHEMA_URL",
    "TOKEN_USAGE_BUCKETS",
    "AttributeValue",
    "MetricPoint",
    "metric_points",
    "operation_name",
    "provider_name",
    "request_attributes",
    "span_attributes",
    "span_error",
    "span_name",
]

AttributeValue = str | bool | int | float | Sequence[str]

#: The semantic conventions release these attributes follow.
SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.41.0"

#: ``gen_ai.client.token.usage`` buckets, as the conventions specify (gen-ai-metrics.md).
TOKEN_USAGE_BUCKETS: Final = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
#: ``gen_ai.client.operation.duration`` buckets in seconds, likewise.
DURATION_BUCKETS: Final = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip

#: Our provider names (and genai-prices' provider ids) → the conventions' well-known
#: ``gen_ai.provider.name`` values. Exact names; a name not listed is exported as given.
PROVIDER_NAMES: Final[Mapping[str, str]] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "google": "gcp.gen_ai",  # "any Google generative AI endpoint": Gemini API or Vertex AI
    "gemini": "gcp.gemini",
    "gcp.gemini": "gcp.gemini",
    "vertex_ai": "gcp.vertex_ai",
    "vertex": "gcp.vertex_ai",
    "gcp.vertex_ai": "gcp.vertex_ai",
    "gcp.gen_ai": "gcp.gen_ai",
    "aws": "aws.bedrock",
    "bedrock": "aws.bedrock",
    "aws.bedrock": "aws.bedrock",
    "azure": "azure.ai.openai",
    "azure_openai": "azure.ai.openai",
    "azure.ai.openai": "azure.ai.openai",
    "azure_ai_inference": "azure.ai.inference",
    "azure.ai.inference": "azure.ai.inference",
    "cohere": "cohere",
    "deepseek": "deepseek",
    "groq": "groq",
    "ibm": "ibm.watsonx.ai",
    "watsonx": "ibm.watsonx.ai",
    "ibm.watsonx.ai": "ibm.watsonx.ai",
    "mistral": "mistral_ai",
    "mistral_ai": "mistral_ai",
    "perplexity": "perplexity",
    "x-ai": "x_ai",
    "xai": "x_ai",
    "x_ai": "x_ai",
}

#: Our operation names → ``gen_ai.operation.name``; others are exported as given.
_OPERATIONS: Final[Mapping[str, str]] = {
    "chat": "chat",
    # The Responses API is chat-style inference; the conventions have no value of its own.
    "responses": "chat",
    "completions": "text_completion",
    "text_completion": "text_completion",
    "embeddings": "embeddings",
    "generate_content": "generate_content",
}

#: Request parameters read from :attr:`CallStart.params` (OpenAI names).
PARAM_KEYS: Final = (
    "temperature",
    "top_p",
    "top_k",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "seed",
    "stop",
    "frequency_penalty",
    "presence_penalty",
    "n",
    "stream",
    "response_format",
    "encoding_format",
    "dimensions",
)

_FLOAT_PARAMS: Final = (
    ("temperature", "gen_ai.request.temperature"),
    ("top_p", "gen_ai.request.top_p"),
    ("top_k", "gen_ai.request.top_k"),
    ("frequency_penalty", "gen_ai.request.frequency_penalty"),
    ("presence_penalty", "gen_ai.request.presence_penalty"),
)
_MAX_TOKENS_KEYS: Final = ("max_tokens", "max_completion_tokens", "max_output_tokens")

# Metric instrument names (gen-ai-metrics.md, and ours).
USAGE_HISTOGRAM: Final = "gen_ai.client.token.usage"
DURATION_HISTOGRAM: Final = "gen_ai.client.operation.duration"
COST_SPENT: Final = "llmcache.cost.spent"
COST_SAVED: Final = "llmcache.cost.saved"
CACHE_LOOKUPS: Final = "llmcache.cache.lookups"
UNPRICED_CALLS: Final = "llmcache.calls.unpriced"

_OTHER_ERROR: Final = "_OTHER"  # the conventions' fallback error.type


def provider_name(provider: str, extra: Mapping[str, str] | None = None) -> str:
    """``gen_ai.provider.name`` for our provider name (exact lookup; unknown names pass)."""
    if extra and provider in extra:
        return extra[provider]
    return PROVIDER_NAMES.get(provider, provider)


def operation_name(operation: str) -> str:
    """``gen_ai.operation.name`` for our operation name (unknown names pass)."""
    return _OPERATIONS.get(operation, operation)


def span_name(operation: str, request_model: str) -> str:
    """``{gen_ai.operation.name} {gen_ai.request.model}``, as the conventions name the span."""
    op = operation_name(operation)
    return f"{op} {request_model}" if request_model else op


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    return float(value)


def _integer(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def request_attributes(params: Mapping[str, Any]) -> dict[str, AttributeValue]:
    """The ``gen_ai.request.*`` (and related) attributes of the request's parameters.

    Values of an unexpected type are left out rather than guessed at.
    """
    attrs: dict[str, AttributeValue] = {}
    for key, name in _FLOAT_PARAMS:
        number = _number(params.get(key))
        if number is not None:
            attrs[name] = number
    for key in _MAX_TOKENS_KEYS:
        limit = _integer(params.get(key))
        if limit is not None:
            attrs["gen_ai.request.max_tokens"] = limit
            break
    seed = _integer(params.get("seed"))
    if seed is not None:
        attrs["gen_ai.request.seed"] = seed
    stop = params.get("stop")
    if isinstance(stop, str):
        attrs["gen_ai.request.stop_sequences"] = (stop,)
    elif isinstance(stop, Sequence) and stop and all(isinstance(s, str) for s in stop):
        attrs["gen_ai.request.stop_sequences"] = tuple(stop)
    count = _integer(params.get("n"))
    if count is not None and count != 1:  # conditionally required: "if ... != 1"
        attrs["gen_ai.request.choice.count"] = count
    stream = params.get("stream")
    if isinstance(stream, bool):
        attrs["gen_ai.request.stream"] = stream
    response_format = params.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, Mapping) else None
    if kind in ("json_object", "json_schema"):
        attrs["gen_ai.output.type"] = "json"
    elif kind == "text":
        attrs["gen_ai.output.type"] = "text"
    encoding = params.get("encoding_format")
    if isinstance(encoding, str):
        attrs["gen_ai.request.encoding_formats"] = (encoding,)
    dimensions = _integer(params.get("dimensions"))
    if dimensions is not None:
        attrs["gen_ai.embeddings.dimension.count"] = dimensions
    return attrs


def _error_type(call: FinishedCall) -> str | None:
    record = call.record
    if record.status is Status.OK:
        return None
    if record.error_type:
        return record.error_type
    if call.error_type:
        return call.error_type
    if record.status is Status.REFUSED:
        return "BudgetExceeded"
    return _OTHER_ERROR


def span_error(call: FinishedCall) -> tuple[str, str] | None:
    """``(error.type, status description)`` when the span must end in error, else ``None``.

    The description never holds the exception's message (it may quote the prompt): the error
    type, or for a refusal the budget that refused.
    """
    error = _error_type(call)
    if error is None:
        return None
    refusal = call.refusal
    if refusal is not None:
        who = refusal.scope if refusal.name is None else f"{refusal.scope} {refusal.name}"
        return error, f"{error}: {refusal.period} budget of {who} (limit ${refusal.limit})"
    return error, error


def _usd(amount: Decimal) -> float:
    return float(amount)


def _attribution(attrs: dict[str, AttributeValue], who: Attribution, user_id: bool) -> None:
    if who.user is not None:
        attrs["llmcache.user"] = who.user
        if user_id:
            attrs["user.id"] = who.user
    if who.feature is not None:
        attrs["llmcache.feature"] = who.feature
    if who.task is not None:
        attrs["llmcache.task"] = who.task
    for tag, value in who.tags.items():
        attrs[f"llmcache.tag.{tag}"] = value


def _usage(attrs: dict[str, AttributeValue], record: CallRecord) -> None:
    usage = record.usage
    if usage.input == 0 and usage.output == 0:
        return  # nothing reported (a provider error before any answer): say nothing
    attrs["gen_ai.usage.input_tokens"] = usage.input  # cached ones included, as defined
    attrs["gen_ai.usage.output_tokens"] = usage.output
    if usage.cached_input:
        attrs["gen_ai.usage.cache_read.input_tokens"] = usage.cached_input
    if usage.cache_write:
        attrs["gen_ai.usage.cache_creation.input_tokens"] = usage.cache_write
    if usage.reasoning:
        attrs["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning
    if usage.estimated:
        attrs["llmcache.usage.estimated"] = True


def _cost(attrs: dict[str, AttributeValue], record: CallRecord, options: ExportOptions) -> None:
    if record.cache is CacheOutcome.HIT or record.status is Status.REFUSED:
        # Nothing was spent, whatever the record's cost field holds.
        attrs["llmcache.cost.priced"] = True
        attrs["llmcache.cost.total_usd"] = 0.0
        attrs["llmcache.cost.total_usd_exact"] = "0"
        if options.gen_ai_usage_cost:
            attrs["gen_ai.usage.cost"] = 0.0
        return
    cost = record.cost
    attrs["llmcache.cost.priced"] = cost is not None
    if cost is None:
        return  # unpriced: unknown, never $0
    total = cost.total
    attrs["llmcache.cost.total_usd"] = _usd(total)
    attrs["llmcache.cost.total_usd_exact"] = text(total)
    attrs["llmcache.cost.input_usd"] = _usd(cost.input)
    attrs["llmcache.cost.cached_input_usd"] = _usd(cost.cached_input)
    attrs["llmcache.cost.cache_write_usd"] = _usd(cost.cache_write)
    attrs["llmcache.cost.output_usd"] = _usd(cost.output)
    attrs["llmcache.cost.reasoning_usd"] = _usd(cost.reasoning)
    if options.gen_ai_usage_cost:
        attrs["gen_ai.usage.cost"] = _usd(total)


def span_attributes(call: FinishedCall, options: ExportOptions) -> dict[str, AttributeValue]:
    """Every attribute of the call's span.

    Args:
        call: the finished call.
        options: what to write beyond the conventions.

    Returns:
        The attributes, conventions first, then ours.
    """
    start, record, end = call.start, call.record, call.end
    attrs: dict[str, AttributeValue] = {
        "gen_ai.operation.name": operation_name(start.operation),
        "gen_ai.provider.name": provider_name(start.provider, options.provider_names),
        "gen_ai.request.model": start.request_model,
    }
    if start.server_address:
        attrs["server.address"] = start.server_address
        if start.server_port is not None:
            attrs["server.port"] = start.server_port
    if start.conversation_id:
        attrs["gen_ai.conversation.id"] = start.conversation_id
    attrs.update(request_attributes(call.request))
    if end.response_id:
        attrs["gen_ai.response.id"] = end.response_id
    response_model = end.response_model or record.model_served
    if response_model:
        attrs["gen_ai.response.model"] = response_model
    if end.finish_reasons:
        attrs["gen_ai.response.finish_reasons"] = tuple(str(r) for r in end.finish_reasons)
    if record.cache is not CacheOutcome.HIT and record.status is not Status.REFUSED:
        _usage(attrs, record)
    if call.input_json is not None:
        attrs["gen_ai.input.messages"] = call.input_json
    if call.output_json is not None:
        attrs["gen_ai.output.messages"] = call.output_json
    error = _error_type(call)
    if error is not None:
        attrs["error.type"] = error

    attrs["llmcache.record.id"] = record.id
    attrs["llmcache.status"] = record.status.value
    _cost(attrs, record, options)
    attrs["llmcache.cache.outcome"] = record.cache.value
    if record.cache_tier:
        attrs["llmcache.cache.tier"] = record.cache_tier
    if record.cache is CacheOutcome.HIT and record.saved is not None:
        attrs["llmcache.cache.saved_usd"] = _usd(record.saved)
        attrs["llmcache.cache.saved_usd_exact"] = text(record.saved)
    if record.compression_tokens_saved:
        attrs["llmcache.compression.tokens_saved"] = record.compression_tokens_saved
    _attribution(attrs, record.attribution, options.user_id_attribute)
    refusal = call.refusal
    if refusal is not None:
        attrs["llmcache.budget.scope"] = refusal.scope
        if refusal.name is not None:
            attrs["llmcache.budget.name"] = refusal.name
        attrs["llmcache.budget.period"] = refusal.period
        attrs["llmcache.budget.limit_usd"] = _usd(refusal.limit)
        attrs["llmcache.budget.spent_usd"] = _usd(refusal.spent)
        attrs["llmcache.budget.requested_usd"] = _usd(refusal.requested)
    return attrs


@dataclass(frozen=True, slots=True)
class MetricPoint:
    """One measurement: add ``value`` to ``instrument`` with ``attributes``."""

    instrument: str
    value: int | float
    attributes: Mapping[str, AttributeValue]


def _duration(call: FinishedCall) -> float:
    if call.record.latency > 0:
        return call.record.latency
    return max(call.end_ns - call.start_ns, 0) / 1e9


def metric_points(call: FinishedCall, options: ExportOptions) -> list[MetricPoint]:
    """The metric points one call records.

    - ``gen_ai.client.token.usage`` (input, output) and ``gen_ai.client.operation.duration``
      only for calls that reached the provider: hits and refusals used no tokens, and their
      microsecond durations would skew the provider's latency.
    - ``llmcache.cost.spent`` for priced calls that reached the provider (unpriced ones count
      in ``llmcache.calls.unpriced`` instead: unknown is not $0), ``llmcache.cost.saved`` for
      hits whose original cost is known, ``llmcache.cache.lookups`` for hits and misses.

    Args:
        call: the finished call.
        options: which attribution fields the cost and cache points carry.

    Returns:
        The points, in no particular order.
    """
    start, record, end = call.start, call.record, call.end
    provider = provider_name(start.provider, options.provider_names)
    base: dict[str, AttributeValue] = {
        "gen_ai.operation.name": operation_name(start.operation),
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": start.request_model,
    }
    response_model = end.response_model or record.model_served
    if response_model:
        base["gen_ai.response.model"] = response_model
    if start.server_address:
        base["server.address"] = start.server_address
        if start.server_port is not None:
            base["server.port"] = start.server_port

    ours: dict[str, AttributeValue] = {
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": start.request_model,
    }
    who = record.attribution
    dims = options.metric_attribution
    if "user" in dims:
        ours["llmcache.user"] = who.user or UNATTRIBUTED
    if "feature" in dims:
        ours["llmcache.feature"] = who.feature or UNATTRIBUTED
    if "task" in dims:
        ours["llmcache.task"] = who.task or UNATTRIBUTED

    points: list[MetricPoint] = []
    if record.spent:
        usage = record.usage
        if usage.input or usage.output:
            for kind, count in (("input", usage.input), ("output", usage.output)):
                points.append(
                    MetricPoint(USAGE_HISTOGRAM, count, {**base, "gen_ai.token.type": kind})
                )
        error = _error_type(call)
        duration_attrs = base if error is None else {**base, "error.type": error}
        points.append(MetricPoint(DURATION_HISTOGRAM, _duration(call), duration_attrs))
        if record.cost is not None:
            points.append(MetricPoint(COST_SPENT, _usd(record.cost.total), ours))
        else:
            points.append(MetricPoint(UNPRICED_CALLS, 1, ours))
    elif record.cache is CacheOutcome.HIT and record.saved is not None:
        points.append(MetricPoint(COST_SAVED, _usd(record.saved), ours))
    if record.cache is CacheOutcome.HIT or record.cache is CacheOutcome.MISS:
        lookup = {**ours, "llmcache.cache.outcome": record.cache.value}
        if record.cache is CacheOutcome.HIT and record.cache_tier:
            lookup["llmcache.cache.tier"] = record.cache_tier
        points.append(MetricPoint(CACHE_LOOKUPS, 1, lookup))
    return points
