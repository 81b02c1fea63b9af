"""``llmcache.wrap``: an OpenAI client whose create calls go through the cache.

The wrapped client is a real ``OpenAI`` / ``AsyncOpenAI``: an instance of a subclass made once
per client class, built by the SDK's own ``copy()`` (same options, same HTTP connection pool).
``isinstance``, ``with_options``, ``with_raw_response``, ``close()``, the context manager and
every resource but four behave as the SDK's, because they are the SDK's. The four cached
``create`` methods (``chat.completions``, ``completions``, ``embeddings``, ``responses``) are
reached through thin proxies that delegate everything else to the SDK resource.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, Literal, TypeVar, cast

from openai import AsyncOpenAI, OpenAI

from accounting import Accountant, Ledger
from llmcache.cache import Cache
from llmcache.fetched import CacheInfo
from llmcache.openai import endpoints as ep
from llmcache.openai.books import Books, provider_of
from llmcache.openai.calls import INFO_ATTR, AsyncCall, SyncCall, Wiring
from llmcache.openai.policy import WrapPolicy
from llmcache.spend import default_accountant

__all__ = ["cache_info", "default_accountant", "wrap"]

ClientT = TypeVar("ClientT", bound=OpenAI | AsyncOpenAI)
_WIRING = "_llmcache_wiring"
_classes: dict[type[Any], type[Any]] = {}
_classes_lock = threading.Lock()


def cache_info(result: object) -> CacheInfo | None:
    """Where a wrapped client's result came from: ``None`` for anything it did not return.

    ``info.hit`` says it was served from a tier (``info.tier`` names it), ``info.coalesced``
    that another caller's upstream call answered it.
    """
    info = getattr(result, INFO_ATTR, None)
    return info if isinstance(info, CacheInfo) else None


def wrap(
    client: ClientT,
    cache: Cache | None = None,
    *,
    ttl: float | None = None,
    namespace: str | None = None,
    sampled: Literal["cache", "bypass"] = "cache",
    stream_usage: bool = True,
    enabled: bool = True,
    accountant: Accountant | Literal[False] | None = None,
    ledger: Ledger | None = None,
    provider: str | None = None,
) -> ClientT:
    """Return a copy of ``client`` whose create calls are cached and accounted.

    Args:
        client: an ``openai.OpenAI`` or ``openai.AsyncOpenAI`` (any ``base_url``).
        cache: the cache to use; default :meth:`Cache.default` (memory + disk).
        ttl: lifetime of stored answers in seconds (default: the cache's).
        namespace: namespace of the entries (default: the cache's).
        sampled: ``"cache"`` or ``"bypass"`` for sampled requests; see :class:`WrapPolicy`.
        stream_usage: request the usage chunk of streams; see :class:`WrapPolicy`.
        enabled: ``False`` sends every call upstream (accounting still applies).
        accountant: where calls are accounted; default :func:`default_accountant`;
            ``False`` accounts nothing.
        ledger: shorthand for ``accountant=Accountant(ledger=ledger)``.
        provider: provider name for prices (default: derived from the base URL).

    Returns:
        A client of the same class (a subclass of it), sharing ``client``'s connection pool.

    Raises:
        TypeError: ``client`` is not an OpenAI client, or ``accountant`` and ``ledger`` are
            both given.
        ValueError: a bad ``ttl``, ``namespace`` or ``sampled``.
    """
    if not isinstance(client, OpenAI | AsyncOpenAI):
        raise TypeError(
            f"wrap() takes an openai.OpenAI or openai.AsyncOpenAI client, got {type(client)!r}"
        )
    if accountant is not None and ledger is not None:
        raise TypeError("give wrap() an accountant or a ledger, not both")
    cache = cache if cache is not None else Cache.default()
    if namespace is not None:
        cache.key({}, namespace=namespace)  # validates the name now, not at the first call
    acct: Accountant | None
    if ledger is not None:
        acct = Accountant(ledger=ledger)
    elif accountant is None:
        acct = default_accountant()
    else:
        acct = accountant or None
    wiring = Wiring(
        cache=cache,
        policy=WrapPolicy(
            ttl=ttl,
            namespace=namespace,
            sampled=sampled,
            stream_usage=stream_usage,
            enabled=enabled,
        ),
        accountant=acct,
        provider=provider,
    )
    base = type(client)
    if getattr(client, _WIRING, None) is not None:
        base = base.__mro__[1]  # re-wrapping a wrapped client replaces its wiring
    wrapped = client.copy()
    wrapped.__class__ = _wrapped_class(base)
    object.__setattr__(wrapped, _WIRING, wiring)
    # copy() returns Self at run time; mypy narrows the bound TypeVar to the union.
    return cast("ClientT", wrapped)


# -- the wrapped classes ----------------------------------------------------------------------


def _wrapped_class(base: type[Any]) -> type[Any]:
    with _classes_lock:
        cls = _classes.get(base)
        if cls is None:
            cls = _classes[base] = _make_class(base)
        return cls


def _original(base: type[Any], name: str) -> Callable[[Any], Any]:
    prop = getattr(base, name, None)
    if not isinstance(prop, functools.cached_property):
        raise TypeError(
            f"{base.__name__}.{name} is not a lazily built resource; this openai SDK version "
            "is not supported by llmcache.wrap"
        )
    return prop.func


def _make_class(base: type[Any]) -> type[Any]:
    is_async = issubclass(base, AsyncOpenAI)
    originals = {n: _original(base, n) for n in ("chat", "completions", "embeddings", "responses")}

    def copy(self: Any, *args: Any, **kwargs: Any) -> Any:
        new = base.copy(self, *args, **kwargs)
        object.__setattr__(new, _WIRING, getattr(self, _WIRING))
        return new

    def resource(name: str, endpoint: ep.Endpoint | None) -> functools.cached_property[Any]:
        def get(self: Any) -> Any:
            sdk = originals[name](self)
            if endpoint is None:  # chat: its completions resource is the cached one
                return _ChatProxy(sdk, _Creator(self, ep.CHAT, sdk.completions, is_async))
            return _Creator(self, endpoint, sdk, is_async)

        get.__name__ = name
        return functools.cached_property(get)

    def key_identity(self: Any) -> dict[str, str]:
        # What a @cached function that captures this client is keyed by: the provider's
        # URL, never the API key.
        return {"base_url": str(self.base_url)}

    namespace = {
        "__module__": __name__,
        "__llmcache_key__": key_identity,
        "__doc__": f"``{base.__name__}`` whose create calls go through llmcache.",
        "copy": copy,
        "with_options": copy,
        "chat": resource("chat", None),
        "completions": resource("completions", ep.COMPLETIONS),
        "embeddings": resource("embeddings", ep.EMBEDDINGS),
        "responses": resource("responses", ep.RESPONSES),
    }
    return type(f"Cached{base.__name__}", (base,), namespace)


class _Proxy:
    """Delegates every attribute it does not define to the SDK resource it wraps."""

    __slots__ = ("_sdk",)

    def __init__(self, sdk: Any) -> None:
        self._sdk = sdk

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sdk, name)

    def __dir__(self) -> list[str]:
        return sorted(set(dir(self._sdk)))

    def __repr__(self) -> str:
        return f"<llmcache proxy of {self._sdk!r}>"


class _ChatProxy(_Proxy):
    """``client.chat``: its ``completions`` is cached, the rest is the SDK's."""

    __slots__ = ("completions",)

    def __init__(self, sdk: Any, completions: _Creator) -> None:
        super().__init__(sdk)
        self.completions = completions


class _Creator(_Proxy):
    """A resource whose ``create`` goes through the cache."""

    __slots__ = ("_books", "_client", "_endpoint", "_url", "_wiring", "create")

    def __init__(self, client: Any, endpoint: ep.Endpoint, sdk: Any, is_async: bool) -> None:
        super().__init__(sdk)
        wiring: Wiring = getattr(client, _WIRING)
        self._client, self._endpoint, self._wiring = client, endpoint, wiring
        self._url = str(client.base_url)
        provider = wiring.provider or provider_of(self._url)
        self._books = Books(wiring.accountant, endpoint, provider, self._url)
        # A bound function per face, so the hot path has no branch on sync/async.
        self.create = self._acreate if is_async else self._create

    def _call_args(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {
            "endpoint": self._endpoint,
            "wiring": self._wiring,
            "client": self._client,
            "base_url": self._url,
            "books": self._books,
            "raw": self._sdk.create,
            "kwargs": kwargs,
        }

    def _create(self, **kwargs: Any) -> Any:
        # Spelled out rather than through _call_args: one dict fewer at every call.
        return SyncCall(
            endpoint=self._endpoint,
            wiring=self._wiring,
            client=self._client,
            base_url=self._url,
            books=self._books,
            raw=self._sdk.create,
            kwargs=kwargs,
        ).run()

    async def _acreate(self, **kwargs: Any) -> Any:
        return await AsyncCall(**self._call_args(kwargs)).run()
