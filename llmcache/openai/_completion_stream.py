"""Legacy completions: a stream of ``Completion`` chunks → one ``Completion`` and back.

See :mod:`llmcache.openai.streams` for the rules both directions follow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from openai.types import Completion, CompletionChoice

from llmcache.openai._pieces import build, first, gather, interleave, split_text, token_groups

__all__ = ["assemble_completion", "replay_completion"]

_LOGPROB_LISTS = ("tokens", "token_logprobs", "top_logprobs", "text_offset")


class _Choice:
    """One choice index being put together from its chunks."""

    __slots__ = ("finish", "lists", "lp_seen", "text")

    def __init__(self) -> None:
        self.text: list[str] = []
        self.finish: str | None = None
        self.lp_seen = False
        self.lists: dict[str, list[Any] | None] = dict.fromkeys(_LOGPROB_LISTS)

    def add(self, choice: CompletionChoice) -> None:
        if choice.text:
            self.text.append(choice.text)
        if choice.finish_reason is not None:
            self.finish = choice.finish_reason
        if choice.logprobs is not None:
            self.lp_seen = True
            for key in _LOGPROB_LISTS:
                more = getattr(choice.logprobs, key)
                if more is not None:
                    # In place: a long stream must not cost quadratic time.
                    acc = self.lists[key]
                    if acc is None:
                        acc = self.lists[key] = []
                    acc.extend(more)

    def result(self, index: int) -> dict[str, Any]:
        return {
            "index": index,
            "text": "".join(self.text),
            "finish_reason": self.finish,
            "logprobs": dict(self.lists) if self.lp_seen else None,
        }


def assemble_completion(chunks: Sequence[Completion]) -> Completion | None:
    """Put a legacy completions stream back together.

    Args:
        chunks: the ``Completion`` chunks as the SDK yielded them, usage chunk included.

    Returns:
        The ``Completion`` a non-stream request would have returned, or ``None`` when the
        stream is not complete (no choice, or a choice without its ``finish_reason``).
    """
    choices = gather(chunks, _Choice)
    if choices is None:
        return None
    return build(
        Completion,
        {
            "id": first(c.id for c in chunks),
            "object": "text_completion",
            "created": first(c.created for c in chunks),
            "model": first(c.model for c in chunks),
            "system_fingerprint": first(c.system_fingerprint for c in chunks),
            "choices": [choices[i].result(i) for i in sorted(choices)],
            "usage": next((c.usage for c in reversed(chunks) if c.usage is not None), None),
        },
    )


def replay_completion(completion: Completion, *, include_usage: bool) -> list[Completion]:
    """The chunks a legacy completions stream would have sent for ``completion``.

    Args:
        completion: the complete result.
        include_usage: every chunk has ``usage=None`` and a last chunk with no choices
            carries the usage (as ``stream_options={"include_usage": True}``).

    Returns:
        The chunks; :func:`assemble_completion` gives ``completion`` back from them.
    """
    head: dict[str, Any] = {
        "id": completion.id,
        "object": "text_completion",
        "created": completion.created,
        "model": completion.model,
        "system_fingerprint": completion.system_fingerprint,
    }
    if include_usage:
        head["usage"] = None
    runs = [_pieces(choice) for choice in completion.choices]
    chunks = [_chunk(head, piece) for piece in interleave(runs)]
    if include_usage and completion.usage is not None:
        chunks.append(build(Completion, {**head, "choices": [], "usage": completion.usage}))
    return chunks


def _chunk(head: dict[str, Any], piece: tuple[dict[str, Any], bool]) -> Completion:
    choice, last = piece
    chunk = build(Completion, {**head, "choices": [choice]})
    if not last:
        # Streams send finish_reason null until a choice's last chunk, but the SDK type
        # declares it required (the SDK builds stream chunks without validation). Validate
        # with the final reason, then clear it: far cheaper than the SDK's lenient construct.
        setattr(chunk.choices[0], "finish_reason", None)  # noqa: B010
    return chunk


def _pieces(choice: CompletionChoice) -> list[tuple[dict[str, Any], bool]]:
    """One choice's chunk choices and whether each is its last (the one with the finish)."""
    lp = choice.logprobs
    tokens = None if lp is None else lp.tokens
    groups = None if tokens is None else token_groups(choice.text, tokens)
    if lp is not None and groups is not None and _parallel(lp, len(tokens or ())):
        # The tokens spell the text: pieces on token boundaries, each with its own logprobs.
        texts = ["".join((tokens or [])[g.start : g.stop]) for g in groups]
        logprobs: list[Any] = [
            {k: _slice(getattr(lp, k), g) for k in _LOGPROB_LISTS} for g in groups
        ]
    else:
        texts = split_text(choice.text) or [""]
        logprobs = [None] * (len(texts) - 1) + [lp]
    last = len(texts) - 1
    return [
        (
            {
                "index": choice.index,
                "text": text,
                "logprobs": logprobs[i],
                "finish_reason": choice.finish_reason,
            },
            i == last,
        )
        for i, text in enumerate(texts)
    ]


def _slice(values: list[Any] | None, span: range) -> list[Any] | None:
    return None if values is None else values[span.start : span.stop]


def _parallel(lp: Any, count: int) -> bool:
    """Whether every logprob list present has one entry per token."""
    return all(getattr(lp, k) is None or len(getattr(lp, k)) == count for k in _LOGPROB_LISTS)
