"""Helpers shared by the stream assemblers and replayers: text pieces, ordering, building."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

__all__ = [
    "PIECE",
    "Accumulator",
    "build",
    "first",
    "gather",
    "interleave",
    "split_text",
    "token_groups",
]

PIECE = 64
"""Most characters (code points) one replayed text delta carries."""

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


def split_text(text: str, size: int = PIECE) -> list[str]:
    """Cut ``text`` into consecutive pieces of at most ``size`` code points.

    Args:
        text: the text; ``""`` gives no pieces.
        size: the longest piece (at least 2).

    Returns:
        The pieces, in order; joined they give ``text`` back. A surrogate pair (a str built
        with lone surrogates) is never cut in two.
    """
    pieces: list[str] = []
    start, length = 0, len(text)
    while start < length:
        end = min(start + size, length)
        if (
            end < length
            and "\ud800" <= text[end - 1] <= "\udbff"
            and "\udc00" <= text[end] <= "\udfff"
        ):
            end -= 1
        pieces.append(text[start:end])
        start = end
    return pieces


def token_groups(text: str, tokens: Sequence[str], size: int = PIECE) -> list[range] | None:
    """Consecutive runs of tokens whose texts make pieces of at most ``size`` code points.

    A token longer than ``size`` makes a piece of its own.

    Args:
        text: the whole text.
        tokens: the token strings that should spell it.
        size: the longest piece.

    Returns:
        Index ranges into ``tokens``, or ``None`` when ``text`` is empty or the tokens do not
        spell it exactly (byte-level tokens that cut a character in two, for example).
    """
    if not text or "".join(tokens) != text:
        return None
    groups: list[range] = []
    start = length = 0
    for i, token in enumerate(tokens):
        if i > start and length + len(token) > size:
            groups.append(range(start, i))
            start, length = i, 0
        length += len(token)
    groups.append(range(start, len(tokens)))
    return groups


def interleave(runs: Sequence[Sequence[T]]) -> list[T]:
    """Round-robin merge: the first item of every run, then the second, and so on."""
    merged: list[T] = []
    for i in range(max((len(run) for run in runs), default=0)):
        merged.extend(run[i] for run in runs if i < len(run))
    return merged


class Accumulator(Protocol):
    """What collects one choice's deltas: ``finish`` is its finish reason once seen."""

    finish: str | None

    def add(self, choice: Any) -> None:
        """Take one chunk's delta of this choice."""


A = TypeVar("A", bound=Accumulator)


def gather(chunks: Iterable[Any], make: Callable[[], A]) -> dict[int, A] | None:
    """Each choice's accumulator over a stream's chunks, by index; ``None`` when the stream is
    incomplete (no choice, or a choice without its finish reason)."""
    choices: dict[int, A] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            acc = choices.get(choice.index)
            if acc is None:
                acc = choices[choice.index] = make()
            acc.add(choice)
    if not choices or any(c.finish is None for c in choices.values()):
        return None
    return choices


def first(values: Iterable[T | None]) -> T | None:
    """The first truthy value, else the first that is not ``None``, else ``None``.

    Truthy first because some providers open a stream with a placeholder chunk (Azure's
    prompt-filter chunk has ``id=""``, ``model=""`` and ``created=0``).
    """
    fallback: T | None = None
    for value in values:
        if value:
            return value
        if fallback is None:
            fallback = value
    return fallback


def build(cls: type[M], data: dict[str, Any]) -> M:
    """Make an SDK object from plain data: validation, else the SDK's lenient construction.

    Validation is the fast path (pydantic-core: a chunk in a few µs, against ~100 µs for the
    SDK's recursive ``construct``) and gives real nested model instances. It fails for values
    outside the SDK's declared literals, which OpenAI-compatible providers do send (a finish
    reason OpenAI does not use); the SDK builds its own stream objects without validation, so
    such data is built as the SDK would have built it.

    Args:
        cls: the SDK model class.
        data: field values; nested values may be dicts or instances of the field's class
            (instances are kept as they are, not copied).

    Returns:
        The object.
    """
    try:
        return cls.model_validate(data)
    except ValidationError:
        return cls.model_construct(**data)
