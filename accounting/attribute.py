"""Who a call is charged to: user, feature, task and free-form tags, carried in a ContextVar.

``attribute(...)`` is a context manager (sync and async) and a decorator (sync and async
functions). Nested uses extend the outer attribution and override the fields they name.

The attribution lives in a :class:`contextvars.ContextVar`, so it follows the code that runs
on behalf of a request:

- asyncio tasks copy the context when created: ``asyncio.create_task``/``gather`` inside
  ``with attribute(...)`` charge the same user; ``asyncio.to_thread`` copies it too.
- ``concurrent.futures`` thread pools and ``loop.run_in_executor`` do **not** copy it. Submit
  ``carry(fn)`` instead of ``fn`` (``pool.submit(carry(fn), *args)``): it runs ``fn`` in a copy
  of the submitting code's context.

Calls made outside any ``attribute`` land in the ``unattributed`` bucket of every report.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Mapping
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, ParamSpec, TypeVar, cast

__all__ = ["UNATTRIBUTED", "Attribution", "attribute", "carry", "current_attribution"]

P = ParamSpec("P")
R = TypeVar("R")

#: The bucket reports use for a dimension no ``attribute`` set.
UNATTRIBUTED = "unattributed"

_EMPTY_TAGS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class Attribution:
    """Who a call is charged to. ``None`` fields were not set by any enclosing ``attribute``."""

    user: str | None = None
    feature: str | None = None
    task: str | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: _EMPTY_TAGS)

    def extended(
        self,
        *,
        user: str | None = None,
        feature: str | None = None,
        task: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Attribution:
        """This attribution with the given fields overriding (tags are merged, new ones win)."""
        merged = self.tags
        if tags:
            merged = MappingProxyType({**self.tags, **tags})
        return Attribution(
            user=self.user if user is None else user,
            feature=self.feature if feature is None else feature,
            task=self.task if task is None else task,
            tags=merged,
        )

    @property
    def is_empty(self) -> bool:
        """True when no field and no tag is set."""
        return self.user is None and self.feature is None and self.task is None and not self.tags

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the ledger's): unset fields are ``None``; tags sorted by name."""
        return {
            "user": self.user,
            "feature": self.feature,
            "task": self.task,
            "tags": dict(sorted(self.tags.items())),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Attribution:
        """Inverse of :meth:`to_dict`."""
        tags = data.get("tags") or {}
        return cls(
            user=data.get("user"),
            feature=data.get("feature"),
            task=data.get("task"),
            tags=MappingProxyType({str(k): str(v) for k, v in tags.items()}),
        )


_EMPTY = Attribution()
_current: ContextVar[Attribution] = ContextVar("accounting.attribution", default=_EMPTY)


def current_attribution() -> Attribution:
    """The attribution of the code running now (empty outside any ``attribute``)."""
    return _current.get()


def _check(name: str, value: object) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise TypeError(f"attribute({name}=...) must be a non-empty str, got {value!r}")


class attribute:  # lower case: used like a function, `with attribute(user=...)`
    """Charge the calls made inside to ``user``, ``feature``, ``task`` and ``tags``.

    As a context manager (``with`` or ``async with``) it returns the resulting
    :class:`Attribution`. As a decorator it applies on every call of a sync or async function.
    One ``attribute`` object may be used as a decorator by many threads and tasks at once; as
    a context manager, enter each object once at a time (as with ``open``).

    Raises:
        TypeError: a field or tag value is not a non-empty string.
    """

    __slots__ = ("_feature", "_tags", "_task", "_tokens", "_user")

    def __init__(
        self,
        *,
        user: str | None = None,
        feature: str | None = None,
        task: str | None = None,
        **tags: str,
    ) -> None:
        _check("user", user)
        _check("feature", feature)
        _check("task", task)
        for name, value in tags.items():
            _check(name, value)
        self._user = user
        self._feature = feature
        self._task = task
        self._tags: Mapping[str, str] = MappingProxyType(dict(tags)) if tags else _EMPTY_TAGS
        self._tokens: list[Token[Attribution]] = []

    def _bind(self) -> Token[Attribution]:
        outer = _current.get()
        inner = outer.extended(
            user=self._user, feature=self._feature, task=self._task, tags=self._tags
        )
        return _current.set(inner)

    def __enter__(self) -> Attribution:
        self._tokens.append(self._bind())
        return _current.get()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _current.reset(self._tokens.pop())

    async def __aenter__(self) -> Attribution:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate ``fn`` so each call runs under this attribution.

        ``fn`` may be a function, a coroutine function, or a generator or async generator
        function (a streaming helper): a generator runs under the attribution at each step,
        while the code that iterates it keeps its own.
        """
        if inspect.isasyncgenfunction(fn):
            return cast(Callable[P, R], self._async_generator(fn))
        if inspect.isgeneratorfunction(fn):
            return cast(Callable[P, R], self._generator(fn))
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                token = self._bind()
                try:
                    return await fn(*args, **kwargs)
                finally:
                    _current.reset(token)

            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            token = self._bind()
            try:
                return fn(*args, **kwargs)
            finally:
                _current.reset(token)

        return wrapper

    def _generator(self, fn: Callable[..., Generator[Any, Any, Any]]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            gen = fn(*args, **kwargs)
            step: Callable[[Any], Any] = gen.send
            value: Any = None
            while True:
                token = self._bind()
                try:
                    item = step(value)
                except StopIteration as stop:
                    return stop.value
                finally:
                    _current.reset(token)
                try:
                    value = yield item
                    step = gen.send
                except GeneratorExit:
                    token = self._bind()
                    try:
                        gen.close()
                    finally:
                        _current.reset(token)
                    raise
                except BaseException as exc:
                    step, value = gen.throw, exc

        return wrapper

    def _async_generator(self, fn: Callable[..., AsyncGenerator[Any, Any]]) -> Callable[..., Any]:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
            gen = fn(*args, **kwargs)
            step: Callable[[Any], Awaitable[Any]] = gen.asend
            value: Any = None
            while True:
                token = self._bind()
                try:
                    item = await step(value)
                except StopAsyncIteration:
                    return
                finally:
                    _current.reset(token)
                try:
                    value = yield item
                    step = gen.asend
                except GeneratorExit:
                    token = self._bind()
                    try:
                        await gen.aclose()
                    finally:
                        _current.reset(token)
                    raise
                except BaseException as exc:
                    step, value = gen.athrow, exc

        return wrapper


def carry(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` bound to a copy of the current context, for thread pools that do not copy it.

    Example: ``pool.submit(carry(work), item)`` charges ``work`` to the submitter's user.
    """
    context = contextvars.copy_context()

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        # A Context can be entered by one thread at a time; copy again so the same carried
        # function may run in several workers at once.
        return context.copy().run(fn, *args, **kwargs)

    return run
