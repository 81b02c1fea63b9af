"""What the OpenAI wrapper caches and how it keys it: pure functions on plain values.

The key of a request holds what decides the answer: the endpoint, the provider's base URL and
every argument sent to it, except the ones that change how the answer is delivered, billed or
logged but not what it says (:data:`NOT_IN_KEY`). An argument this module does not know is part
of the key, so a new OpenAI parameter can only split entries, never merge two different answers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from openai import NotGiven, Omit
from pydantic import BaseModel

__all__ = [
    "NOT_IN_KEY",
    "RAW_HEADER",
    "WrapPolicy",
    "bypass_reason",
    "is_sampled",
    "raw_mode",
    "request_params",
    "storable",
    "wants_raw",
]

#: Arguments that never change the answer: stream delivery, user ids, timeouts, headers,
#: metadata, whether the provider keeps a copy, and hints for the provider's own prompt cache.
NOT_IN_KEY = frozenset(
    {
        "stream",
        "stream_options",
        "user",
        "safety_identifier",
        "timeout",
        "extra_headers",
        "metadata",
        "store",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "prompt_cache_options",
    }
)

#: Header the SDK adds for ``with_raw_response`` / ``with_streaming_response``: those callers
#: want the HTTP response itself, which a cache cannot give back, so they pass through.
RAW_HEADER = "x-stainless-raw-response"

_CONTENT_FILTER = "content_filter"


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WrapPolicy:
    """Client-wide cache policy of a wrapped client.

    Args:
        ttl: lifetime of stored answers in seconds (``None``: the cache's default).
        namespace: namespace of the entries (``None``: the cache's default).
        sampled: what to do with requests that sample (``temperature`` > 0, which is OpenAI's
            default when it is not given, ``top_p`` < 1, or ``n`` > 1). ``"cache"`` (default)
            answers a repeated request with the stored sample, as an application that asks a
            question once expects; ``"bypass"`` sends every sampled request upstream and stores
            nothing, for applications that want a fresh sample on every call.
        stream_usage: ask the provider for the usage chunk of every stream
            (``stream_options.include_usage``) so the stored entry and the ledger have exact
            token counts; the chunk is not shown to callers that did not ask for it. Turn it off
            for a provider that rejects ``stream_options``.
        enabled: ``False`` passes every call through (accounting still applies).
    """

    ttl: float | None = None
    namespace: str | None = None
    sampled: Literal["cache", "bypass"] = "cache"
    stream_usage: bool = True
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.ttl is not None and not self.ttl > 0:
            raise ValueError(f"WrapPolicy.ttl must be > 0 seconds or None, got {self.ttl!r}")
        if self.sampled not in ("cache", "bypass"):
            raise ValueError(
                f"WrapPolicy.sampled must be 'cache' or 'bypass', got {self.sampled!r}"
            )


_PLAIN = frozenset({str, int, float, bool, list, dict, type(None)})


def request_params(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments actually sent: omitted ones dropped, one-shot iterables made lists.

    ``messages`` and ``tools`` may be any iterable; a generator read once for the key would
    reach the provider empty, so every iterable argument is materialized here, and the same
    lists are then both keyed and sent.
    """
    out: dict[str, Any] = {}
    for name, value in kwargs.items():
        t = type(value)
        if t in _PLAIN:  # the common case, decided without isinstance and its ABC checks
            out[name] = value
        elif isinstance(value, NotGiven | Omit):
            continue
        elif not isinstance(value, str | bytes | Mapping | BaseModel) and isinstance(
            value, Iterable
        ):
            out[name] = list(value)
        else:
            out[name] = value
    return out


def key_payload(endpoint: str, base_url: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The payload whose canonical JSON is hashed into the request's key."""
    keyed: dict[str, Any] = {}
    for name, value in params.items():
        if name in NOT_IN_KEY:
            continue
        if type(value) is list:
            # A loop, not any(<generator>): messages are lists, and this runs at every call.
            for v in value:
                if type(v) is not dict:
                    keyed[name] = [_as_sent(v) for v in value]
                    break
            else:
                keyed[name] = value
        else:
            keyed[name] = value
    return {"endpoint": endpoint, "base_url": base_url, "params": keyed}


def _as_sent(item: Any) -> Any:
    """An SDK object in a request (a previous answer's message) as the SDK puts it on the wire,
    so it keys like the dict it is sent as."""
    if isinstance(item, BaseModel):
        return item.model_dump(
            mode="json", exclude_unset=True, exclude=getattr(item, "__api_exclude__", None)
        )
    return item


def is_sampled(endpoint: str, params: Mapping[str, Any]) -> bool:
    """Whether the request samples: another call may rightly give another answer."""
    if endpoint == "embeddings":
        return False
    temperature = params.get("temperature")
    if temperature is None or temperature > 0:
        return True
    top_p = params.get("top_p")
    if top_p is not None and top_p < 1:
        return True
    n = params.get("n")
    return n is not None and n > 1


def raw_mode(params: Mapping[str, Any]) -> str | None:
    """The SDK's raw-response header: ``"stream"`` for ``with_streaming_response``, another
    value (``"true"``) for ``with_raw_response``, ``None`` for neither."""
    headers = params.get("extra_headers")
    if not headers:
        return None
    for name, value in headers.items():
        if str(name).lower() == RAW_HEADER:
            return str(value)
    return None


def wants_raw(params: Mapping[str, Any]) -> bool:
    """Whether the SDK asked for the raw HTTP response (``with_raw_response`` and friends)."""
    return raw_mode(params) is not None


def bypass_reason(endpoint: str, params: Mapping[str, Any], policy: WrapPolicy) -> str | None:
    """Why a request goes straight upstream, or ``None`` when the cache handles it."""
    if not policy.enabled:
        return "disabled"
    if params.get("extra_headers") and wants_raw(params):
        return "raw response"
    if endpoint == "responses" and params.get("background"):
        # A background response comes back queued; its answer is fetched later by id.
        return "background"
    if policy.sampled == "bypass" and is_sampled(endpoint, params):
        return "sampled"
    return None


def _finish_reasons_ok(result: Any) -> bool:
    choices = getattr(result, "choices", None)
    if not choices:
        return False
    # A loop, not all(<generator>): this runs at every miss.
    for c in choices:  # noqa: SIM110
        if c.finish_reason is None or c.finish_reason == _CONTENT_FILTER:
            return False
    return True


def storable(endpoint: str, result: Any) -> bool:
    """Whether ``result`` is a complete, successful answer worth storing.

    Never stored: a choice with no finish reason (cut off) or stopped by a content filter; a
    Responses result that is not completed (failed, cancelled, queued), or incomplete because of
    a content filter. A result cut at the requested token limit is stored: it is the complete
    answer to that request.
    """
    if endpoint in ("chat.completions", "completions"):
        return _finish_reasons_ok(result)
    if endpoint == "responses":
        status = getattr(result, "status", None)
        if status == "completed":
            return True
        details = getattr(result, "incomplete_details", None)
        reason = getattr(details, "reason", None)
        return status == "incomplete" and reason is not None and reason != _CONTENT_FILTER
    return True
