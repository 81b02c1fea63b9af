"""``@cached``: cache a sync or async function's results by its arguments.

The key covers the function's qualified name, its ``version`` and its arguments bound to its
signature (defaults applied, so ``f(1)`` and ``f(x=1)`` share an entry), or whatever a ``key``
function returns for them. Without a ``key`` function it also covers the values the function
captures from enclosing scopes (read at each call), so functions made by a factory
(``make(model)`` returning a decorated ``ask``) never share entries across captures; captured
functions, classes and modules count by qualified name. Lambdas, all named ``<lambda>``, are
told apart by the file and line where they start. Results keep their type on a hit (see
:mod:`llmcache.values`).

Per-call controls travel in a context, so the decorated function keeps its own signature::

    with cache_control(no_cache=True):
        answer = summarize(doc)  # fresh upstream call, result stored
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import inspect
import threading
import types
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, Protocol, TypeVar, overload

from llmcache import spend
from llmcache.cache import Cache, Fetched
from llmcache.keys import CacheKey, canonical_json, validate_name
from llmcache.values import ValueCodec, codec_for

if TYPE_CHECKING:
    from accounting import Accountant

__all__ = ["AsyncCachedFunction", "CachedFunction", "cache_control", "cached"]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class _Control:
    no_cache: bool = False
    no_store: bool = False
    ttl: float | None = None
    namespace: str | None = None
    tenant: str | None = None


_control: contextvars.ContextVar[_Control] = contextvars.ContextVar(
    "llmcache_control",
    default=_Control(),  # noqa: B039  (frozen: never mutated)
)


@contextlib.contextmanager
def cache_control(
    *,
    no_cache: bool | None = None,
    no_store: bool | None = None,
    ttl: float | None = None,
    namespace: str | None = None,
    tenant: str | None = None,
) -> Iterator[None]:
    """Set per-call cache controls for the ``@cached`` calls made inside the block.

    A control left at ``None`` keeps the value of the enclosing block, so a nested block (in a
    library, say) never drops the caller's tenant scope; give ``False`` to switch a flag off.

    Args:
        no_cache: skip the read: call the function, then store its result.
        no_store: do not store results.
        ttl: lifetime of results stored in the block, in seconds.
        namespace: namespace to read and write in.
        tenant: tenant scope to read and write in.

    Raises:
        ValueError: ``ttl`` is not > 0, or a namespace or tenant name is not valid (raised when
            the block is entered).
    """
    if ttl is not None and not ttl > 0:
        raise ValueError(f"cache_control ttl must be > 0 seconds or None, got {ttl!r}")
    if namespace is not None:
        validate_name("namespace", namespace)
    if tenant is not None:
        validate_name("tenant", tenant)
    given = {
        "no_cache": no_cache,
        "no_store": no_store,
        "ttl": ttl,
        "namespace": namespace,
        "tenant": tenant,
    }
    changes: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    token = _control.set(dataclasses.replace(_control.get(), **changes))
    try:
        yield
    finally:
        _control.reset(token)


class _Spec:
    """What a decorated function needs, shared by the sync and async faces."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        cache: Cache | None,
        ttl: float | None,
        namespace: str | None,
        key: Callable[..., Any] | None,
        version: str | int | None,
        condition: Callable[[Any], bool] | None,
        accountant: Accountant | Literal[False] | None = None,
    ) -> None:
        # Options are checked here, at decoration, not at the first call (STYLE 6).
        if ttl is not None and not ttl > 0:
            raise ValueError(f"@cached ttl must be > 0 seconds or None, got {ttl!r}")
        if namespace is not None:
            validate_name("namespace", namespace)
        self.fn = fn
        self.name = _identity(fn)
        self.signature = inspect.signature(fn)
        self._cache = cache
        self.ttl, self.namespace, self.key_fn = ttl, namespace, key
        self.version, self.condition = version, condition
        # What the function reads from enclosing scopes is part of what it computes (a factory's
        # `model`, say); with a `key` function the user has said what identifies a call.
        self.cells: _Cells = () if key is not None else _cells_of(fn)
        if self.cells:
            _check_captured(self.name, fn, self.cells)
        self._codec: ValueCodec | None = None
        self._lock = threading.Lock()
        self._accountant = accountant

    def accountant(self) -> Accountant | None:
        """The accountant, made (the default ledger opened) only when first needed."""
        if self._accountant is None:
            self._accountant = spend.default_accountant()
        return self._accountant or None

    @property
    def accounting(self) -> Callable[[], Accountant | None] | None:
        """What :func:`spend.counted` takes: ``None`` when accounting is off."""
        return None if self._accountant is False else self.accountant

    @property
    def cache(self) -> Cache:
        # The default cache opens a directory: do it at first call, not at import time.
        if self._cache is None:
            self._cache = Cache.default()
        return self._cache

    @property
    def codec(self) -> ValueCodec:
        # Built once per function (a TypeAdapter costs far more than a hit), lazily so that
        # annotations may name classes defined after the function.
        if self._codec is None:
            with self._lock:
                if self._codec is None:
                    self._codec = codec_for(self.fn, self.name)
        return self._codec

    def key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> CacheKey:
        payload: dict[str, Any] = {"function": self.name, "version": self.version}
        if self.key_fn is not None:
            payload["key"] = self.key_fn(*args, **kwargs)
        else:
            bound = self.signature.bind(*args, **kwargs)
            bound.apply_defaults()
            payload["args"] = bound.arguments
            if self.cells:
                payload["closure"] = _captured(self.cells, {id(self.fn)})
        ctl = _control.get()
        ns = ctl.namespace or self.namespace
        return self.cache.key(payload, namespace=ns, tenant=ctl.tenant)

    def options(self) -> dict[str, Any]:
        ctl = _control.get()
        codec = self.codec
        condition = self.condition
        return {
            "ttl": ctl.ttl if ctl.ttl is not None else self.ttl,
            "no_cache": ctl.no_cache,
            "no_store": ctl.no_store,
            "condition": None if condition is None else lambda out: condition(out.value),
            "encode": lambda out: spend.frame(out.spent, codec.encode(out.value)),
            "decode": lambda stored: _decoded(codec, stored),
        }

    def done(self, fetched: Fetched[spend.Counted]) -> Fetched[Any]:
        """The caller's view of a fetch: the value, and a hit's saving recorded."""
        out, info = fetched.value, fetched.info
        if out.spent is not None and (info.hit or info.coalesced):
            spend.record_hit(self.accountant(), out.spent, info.tier or "single-flight")
        return Fetched(out.value, info)


def _decoded(codec: ValueCodec, stored: bytes) -> spend.Counted:
    spent, body = spend.unframe(stored)
    return spend.Counted(codec.decode(body), spent)


# -- what a function captures -----------------------------------------------------------------

_Cells = tuple[tuple[str, types.CellType], ...]


def _identity(fn: Any) -> str:
    """``module.qualname``; for lambdas (all named ``<lambda>``) also where the code starts."""
    qualname = getattr(fn, "__qualname__", type(fn).__qualname__)
    name = f"{getattr(fn, '__module__', None)}.{qualname}"
    code = getattr(fn, "__code__", None)
    if "<lambda>" in qualname and code is not None:
        name += f"@{code.co_filename}:{code.co_firstlineno}"
    return name


def _cells_of(fn: Any) -> _Cells:
    closure = getattr(fn, "__closure__", None)
    if not closure:
        return ()
    return tuple(zip(fn.__code__.co_freevars, closure, strict=True))


def _captured(cells: _Cells, seen: set[int]) -> dict[str, Any]:
    """The values of a function's free variables, read now (a ``nonlocal`` may rebind them).

    Functions, classes and modules are encoded by their qualified name (member ``<var>#ref``),
    a bound method also by its ``<var>#self``, a nested function's own captures under
    ``<var>#closure``. ``#`` never occurs in a variable name, so these never meet a value.
    """
    out: dict[str, Any] = {}
    for var, cell in cells:
        try:
            value = cell.cell_contents
        except ValueError:  # not assigned yet (a local function defined after this one)
            out[var + "#unset"] = True
            continue
        _add(out, var, value, seen)
    return out


def _add_code(out: dict[str, Any], var: str, value: Any, seen: set[int]) -> None:
    inner: Any = None
    if isinstance(value, CachedFunction | AsyncCachedFunction):
        out[var + "#ref"] = value._spec.name
        inner = value._spec.fn
    elif isinstance(value, types.ModuleType):
        out[var + "#ref"] = value.__name__
    elif isinstance(value, types.MethodType):
        out[var + "#ref"] = _identity(value.__func__)
        _add(out, var + "#self", value.__self__, seen)
        inner = value.__func__
    else:  # functions, classes, builtins (len, or a bound `items.append`), slot wrappers
        out[var + "#ref"] = _identity(value)
        owner = None if isinstance(value, type) else getattr(value, "__self__", None)
        if owner is not None and not isinstance(owner, types.ModuleType):
            _add(out, var + "#self", owner, seen)
        if isinstance(value, types.FunctionType):
            inner = value
    if inner is not None and getattr(inner, "__closure__", None) and id(inner) not in seen:
        # A helper that itself captures (`model`, say) is as much part of the result.
        seen.add(id(inner))
        out[var + "#closure"] = _captured(_cells_of(inner), seen)


def _add(out: dict[str, Any], var: str, value: Any, seen: set[int]) -> None:
    if isinstance(value, _CODE):
        _add_code(out, var, value, seen)
    else:
        out[var] = value


def _check_captured(name: str, fn: Any, cells: _Cells) -> None:
    """Refuse, at decoration, captured values that cannot be part of a key."""
    for var, cell in cells:
        try:
            canonical_json(_captured(((var, cell),), {id(fn)}))
        except TypeError as exc:
            try:
                what = type(cell.cell_contents).__name__
            except ValueError:  # pragma: no cover - an unset cell always encodes
                what = "unset"
            raise TypeError(
                f"@cached {name}: it uses {var!r} (a {what}) from an enclosing scope, and that "
                f"value has no canonical encoding for its cache key ({exc}); pass key= to say "
                "what identifies a call"
            ) from None


class CachedFunction(Generic[P, R]):
    """A sync function whose results are cached; call it as the original.

    Attributes:
        cache: the :class:`~llmcache.Cache` it uses.
    """

    def __init__(self, fn: Callable[P, R], spec: _Spec) -> None:
        self._spec = spec
        functools.update_wrapper(self, fn)

    @property
    def cache(self) -> Cache:
        """The cache this function uses."""
        return self._spec.cache

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fetch(*args, **kwargs).value

    def fetch(self, *args: P.args, **kwargs: P.kwargs) -> Fetched[R]:
        """Call through the cache and return the value with its :class:`~llmcache.CacheInfo`."""
        spec = self._spec
        ck = spec.key(args, kwargs)
        fetched = spec.cache.fetch(
            ck,
            lambda: spend.counted(lambda: spec.fn(*args, **kwargs), spec.accounting),
            **spec.options(),
        )
        return spec.done(fetched)

    def key(self, *args: P.args, **kwargs: P.kwargs) -> CacheKey:
        """The cache key these arguments map to."""
        return self._spec.key(args, kwargs)

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Drop the cached result for these arguments."""
        self._spec.cache.delete(self._spec.key(args, kwargs))

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        # Decorating a method: bind like a function would, fetch/key/invalidate included.
        return self if obj is None else _Bound(self, obj)


class AsyncCachedFunction(Generic[P, R]):
    """An async function whose results are cached; await it as the original."""

    def __init__(self, fn: Callable[P, Awaitable[R]], spec: _Spec) -> None:
        self._spec = spec
        functools.update_wrapper(self, fn)
        _mark_coroutine_function(self)

    @property
    def cache(self) -> Cache:
        """The cache this function uses."""
        return self._spec.cache

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return (await self.fetch(*args, **kwargs)).value

    async def fetch(self, *args: P.args, **kwargs: P.kwargs) -> Fetched[R]:
        """Await through the cache and return the value with its :class:`~llmcache.CacheInfo`."""
        spec = self._spec
        ck = spec.key(args, kwargs)
        fetched = await spec.cache.afetch(
            ck,
            lambda: spend.acounted(lambda: spec.fn(*args, **kwargs), spec.accounting),
            **spec.options(),
        )
        return spec.done(fetched)

    def key(self, *args: P.args, **kwargs: P.kwargs) -> CacheKey:
        """The cache key these arguments map to."""
        return self._spec.key(args, kwargs)

    async def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Drop the cached result for these arguments."""
        await self._spec.cache.adelete(self._spec.key(args, kwargs))

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        return self if obj is None else _Bound(self, obj)


_CODE: tuple[type, ...] = (
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.MethodDescriptorType,
    types.ClassMethodDescriptorType,
    types.WrapperDescriptorType,
    types.MethodWrapperType,
    types.ModuleType,
    type,
    CachedFunction,
    AsyncCachedFunction,
)


class _Bound:
    """A cached function bound to an instance, as a method is.

    Calls, ``fetch``, ``key`` and ``invalidate`` all receive the instance first (a plain
    ``MethodType`` would bind only the call).
    """

    __slots__ = ("__func__", "__self__")

    def __init__(self, func: CachedFunction[..., Any] | AsyncCachedFunction[..., Any], obj: Any):
        self.__func__ = func
        self.__self__ = obj

    @property
    def cache(self) -> Cache:
        """The cache this function uses."""
        return self.__func__.cache

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__func__(self.__self__, *args, **kwargs)

    def fetch(self, *args: Any, **kwargs: Any) -> Any:
        """The function's ``fetch`` with the instance as first argument."""
        return self.__func__.fetch(self.__self__, *args, **kwargs)

    def key(self, *args: Any, **kwargs: Any) -> CacheKey:
        """The function's ``key`` with the instance as first argument."""
        return self.__func__.key(self.__self__, *args, **kwargs)

    def invalidate(self, *args: Any, **kwargs: Any) -> Any:
        """The function's ``invalidate`` with the instance as first argument."""
        return self.__func__.invalidate(self.__self__, *args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        # As a bound method's: without the instance's parameter.
        sig = inspect.signature(self.__func__)
        return sig.replace(parameters=list(sig.parameters.values())[1:])

    def __getattr__(self, name: str) -> Any:
        # __name__, __wrapped__, the coroutine-function marker …: those of the function.
        if name in _Bound.__slots__:  # not set yet (a copy being built): no recursion
            raise AttributeError(name)
        return getattr(self.__func__, name)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, _Bound)
            and self.__func__ is other.__func__
            and self.__self__ is other.__self__
        )

    def __hash__(self) -> int:
        return hash((id(self.__func__), id(self.__self__)))

    def __repr__(self) -> str:
        return f"<bound cached {self.__func__._spec.name} of {self.__self__!r}>"


def _mark_coroutine_function(obj: Any) -> None:
    # So that frameworks checking iscoroutinefunction() still see a coroutine function.
    mark = getattr(inspect, "markcoroutinefunction", None)  # Python 3.12+
    if mark is not None:
        mark(obj)
    else:  # Python 3.11: the marker asyncio.iscoroutinefunction() looks for
        obj._is_coroutine = asyncio.coroutines._is_coroutine  # type: ignore[attr-defined]


class _Decorator(Protocol):
    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[P, Coroutine[Any, Any, R_co]], /
    ) -> AsyncCachedFunction[P, R_co]: ...
    @overload
    def __call__(self, fn: Callable[P, R_co], /) -> CachedFunction[P, R_co]: ...


@overload
def cached(  # type: ignore[overload-overlap]
    fn: Callable[P, Coroutine[Any, Any, R]], /
) -> AsyncCachedFunction[P, R]: ...
@overload
def cached(fn: Callable[P, R], /) -> CachedFunction[P, R]: ...
@overload
def cached(
    *,
    cache: Cache | None = None,
    ttl: float | None = None,
    namespace: str | None = None,
    key: Callable[..., Any] | None = None,
    version: str | int | None = None,
    condition: Callable[[Any], bool] | None = None,
    accountant: Accountant | Literal[False] | None = None,
) -> _Decorator: ...


def cached(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    cache: Cache | None = None,
    ttl: float | None = None,
    namespace: str | None = None,
    key: Callable[..., Any] | None = None,
    version: str | int | None = None,
    condition: Callable[[Any], bool] | None = None,
    accountant: Accountant | Literal[False] | None = None,
) -> Any:
    """Cache a function's results; use bare (``@cached``) or with options.

    Args:
        cache: the cache to use (default: :meth:`Cache.default`, opened at the first call).
        ttl: lifetime of results in seconds (default: the cache's).
        namespace: namespace of the entries (default: the cache's).
        key: ``key(*args, **kwargs)`` returns what identifies a call, instead of all arguments
            (use it to leave out arguments such as clients or loggers).
        version: bump it when the function's behaviour changes: old entries stop matching.
        condition: ``condition(result)`` decides whether a result is stored.
        accountant: where a miss's spend is learnt and a hit's saving recorded (see
            :mod:`llmcache.spend`); default the process-wide one, ``False`` for none.

    Raises:
        ValueError: at decoration, for a ``ttl`` not > 0 or an invalid ``namespace`` name.
        TypeError: at decoration, when (without ``key``) the function captures a value with no
            canonical encoding; at a call whose arguments have none (the path is named).
        UncacheableValue: at the call whose result has no faithful JSON form (a pydantic model
            or dataclass needs a return annotation).
    """

    def decorate(f: Callable[..., Any]) -> Any:
        spec = _Spec(
            f,
            cache=cache,
            ttl=ttl,
            namespace=namespace,
            key=key,
            version=version,
            condition=condition,
            accountant=accountant,
        )
        if inspect.iscoroutinefunction(f):
            return AsyncCachedFunction(f, spec)
        return CachedFunction(f, spec)

    return decorate if fn is None else decorate(fn)
