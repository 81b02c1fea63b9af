"""One core, two faces: cache logic written once as generators, driven sync or async.

A flow is a generator that yields :class:`Op` objects (a tier call, the upstream call, a sleep,
a wait on another caller's flight) and receives each one's result. :func:`run` performs the ops
with blocking calls, :func:`arun` awaits their async twins; the decisions in between (what to
read, what to promote, when to lock) exist once. An op that raises comes back as
:class:`Failed`, so a flow sees tier failures as values and decides what they mean.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Generator
from typing import Any, TypeVar

__all__ = ["Call", "Failed", "Flow", "Op", "Sleep", "TierCall", "Wait", "arun", "run"]

R = TypeVar("R")


class Failed:
    """The exception an op raised, handed back to the flow as a value."""

    __slots__ = ("exc",)

    def __init__(self, exc: Exception) -> None:
        self.exc = exc


class Op:
    """Something a flow needs done: :meth:`run` blocks, :meth:`arun` awaits."""

    __slots__ = ()

    def run(self) -> Any:
        raise NotImplementedError

    async def arun(self) -> Any:
        raise NotImplementedError


class TierCall(Op):
    """Call ``tier.<method>(*args)``, or ``await tier.a<method>(*args)``."""

    __slots__ = ("args", "method", "tier")

    def __init__(self, tier: Any, method: str, *args: Any) -> None:
        self.tier, self.method, self.args = tier, method, args

    def run(self) -> Any:
        return getattr(self.tier, self.method)(*self.args)

    async def arun(self) -> Any:
        return await getattr(self.tier, "a" + self.method)(*self.args)


class Call(Op):
    """The upstream call: a sync function, or one returning an awaitable."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn

    def run(self) -> Any:
        return self.fn()

    async def arun(self) -> Any:
        result = self.fn()
        if inspect.isawaitable(result):
            result = await result
        return result


class Sleep(Op):
    """Pause the caller (a poll interval while another process computes)."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def run(self) -> None:
        time.sleep(self.seconds)

    async def arun(self) -> None:
        await asyncio.sleep(self.seconds)


class Wait(Op):
    """Wait for another caller's flight in this process; the result says if it finished."""

    __slots__ = ("flight", "timeout")

    def __init__(self, flight: Any, timeout: float | None) -> None:
        self.flight, self.timeout = flight, timeout

    def run(self) -> bool:
        return bool(self.flight.wait(self.timeout))

    async def arun(self) -> bool:
        return bool(await self.flight.wait_async(self.timeout))


Flow = Generator[Op, Any, R]


def run(flow: Flow[R]) -> R:
    """Drive ``flow`` with blocking calls and return its result."""
    try:
        op = next(flow)
        while True:
            try:
                result = op.run()
            except Exception as exc:
                result = Failed(exc)
            op = flow.send(result)
    except StopIteration as stop:
        value: R = stop.value
        return value
    except BaseException:
        flow.close()
        raise


async def arun(flow: Flow[R]) -> R:
    """Drive ``flow`` with awaits and return its result."""
    try:
        op = next(flow)
        while True:
            try:
                result = await op.arun()
            except Exception as exc:
                result = Failed(exc)
            op = flow.send(result)
    except StopIteration as stop:
        value: R = stop.value
        return value
    except BaseException:
        # Cancellation or interrupt: let the flow's finally blocks free what it holds.
        flow.close()
        raise
