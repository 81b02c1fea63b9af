"""One cached call of a wrapped client: plan it, then serve it from the cache or upstream.

:func:`plan` decides everything from plain values (what is sent, what is keyed, whether the
cache is used at all); :class:`SyncCall` and :class:`AsyncCall` are the two faces that do the
I/O, each a few lines per case: a non-stream call goes through :meth:`Cache.fetch`, a stream
through :meth:`Cache.claim` and a tee (a hit is replayed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from accounting import Accountant, BudgetExceeded, CacheOutcome
from llmcache._exceptions import LLMCacheError
from llmcache.cache import Cache
from llmcache.claim import Claim
from llmcache.decorators import _control
from llmcache.fetched import CacheInfo
from llmcache.keys import validate_name
from llmcache.openai import policy
from llmcache.openai.books import Books
from llmcache.openai.endpoints import Endpoint
from llmcache.openai.streaming import (
    AsyncReplayStream,
    AsyncTeeStream,
    ReplayStream,
    StreamSink,
    TeeStream,
)
from llmcache.singleflight import FlightAbandoned

__all__ = ["INFO_ATTR", "AsyncCall", "Plan", "SyncCall", "Wiring", "plan", "tag"]

log = logging.getLogger("llmcache.openai")


class StreamBroken(LLMCacheError):
    """A stream ended without its finish (the connection closed early): nothing is stored."""


#: Where a result carries its :class:`CacheInfo` (read it with ``llmcache.cache_info``).
INFO_ATTR = "_llmcache_info"
#: The per-call control keyword: popped before the call, so it never reaches the provider.
CONTROL_KWARG = "llmcache"
_CONTROLS = frozenset({"no_cache", "no_store", "ttl", "namespace", "tenant"})


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Wiring:
    """What a wrapped client (and every copy ``with_options`` makes of it) shares."""

    cache: Cache
    policy: policy.WrapPolicy
    accountant: Accountant | None
    provider: str | None


@dataclasses.dataclass(slots=True, kw_only=True)
class Plan:
    """How one call is served.

    Attributes:
        params: the arguments for the provider (the control keyword removed).
        key: the key payload; ``None`` sends the call straight upstream.
        stream: the caller asked for a stream.
        caller_usage: the caller asked for the usage chunk (``stream_options.include_usage``).
        upstream: the arguments actually sent (the usage chunk requested for the cache).
        options: ``ttl``, ``namespace``, ``tenant``, ``no_cache``, ``no_store`` for the cache.
    """

    params: dict[str, Any]
    key: dict[str, Any] | None
    stream: bool
    caller_usage: bool
    upstream: dict[str, Any]
    options: dict[str, Any]


def _controls(kwargs: dict[str, Any], wiring: Wiring) -> dict[str, Any]:
    ctl = _control.get()
    options: dict[str, Any] = {
        "no_cache": ctl.no_cache,
        "no_store": ctl.no_store,
        "ttl": ctl.ttl if ctl.ttl is not None else wiring.policy.ttl,
        "namespace": ctl.namespace if ctl.namespace is not None else wiring.policy.namespace,
        "tenant": ctl.tenant,
    }
    given = kwargs.pop(CONTROL_KWARG, None)
    if given is not None:
        if not isinstance(given, Mapping) or not set(given) <= _CONTROLS:
            raise TypeError(
                f"{CONTROL_KWARG}= takes a dict with keys from {sorted(_CONTROLS)}, got {given!r}"
            )
        for name in ("namespace", "tenant"):
            if given.get(name) is not None:
                validate_name(name, given[name])
        options.update({k: v for k, v in given.items() if v is not None})
    return options


def plan(endpoint: Endpoint, wiring: Wiring, base_url: str, kwargs: dict[str, Any]) -> Plan:
    """Decide how a call is served (pure apart from reading the ``cache_control`` context).

    Raises:
        TypeError: the ``llmcache=`` control is not a dict of known controls.
        ValueError: a control's namespace or tenant name is not valid.
    """
    options = _controls(kwargs, wiring)
    params = policy.request_params(kwargs)
    stream = params.get("stream") is True and endpoint.chunk is not None
    stream_options = params.get("stream_options") or {}
    caller_usage = bool(stream_options.get("include_usage"))
    upstream = params
    if stream and endpoint.name != "responses" and wiring.policy.stream_usage and not caller_usage:
        upstream = {**params, "stream_options": {**stream_options, "include_usage": True}}
    reason = policy.bypass_reason(endpoint.name, params, wiring.policy)
    key = None if reason is not None else policy.key_payload(endpoint.name, base_url, params)
    return Plan(
        params=params,
        key=key,
        stream=stream,
        caller_usage=caller_usage,
        upstream=upstream,
        options=options,
    )


def tag(result: Any, info: CacheInfo) -> Any:
    """Attach ``info`` to an SDK object without changing its type or its dumps."""
    object.__setattr__(result, INFO_ATTR, info)
    return result


class _Call:
    """What both faces share: the endpoint, the wiring and the call's plan."""

    __slots__ = ("base_url", "books", "client", "endpoint", "plan", "raw", "started", "wiring")

    def __init__(
        self,
        *,
        endpoint: Endpoint,
        wiring: Wiring,
        client: Any,
        base_url: str,
        books: Books,
        raw: Callable[..., Any],
        kwargs: dict[str, Any],
    ) -> None:
        self.endpoint, self.wiring, self.client, self.base_url = endpoint, wiring, client, base_url
        self.books, self.raw = books, raw
        self.started = time.perf_counter()
        self.plan = plan(endpoint, wiring, base_url, kwargs)

    def _hidden(self) -> Callable[[Any], bool] | None:
        p = self.plan
        if p.upstream is p.params:
            return None
        return self.endpoint.is_usage_chunk

    def _replay_items(self, value: Any) -> list[Any]:
        assert self.endpoint.replay is not None
        return self.endpoint.replay(value, self.plan.caller_usage)

    def _finished(self, chunks: list[Any]) -> tuple[Any, bytes, bool]:
        """The assembled result of a stream read to its end, its entry, and if it may be stored."""
        assert self.endpoint.assemble is not None
        result = self.endpoint.assemble(chunks)
        if result is None:
            return None, b"", False
        return result, self.endpoint.encode(result), self.endpoint.storable(result)

    def _raw_result(self, response: Any) -> Any:
        """What a raw response says was spent, without taking its body from the caller.

        A ``with_raw_response`` response of a non-stream call has its body read already: its
        parsed result carries the usage. Otherwise (a stream, or ``with_streaming_response``,
        whose body the caller has yet to read) the usage is estimated from the prompt.
        """
        if self.plan.stream or policy.raw_mode(self.plan.params) == "stream":
            return None
        try:
            return response.parse()
        except Exception:  # the caller will meet the same error when it parses
            return None

    def _miss_info(self, claim: Claim | None) -> CacheInfo:
        return CacheInfo(hit=False, tier=None, key="" if claim is None else claim.key)

    def _replay_args(self, info: CacheInfo) -> dict[str, Any]:
        return {
            "cast_to": self.endpoint.chunk,
            "client": self.client,
            "url": self.base_url,
            "info": info,
        }

    def _fetch_options(self) -> dict[str, Any]:
        e = self.endpoint
        return {
            "encode": e.encode,
            "decode": e.decode,
            "condition": e.storable,
            **self.plan.options,
        }


class SyncCall(_Call):
    """The blocking face."""

    __slots__ = ()

    def run(self) -> Any:
        """Serve the call."""
        p = self.plan
        if p.key is None:
            if policy.wants_raw(p.params):
                return self._raw_response()
            return self._stream(None) if p.stream else self._upstream(CacheOutcome.BYPASS)
        if not p.stream:
            try:
                fetched = self.wiring.cache.fetch(p.key, self._upstream, **self._fetch_options())
            except _Refused as refused:
                raise refused.refusal from None
            if fetched.info.hit or fetched.info.coalesced:
                self.books.hit(p.params, fetched.value, fetched.info, self.started)
            return tag(fetched.value, fetched.info)
        got = self.wiring.cache.claim(p.key, decode=self.endpoint.decode, **p.options)
        if isinstance(got, Claim):
            return self._stream(got)
        self.books.hit(p.params, got.value, got.info, self.started)
        return ReplayStream(self._replay_items(got.value), **self._replay_args(got.info))

    def _raw_response(self) -> Any:
        # with_raw_response / with_streaming_response: the HTTP response goes back as it is;
        # the call is still budgeted and recorded (see _raw_result).
        meter = self.books.begin(self.plan.params)
        try:
            response = self.raw(**self.plan.params)
        except Exception as exc:
            self.books.failed(meter, exc)
            raise
        self.books.ok(meter, self._raw_result(response), CacheOutcome.BYPASS)
        return response

    def _upstream(self, outcome: CacheOutcome = CacheOutcome.MISS) -> Any:
        if self.books.accountant is None:  # nothing to account: no meter to open and close
            return self.raw(**self.plan.params)
        try:
            meter = self.books.begin(self.plan.params)
        except BudgetExceeded as exc:
            raise _Refused(exc) from None
        try:
            result = self.raw(**self.plan.params)
        except Exception as exc:
            self.books.failed(meter, exc)
            raise
        self.books.ok(meter, result, outcome)
        return result

    def _stream(self, claim: Claim | None) -> Any:
        try:
            meter = self.books.begin(self.plan.params)
        except BaseException as exc:
            _give_up(claim, exc)
            raise
        try:
            upstream = self.raw(**self.plan.upstream)
        except BaseException as exc:
            _give_up(claim, exc)
            if isinstance(exc, Exception):
                self.books.failed(meter, exc)
            raise

        def complete(chunks: list[Any]) -> bool:
            try:
                result, body, store = self._finished(chunks)
            except Exception as exc:  # a chunk shape we cannot assemble: not stored, not raised
                log.warning("could not assemble a stream (%s); not stored", type(exc).__name__)
                result = None
            if result is None:  # ended without a finish reason: broken, never stored
                abandon(StreamBroken("the stream ended before its finish"), chunks)
                return False
            try:
                # Published first: the waiters must never depend on the ledger write.
                stored = claim is not None and claim.publish(body, store=store)
            finally:
                _give_up(claim, None)  # a no-op once published
                self.books.ok(meter, result, _outcome(claim))
            return stored

        def abandon(exc: BaseException | None, chunks: list[Any]) -> None:
            _give_up(claim, None)
            if exc is None:
                self.books.stopped(meter, chunks, _outcome(claim))
            else:
                self.books.failed(meter, exc, chunks)

        sink = StreamSink(complete=complete, abandon=abandon, hidden=self._hidden())
        return TeeStream(upstream, sink, self._miss_info(claim))


class AsyncCall(_Call):
    """The asyncio face: the same steps, awaited."""

    __slots__ = ()

    async def run(self) -> Any:
        """Serve the call."""
        p = self.plan
        if p.key is None:
            if policy.wants_raw(p.params):
                return await self._raw_response()
            if p.stream:
                return await self._stream(None)
            return await self._upstream(CacheOutcome.BYPASS)
        if not p.stream:
            try:
                fetched = await self.wiring.cache.afetch(
                    p.key, self._upstream, **self._fetch_options()
                )
            except _Refused as refused:
                raise refused.refusal from None
            if fetched.info.hit or fetched.info.coalesced:
                await self.books.ahit(p.params, fetched.value, fetched.info, self.started)
            return tag(fetched.value, fetched.info)
        got = await self.wiring.cache.aclaim(p.key, decode=self.endpoint.decode, **p.options)
        if isinstance(got, Claim):
            return await self._stream(got)
        await self.books.ahit(p.params, got.value, got.info, self.started)
        return AsyncReplayStream(self._replay_items(got.value), **self._replay_args(got.info))

    async def _raw_response(self) -> Any:
        meter = await self.books.abegin(self.plan.params)
        try:
            response = await self.raw(**self.plan.params)
        except Exception as exc:
            await self.books.afailed(meter, exc)
            raise
        await self.books.aok(meter, self._raw_result(response), CacheOutcome.BYPASS)
        return response

    async def _upstream(self, outcome: CacheOutcome = CacheOutcome.MISS) -> Any:
        if self.books.accountant is None:  # nothing to account: no meter to open and close
            return await self.raw(**self.plan.params)
        try:
            meter = await self.books.abegin(self.plan.params)
        except BudgetExceeded as exc:
            raise _Refused(exc) from None
        try:
            result = await self.raw(**self.plan.params)
        except Exception as exc:
            await self.books.afailed(meter, exc)
            raise
        await self.books.aok(meter, result, outcome)
        return result

    async def _stream(self, claim: Claim | None) -> Any:
        try:
            meter = await self.books.abegin(self.plan.params)
        except BaseException as exc:
            _give_up(claim, exc)
            raise
        try:
            upstream = await self.raw(**self.plan.upstream)
        except BaseException as exc:
            _give_up(claim, exc)
            if isinstance(exc, Exception):
                await self.books.afailed(meter, exc)
            raise

        async def complete(chunks: list[Any]) -> bool:
            try:
                result, body, store = self._finished(chunks)
            except Exception as exc:
                log.warning("could not assemble a stream (%s); not stored", type(exc).__name__)
                result = None
            if result is None:
                await aabandon(StreamBroken("the stream ended before its finish"), chunks)
                return False
            try:
                # Published first: the waiters never depend on the ledger write.
                stored = claim is not None and await claim.apublish(body, store=store)
            except BaseException:
                # Cancelled while a tier wrote (the claim has ended itself): the cost must
                # still reach the ledger, and nothing can be awaited any more.
                _give_up(claim, None)
                self.books.ok(meter, result, _outcome(claim))
                raise
            # Shielded: a cancellation of this task does not stop the record of a paid call.
            await asyncio.shield(self.books.aok(meter, result, _outcome(claim)))
            return stored

        async def aabandon(exc: BaseException | None, chunks: list[Any]) -> None:
            _give_up(claim, None)
            if exc is None:
                await self.books.astopped(meter, chunks, _outcome(claim))
            else:
                await self.books.afailed(meter, exc, chunks)

        def abandon(exc: BaseException | None, chunks: list[Any]) -> None:
            # Only the garbage collector calls this (a stream dropped unread), possibly on the
            # event loop's thread: the ledger and budget calls go to a thread of their own.
            _give_up(claim, None)
            threading.Thread(
                target=self.books.stopped,
                args=(meter, list(chunks), _outcome(claim)),
                name="llmcache-stream-accounting",
                daemon=True,
            ).start()

        sink = StreamSink(
            acomplete=complete, abandon=abandon, aabandon=aabandon, hidden=self._hidden()
        )
        return AsyncTeeStream(upstream, sink, self._miss_info(claim))


def _give_up(claim: Claim | None, exc: BaseException | None) -> None:
    if claim is not None:
        # A budget refusal is this caller's: the others waiting for the key try for themselves.
        error = exc if isinstance(exc, Exception) and not isinstance(exc, BudgetExceeded) else None
        claim.abandon(error)


class _Refused(FlightAbandoned):
    """A budget refused the caller computing a key: the callers waiting for the same key are
    other users, with their own budgets, so they go on for themselves (the flight's error is
    an abandonment, not the refusal), and the refused caller gets its ``BudgetExceeded``."""

    def __init__(self, refusal: BudgetExceeded) -> None:
        super().__init__(str(refusal))
        self.refusal = refusal


def _outcome(claim: Claim | None) -> CacheOutcome:
    return CacheOutcome.BYPASS if claim is None else CacheOutcome.MISS
