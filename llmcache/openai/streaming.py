"""The SDK's own stream types, fed by a cache: a tee for a miss, a replay for a hit.

Both are subclasses of ``openai.Stream`` / ``openai.AsyncStream``, so code that iterates,
closes, uses them as context managers or checks their type sees no difference. A tee hands
each chunk to the caller the moment the SDK parsed it (no added time to first token) and keeps
it on the side; only when the stream has been read to its end does the :class:`StreamSink`
assemble the whole answer and publish it. A stream closed early, broken, or dropped unread is
abandoned: nothing is stored and callers waiting for the same key go upstream themselves.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

import httpx2
from openai import AsyncStream, Stream

from llmcache.fetched import CacheInfo

__all__ = ["AsyncReplayStream", "AsyncTeeStream", "ReplayStream", "StreamSink", "TeeStream"]

T = TypeVar("T")
_INFO = "_llmcache_info"


class StreamSink(Generic[T]):
    """Where a tee's chunks end up: completed, or abandoned.

    Args:
        complete: called with every chunk once the stream ended normally (sync streams).
        acomplete: the async twin, awaited at the end of an async stream.
        abandon: called once, with the error (``None``: the caller closed or dropped the
            stream) and the chunks read so far, when the stream will not complete. For an async
            stream it is only called by the garbage collector, where nothing can be awaited.
        aabandon: the async twin, awaited when an async stream breaks or is closed.
        hidden: chunks to keep from the caller (the usage chunk it did not ask for).
    """

    __slots__ = ("_aabandon", "_abandon", "_acomplete", "_complete", "_ended", "hidden")

    def __init__(
        self,
        *,
        complete: Callable[[list[T]], bool] | None = None,
        acomplete: Callable[[list[T]], Awaitable[bool]] | None = None,
        abandon: Callable[[BaseException | None, list[T]], None],
        aabandon: Callable[[BaseException | None, list[T]], Awaitable[None]] | None = None,
        hidden: Callable[[T], bool] | None = None,
    ) -> None:
        self._complete, self._acomplete = complete, acomplete
        self._abandon, self._aabandon = abandon, aabandon
        self.hidden = hidden
        self._ended = False

    def complete(self, chunks: list[T]) -> bool:
        """The stream ended normally: hand over its chunks (once); whether they were stored."""
        if self._ended or self._complete is None:
            self._ended = True
            return False
        self._ended = True
        return self._complete(chunks)

    async def acomplete(self, chunks: list[T]) -> bool:
        """Async :meth:`complete`."""
        if self._ended or self._acomplete is None:
            self._ended = True
            return False
        self._ended = True
        return await self._acomplete(chunks)

    def abandon(self, error: BaseException | None, chunks: list[T]) -> None:
        """The stream will not complete (once; a no-op after :meth:`complete`)."""
        if not self._ended:
            self._ended = True
            self._abandon(error, chunks)

    async def aabandon(self, error: BaseException | None, chunks: list[T]) -> None:
        """Async :meth:`abandon`."""
        if not self._ended:
            self._ended = True
            if self._aabandon is not None:
                await self._aabandon(error, chunks)
            else:
                self._abandon(error, chunks)


def _abandon_unread(sink: StreamSink[Any], chunks: list[Any]) -> None:
    # A stream dropped without being read to the end or closed.
    sink.abandon(None, chunks)


def _stored(info: list[CacheInfo]) -> None:
    info[0] = dataclasses.replace(info[0], stored=True)


def _tee(
    source: Iterator[T], sink: StreamSink[T], chunks: list[T], info: list[CacheInfo]
) -> Iterator[T]:
    # A function, not a method: a generator holding its stream would make a reference cycle,
    # and a stream dropped unread would keep its key's waiters waiting until a GC pass.
    hidden = sink.hidden
    try:
        for chunk in source:
            chunks.append(chunk)
            if hidden is None or not hidden(chunk):
                yield chunk
    except BaseException as exc:  # GeneratorExit too: dropped or closed before its end
        sink.abandon(exc if isinstance(exc, Exception) else None, chunks)
        raise
    if sink.complete(chunks):
        _stored(info)


async def _atee(
    source: AsyncIterator[T], sink: StreamSink[T], chunks: list[T], info: list[CacheInfo]
) -> AsyncIterator[T]:
    hidden = sink.hidden
    try:
        async for chunk in source:
            chunks.append(chunk)
            if hidden is None or not hidden(chunk):
                yield chunk
    except BaseException as exc:
        await sink.aabandon(exc if isinstance(exc, Exception) else None, chunks)
        raise
    if await sink.acomplete(chunks):
        _stored(info)


class TeeStream(Stream[T]):
    """An upstream ``Stream`` whose chunks are also collected for the cache."""

    def __init__(self, upstream: Stream[T], sink: StreamSink[T], info: CacheInfo) -> None:
        # Adopt the upstream stream's state: same response, client and options, so
        # ``close()``, ``.response`` and the rest behave as the SDK's own stream.
        self.__dict__.update(upstream.__dict__)
        self._sink = sink
        self._chunks: list[T] = []
        self._info = [info]  # shared with the tee, which marks it stored at the end
        self._iterator = _tee(upstream._iterator, sink, self._chunks, self._info)
        weakref.finalize(self, _abandon_unread, sink, self._chunks)

    @property
    def _llmcache_info(self) -> CacheInfo:
        return self._info[0]

    def close(self) -> None:
        """Close the response; a stream closed before its end is not stored."""
        self._sink.abandon(None, self._chunks)
        super().close()


class AsyncTeeStream(AsyncStream[T]):
    """An upstream ``AsyncStream`` whose chunks are also collected for the cache."""

    def __init__(self, upstream: AsyncStream[T], sink: StreamSink[T], info: CacheInfo) -> None:
        self.__dict__.update(upstream.__dict__)
        self._sink = sink
        self._chunks: list[T] = []
        self._info = [info]
        self._iterator = _atee(upstream._iterator, sink, self._chunks, self._info)
        weakref.finalize(self, _abandon_unread, sink, self._chunks)

    @property
    def _llmcache_info(self) -> CacheInfo:
        return self._info[0]

    async def close(self) -> None:
        """Close the response; a stream closed before its end is not stored."""
        await self._sink.aabandon(None, self._chunks)
        await super().close()


def _replay_response(url: str) -> httpx2.Response:
    # A stand-in for the HTTP response the SDK's streams carry, so ``.response`` exists;
    # its headers say the body came from the cache.
    return httpx2.Response(
        200,
        headers={"content-type": "text/event-stream", "x-llmcache": "hit"},
        request=httpx2.Request("POST", url),
    )


def _set_replay_state(
    stream: Any, cast_to: type[Any], client: Any, url: str, info: CacheInfo
) -> None:
    # The attributes the SDK's streams have, so code reading them finds what it expects.
    stream.response = _replay_response(url)
    stream._cast_to = cast_to
    stream._client = client
    stream._options = None
    stream._closed = False
    setattr(stream, _INFO, info)


class ReplayStream(Stream[T]):
    """A stream of stored chunks, as the SDK's ``Stream`` presents a live one."""

    def __init__(
        self, items: Sequence[T], *, cast_to: type[T], client: Any, url: str, info: CacheInfo
    ) -> None:
        _set_replay_state(self, cast_to, client, url, info)
        self._iterator = self._replay(items)

    def _replay(self, items: Sequence[T]) -> Iterator[T]:
        for item in items:
            if self._closed:
                return
            yield item

    def close(self) -> None:
        """Stop the replay."""
        self._closed = True
        self.response.close()


class AsyncReplayStream(AsyncStream[T]):
    """A stream of stored chunks, as the SDK's ``AsyncStream`` presents a live one."""

    def __init__(
        self, items: Sequence[T], *, cast_to: type[T], client: Any, url: str, info: CacheInfo
    ) -> None:
        _set_replay_state(self, cast_to, client, url, info)
        self._iterator = self._replay(items)

    async def _replay(self, items: Sequence[T]) -> AsyncIterator[T]:
        for item in items:
            if self._closed:
                return
            yield item

    async def close(self) -> None:
        """Stop the replay."""
        self._closed = True
        await self.response.aclose()
