"""The wrapper's accounting: one ledger record per call, hit or miss, through an Accountant.

Everything here is best effort except what the accounting layer decides itself: a budget
refusal (``BudgetExceeded``) reaches the caller; any other failure to account a call is logged
and counted by the accountant's ledger, never raised into the request path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from accounting import Accountant, CacheOutcome, CallRequest, Meter, TokenUsage
from accounting.export.call import CallEnd
from accounting.plan import served_cost
from accounting.tokens import estimate_prompt_tokens
from llmcache.fetched import CacheInfo
from llmcache.openai.endpoints import Endpoint

__all__ = ["Books", "provider_of"]

log = logging.getLogger("llmcache.openai")
_SAVED_MEMO = 4096

_KNOWN_HOSTS = {
    "api.openai.com": "openai",
    "api.deepseek.com": "deepseek",
    "api.groq.com": "groq",
    "api.mistral.ai": "mistral",
    "api.together.xyz": "together",
    "api.fireworks.ai": "fireworks",
    "openrouter.ai": "openrouter",
    "generativelanguage.googleapis.com": "google",
    "api.x.ai": "x-ai",
}


def provider_of(base_url: str) -> str:
    """The provider name prices are looked up under, from the client's base URL.

    Known hosts map to their provider; any other (a local server, a gateway) is named by its
    host, which prices nothing unless the price book has an override for it.
    """
    host = urlsplit(base_url).hostname or "unknown"
    if host.endswith(".openai.azure.com"):
        return "azure"
    return _KNOWN_HOSTS.get(host, host)


def _usage(result: Any) -> TokenUsage | None:
    usage = getattr(result, "usage", None)
    if usage is None:
        return None
    try:
        return TokenUsage.from_provider(usage)
    except ValueError:
        return None


def _finish_reasons(result: Any) -> tuple[str, ...]:
    choices = getattr(result, "choices", None)
    if choices:
        return tuple(str(c.finish_reason) for c in choices if c.finish_reason is not None)
    status = getattr(result, "status", None)
    return (str(status),) if status else ()


class Books:
    """Accounting for the calls of one endpoint of one wrapped client.

    Args:
        accountant: where records go; ``None`` switches accounting off.
        endpoint: the endpoint called.
        provider: the provider name for prices and records.
        base_url: the client's base URL (the exported span's server address and port).
    """

    __slots__ = ("_saved", "_server", "accountant", "endpoint", "provider")

    def __init__(
        self, accountant: Accountant | None, endpoint: Endpoint, provider: str, base_url: str
    ) -> None:
        self.accountant, self.endpoint, self.provider = accountant, endpoint, provider
        # What a stored answer saves at each hit, by (entry key, response id): priced once,
        # not at every hit of a popular entry.
        self._saved: dict[tuple[str, str | None], Decimal | None] = {}
        parts = urlsplit(base_url)
        self._server = (parts.hostname, parts.port)

    def request(self, params: Mapping[str, Any]) -> CallRequest:
        """What is known of the call before it is made (for the budget and the span)."""
        messages = params.get("messages")
        prompt_tokens = None
        if messages is None and self.endpoint.name == "responses":
            given = params.get("input")
            messages = [{"role": "user", "content": given}] if isinstance(given, str) else given
        elif messages is None and self.endpoint.name in ("completions", "embeddings"):
            given = params.get("prompt", params.get("input"))
            texts = [given] if isinstance(given, str) else given
            if isinstance(texts, list) and all(isinstance(t, str) for t in texts):
                messages = [{"role": "user", "content": t} for t in texts]
            else:
                prompt_tokens = _token_ids(texts)
        max_out = params.get("max_completion_tokens") or params.get("max_tokens")
        if max_out is None:
            max_out = params.get("max_output_tokens")
        return CallRequest(
            provider=self.provider,
            model=str(params.get("model", "")),
            operation=self.endpoint.operation,
            messages=messages if isinstance(messages, list) else None,
            tools=params.get("tools"),
            prompt_tokens=prompt_tokens,
            max_output_tokens=max_out if isinstance(max_out, int) else None,
            server_address=self._server[0],
            server_port=self._server[1],
            params=params,
        )

    # -- a miss -------------------------------------------------------------------------------

    def begin(self, params: Mapping[str, Any]) -> Meter | None:
        """Reserve the worst case; raises ``BudgetExceeded`` when a limit would be crossed."""
        if self.accountant is None:
            return None
        return self.accountant.begin(self.request(params))

    async def abegin(self, params: Mapping[str, Any]) -> Meter | None:
        """Async :meth:`begin`."""
        if self.accountant is None:
            return None
        return await self.accountant.abegin(self.request(params))

    def _ok_args(self, meter: Meter, result: Any, cache: CacheOutcome) -> dict[str, Any]:
        usage = _usage(result) or self._estimate(meter, result)
        model = getattr(result, "model", None)
        end = CallEnd(
            response_id=getattr(result, "id", None),
            response_model=model,
            finish_reasons=_finish_reasons(result),
            output_messages=getattr(result, "choices", None),
        )
        return {"usage": usage, "model_served": model, "cache": cache, "end": end}

    def ok(self, meter: Meter | None, result: Any, cache: CacheOutcome = CacheOutcome.MISS) -> None:
        """The provider answered ``result``: price it and write its record."""
        if meter is not None:
            _guard(lambda: meter.ok(**self._ok_args(meter, result, cache)))

    async def aok(
        self, meter: Meter | None, result: Any, cache: CacheOutcome = CacheOutcome.MISS
    ) -> None:
        """Async :meth:`ok`."""
        if meter is not None:
            try:
                await meter.aok(**self._ok_args(meter, result, cache))
            except Exception:
                log.exception("could not account a call; it is not in the ledger")

    def failed(self, meter: Meter | None, exc: BaseException, partial: Sequence[Any] = ()) -> None:
        """The call failed, or its stream broke after ``partial`` chunks (billed as estimated)."""
        if meter is not None:
            _guard(lambda: meter.failed(exc, usage=self._partial_usage(meter, partial)))

    async def afailed(
        self, meter: Meter | None, exc: BaseException, partial: Sequence[Any] = ()
    ) -> None:
        """Async :meth:`failed`."""
        if meter is not None:
            try:
                await meter.afailed(exc, usage=self._partial_usage(meter, partial))
            except Exception:
                log.exception("could not account a failed call; it is not in the ledger")

    def _stopped_args(
        self, meter: Meter, chunks: Sequence[Any], cache: CacheOutcome
    ) -> dict[str, Any]:
        # The caller stopped reading: the provider was paid for the prompt and what was sent.
        usage = next((u for c in reversed(chunks) if (u := _usage(c)) is not None), None)
        if usage is None:
            usage = self._counted(meter, "".join(_chunk_text(c) for c in chunks))
        return {"usage": usage, "model_served": None, "cache": cache}

    def stopped(self, meter: Meter | None, chunks: Sequence[Any], cache: CacheOutcome) -> None:
        """The caller closed (or dropped) a stream before its end: an ok call, billed so far."""
        if meter is not None:
            _guard(lambda: meter.ok(**self._stopped_args(meter, chunks, cache)))

    async def astopped(
        self, meter: Meter | None, chunks: Sequence[Any], cache: CacheOutcome
    ) -> None:
        """Async :meth:`stopped`."""
        if meter is not None:
            try:
                await meter.aok(**self._stopped_args(meter, chunks, cache))
            except Exception:
                log.exception("could not account a call; it is not in the ledger")

    # -- a hit --------------------------------------------------------------------------------

    def _hit_args(
        self, params: Mapping[str, Any], result: Any, info: CacheInfo, started: float
    ) -> dict[str, Any]:
        assert self.accountant is not None
        model = str(params.get("model", ""))
        served = getattr(result, "model", None)
        memo = (info.key, getattr(result, "id", None))
        try:
            saved = self._saved[memo]
        except KeyError:
            saved = self._price(result, model, served)
            if len(self._saved) >= _SAVED_MEMO:
                self._saved.clear()
            self._saved[memo] = saved
        return {
            "provider": self.provider,
            "model": model,
            "operation": self.endpoint.operation,
            "tier": info.tier if info.hit else "single-flight",
            "saved": saved,
            "model_served": served,
            "latency": time.perf_counter() - started,
        }

    def _price(self, result: Any, model: str, served: str | None) -> Decimal | None:
        assert self.accountant is not None
        usage = _usage(result)
        if usage is None:
            return None
        request = CallRequest(provider=self.provider, model=model)
        cost = served_cost(self.accountant.prices, usage, request, served)
        return None if cost is None else cost.total

    def hit(self, params: Mapping[str, Any], result: Any, info: CacheInfo, started: float) -> None:
        """Record a call answered without the provider: $0 spent, the stored answer's cost saved."""
        if self.accountant is not None:
            try:
                self.accountant.hit(**self._hit_args(params, result, info, started))
            except Exception:
                log.exception("could not account a cache hit; it is not in the ledger")

    async def ahit(
        self, params: Mapping[str, Any], result: Any, info: CacheInfo, started: float
    ) -> None:
        """Async :meth:`hit`."""
        if self.accountant is not None:
            try:
                await self.accountant.ahit(**self._hit_args(params, result, info, started))
            except Exception:
                log.exception("could not account a cache hit; it is not in the ledger")

    # -- estimates ----------------------------------------------------------------------------

    def _estimate(self, meter: Meter, result: Any) -> TokenUsage:
        """Usage counted locally when the provider reported none (marked as an estimate)."""
        return self._counted(meter, _output_text(result))

    def _partial_usage(self, meter: Meter, partial: Sequence[Any]) -> TokenUsage | None:
        # A stream that broke after some output was still billed for it.
        if not partial:
            return None
        return self._counted(meter, "".join(_chunk_text(c) for c in partial))

    def _counted(self, meter: Meter, output: str) -> TokenUsage:
        request = meter.request
        prompt = 0
        if request.messages is not None:
            prompt = estimate_prompt_tokens(request.messages, request.model).tokens
        completion = 0
        if output:
            reply = [{"role": "assistant", "content": output}]
            # The reply counted as one message, minus the message and priming overhead.
            completion = max(0, estimate_prompt_tokens(reply, request.model).tokens - 7)
        return TokenUsage(input=prompt, output=completion, estimated=True)


def _token_ids(given: Any) -> int | None:
    """The length of a prompt given as token ids (a list of ints, or a list of such lists)."""
    if isinstance(given, list) and all(isinstance(t, int) for t in given):
        return len(given)
    if isinstance(given, list) and all(
        isinstance(p, list) and all(isinstance(t, int) for t in p) for p in given
    ):
        return sum(len(p) for p in given)
    return None


def _guard(record: Callable[[], Any]) -> None:
    # Accounting a call that has happened must never fail it (the ledger spills and counts).
    try:
        record()
    except Exception:
        log.exception("could not account a call; it is not in the ledger")


def _output_text(result: Any) -> str:
    choices = getattr(result, "choices", None)
    if choices:
        parts = []
        for c in choices:
            message = getattr(c, "message", None)
            text = getattr(message, "content", None) if message is not None else c.text
            parts.append(text or "")
            for call in getattr(message, "tool_calls", None) or ():
                parts.append(getattr(getattr(call, "function", None), "arguments", "") or "")
        return "".join(parts)
    text = getattr(result, "output_text", None)
    return text if isinstance(text, str) else ""


def _chunk_text(chunk: Any) -> str:
    choices = getattr(chunk, "choices", None)
    if choices:
        parts = []
        for c in choices:
            delta = getattr(c, "delta", None)
            if delta is None:
                parts.append(getattr(c, "text", "") or "")
                continue
            parts.append(delta.content or "")
            for call in delta.tool_calls or ():
                parts.append((call.function.arguments if call.function else "") or "")
        return "".join(parts)
    delta = getattr(chunk, "delta", None)
    return delta if isinstance(delta, str) else ""
