"""Chat completions: ``ChatCompletionChunk`` stream → ``ChatCompletion`` and back.

See :mod:`llmcache.openai.streams` for the rules both directions follow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.chat.chat_completion import Choice
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from openai.types.chat.chat_completion_chunk import ChoiceDelta
from pydantic import BaseModel

from llmcache.openai._pieces import build, first, gather, interleave, split_text, token_groups

_EMPTY_DELTA = ChoiceDelta()

__all__ = ["assemble_chat", "replay_chat"]

_Emit = Callable[..., None]

# Base64 audio is long and opaque: bigger pieces keep a replayed voice answer to tens of chunks.
_AUDIO_PIECE = 4096


class _Tool:
    """One tool call (or the legacy ``function_call``) being put together."""

    __slots__ = ("args", "id", "name", "type")

    def __init__(self) -> None:
        self.id: str | None = None
        self.type: str | None = None
        self.name: str | None = None
        self.args: list[str] = []

    def add(self, id_: str | None, type_: str | None, name: str | None, args: str | None) -> None:
        self.id = self.id or id_
        self.type = self.type or type_
        self.name = self.name or name
        if args:
            self.args.append(args)


class _Choice:
    """One choice index being put together from its deltas."""

    __slots__ = (
        "audio",
        "content",
        "extras",
        "finish",
        "function",
        "lp_content",
        "lp_refusal",
        "lp_seen",
        "refusal",
        "role",
        "texts",
        "tools",
    )

    def __init__(self) -> None:
        self.role: str | None = None
        self.content: list[str] | None = None
        self.refusal: list[str] | None = None
        self.tools: dict[int, _Tool] = {}
        self.function: _Tool | None = None
        self.audio: dict[str, Any] | None = None
        self.texts: dict[str, list[str]] = {}  # string extras (reasoning_content …)
        self.extras: dict[str, Any] = {}  # other extras (annotations …)
        self.finish: str | None = None
        self.lp_seen = False
        self.lp_content: list[Any] | None = None
        self.lp_refusal: list[Any] | None = None

    def add(self, choice: ChunkChoice) -> None:
        # Some providers send the finish chunk with "delta": null (the SDK builds it leniently).
        delta = choice.delta if choice.delta is not None else _EMPTY_DELTA
        self.role = self.role or delta.role
        if delta.content is not None:
            self.content = _append(self.content, [delta.content])
        if delta.refusal is not None:
            self.refusal = _append(self.refusal, [delta.refusal])
        for call in delta.tool_calls or ():
            custom = (call.model_extra or {}).get("custom")
            type_: str | None
            if isinstance(custom, dict):  # streamed custom tool call (an extra the SDK keeps)
                parts = (custom.get("name"), custom.get("input"))
                type_ = call.type or "custom"
            else:
                fn = call.function
                parts = (fn.name, fn.arguments) if fn is not None else (None, None)
                type_ = call.type
            self.tools.setdefault(call.index, _Tool()).add(call.id, type_, *parts)
        if delta.function_call is not None:
            self.function = self.function or _Tool()
            self.function.add(None, None, delta.function_call.name, delta.function_call.arguments)
        if delta.audio is not None:
            self._add_audio(delta.audio)
        for key, value in (delta.model_extra or {}).items():
            if isinstance(value, str):
                self.texts.setdefault(key, []).append(value)
            elif isinstance(value, list):
                self.extras[key] = _append(self.extras.get(key), value)
            elif value is not None:
                self.extras[key] = value
        if choice.finish_reason is not None:
            self.finish = choice.finish_reason
        if choice.logprobs is not None:
            self.lp_seen = True
            if choice.logprobs.content is not None:
                self.lp_content = _append(self.lp_content, choice.logprobs.content)
            if choice.logprobs.refusal is not None:
                self.lp_refusal = _append(self.lp_refusal, choice.logprobs.refusal)

    def _add_audio(self, audio: Any) -> None:
        acc = self.audio or {"id": None, "data": [], "expires_at": None, "transcript": []}
        acc["id"] = acc["id"] or audio.id
        acc["expires_at"] = audio.expires_at if audio.expires_at is not None else acc["expires_at"]
        for key in ("data", "transcript"):
            if getattr(audio, key) is not None:
                acc[key].append(getattr(audio, key))
        self.audio = acc

    def result(self, index: int) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": self.role or "assistant",
            "content": None if self.content is None else "".join(self.content),
            "refusal": None if self.refusal is None else "".join(self.refusal),
        }
        message.update({key: "".join(parts) for key, parts in self.texts.items()})
        message.update(self.extras)
        if self.tools:
            message["tool_calls"] = [_tool_call(t) for _, t in sorted(self.tools.items())]
        if self.function is not None:
            fn = self.function
            message["function_call"] = {"name": fn.name or "", "arguments": "".join(fn.args)}
        if self.audio is not None:
            a = self.audio
            message["audio"] = {
                "id": a["id"] or "",
                "data": "".join(a["data"]),
                "expires_at": a["expires_at"] or 0,
                "transcript": "".join(a["transcript"]),
            }
        logprobs = None
        if self.lp_seen:
            logprobs = {"content": self.lp_content, "refusal": self.lp_refusal}
        return {
            "index": index,
            "message": message,
            "finish_reason": self.finish,
            "logprobs": logprobs,
        }


def _append(parts: list[Any] | None, more: Sequence[Any]) -> list[Any]:
    # In place: a long stream must not cost quadratic time.
    if parts is None:
        parts = []
    parts.extend(more)
    return parts


def _tool_call(tool: _Tool) -> dict[str, Any]:
    if tool.type == "custom":
        custom = {"name": tool.name or "", "input": "".join(tool.args)}
        return {"id": tool.id or "", "type": "custom", "custom": custom}
    function = {"name": tool.name or "", "arguments": "".join(tool.args)}
    return {"id": tool.id or "", "type": tool.type or "function", "function": function}


def assemble_chat(chunks: Sequence[ChatCompletionChunk]) -> ChatCompletion | None:
    """Put a chat completion stream back together.

    Args:
        chunks: the chunks as the SDK yielded them, usage chunk included if there was one.

    Returns:
        The ``ChatCompletion`` a non-stream request would have returned, or ``None`` when the
        stream is not complete (no choice, or a choice without its ``finish_reason``).
    """
    choices = gather(chunks, _Choice)
    if choices is None:
        return None
    moderation = first(c.moderation for c in chunks)
    data: dict[str, Any] = {
        "id": first(c.id for c in chunks),
        "object": "chat.completion",
        "created": first(c.created for c in chunks),
        "model": first(c.model for c in chunks),
        "system_fingerprint": first(c.system_fingerprint for c in chunks),
        "service_tier": first(c.service_tier for c in chunks),
        "choices": [choices[i].result(i) for i in sorted(choices)],
        "usage": next((c.usage for c in reversed(chunks) if c.usage is not None), None),
    }
    if moderation is not None:
        # The chunk's and the completion's Moderation are distinct (identical) classes.
        data["moderation"] = moderation.model_dump()
    return build(ChatCompletion, data)


def replay_chat(completion: ChatCompletion, *, include_usage: bool) -> list[ChatCompletionChunk]:
    """The chunks a chat completion stream would have sent for ``completion``.

    Args:
        completion: the complete result.
        include_usage: as ``stream_options={"include_usage": True}``: every chunk has
            ``usage=None`` and a last chunk with no choices carries the usage.

    Returns:
        The chunks; :func:`assemble_chat` gives ``completion`` back from them.
    """
    head: dict[str, Any] = {
        "id": completion.id,
        "object": "chat.completion.chunk",
        "created": completion.created,
        "model": completion.model,
        "service_tier": completion.service_tier,
        "system_fingerprint": completion.system_fingerprint,
    }
    if include_usage:
        head["usage"] = None
    bodies = [
        {**head, "choices": [c]} for c in interleave([_deltas(c) for c in completion.choices])
    ]
    if completion.moderation is not None and bodies:
        bodies[-1]["moderation"] = completion.moderation.model_dump()
    if include_usage and completion.usage is not None:
        bodies.append({**head, "choices": [], "usage": completion.usage})
    return [build(ChatCompletionChunk, body) for body in bodies]


def _deltas(choice: Choice) -> list[dict[str, Any]]:
    """One choice's chunk choices, in the order OpenAI sends them."""
    index, message, logprobs = choice.index, choice.message, choice.logprobs
    out: list[dict[str, Any]] = []

    def emit(delta: dict[str, Any], lp: Any = None, finish: str | None = None) -> None:
        out.append({"index": index, "delta": delta, "logprobs": lp, "finish_reason": finish})

    # OpenAI's first delta: the role, with content "" (null when the message has none).
    first_delta: dict[str, Any] = {
        "role": message.role,
        "content": None if message.content is None else "",
        "refusal": None,
    }
    if message.annotations == []:
        first_delta["annotations"] = []
    emit(first_delta)
    if message.audio is not None:
        audio = message.audio
        emit({"audio": {"id": audio.id, "transcript": ""}})
        for piece in split_text(audio.transcript):
            emit({"audio": {"transcript": piece}})
        for piece in split_text(audio.data, _AUDIO_PIECE):
            emit({"audio": {"data": piece}})
        emit({"audio": {"expires_at": audio.expires_at}})
    extras = message.model_extra or {}
    for key, value in extras.items():  # reasoning text of compatible providers comes first
        if isinstance(value, str):
            for piece in split_text(value) or [""]:
                emit({key: piece})
    lp_content = None if logprobs is None else logprobs.content
    lp_refusal = None if logprobs is None else logprobs.refusal
    placed = False
    if _text_deltas(emit, "content", message.content, lp_content):
        lp_content, placed = None, True  # carried by the content deltas
    if _text_deltas(emit, "refusal", message.refusal, lp_refusal):
        lp_refusal, placed = None, True
    if message.annotations:
        emit({"annotations": [_plain(a) for a in message.annotations]})
    for key, value in extras.items():
        if not isinstance(value, str) and value is not None:
            emit({key: _plain(value)})
    for i, call in enumerate(message.tool_calls or ()):
        # First delta: index, id, type, name and empty arguments; then the argument pieces.
        if call.type == "custom":
            key, name, args, arg_key = "custom", call.custom.name, call.custom.input, "input"
        else:
            key, name, args, arg_key = (
                "function",
                call.function.name,
                call.function.arguments,
                "arguments",
            )
        opening = {"index": i, "id": call.id, "type": call.type, key: {"name": name, arg_key: ""}}
        emit({"tool_calls": [opening]})
        for piece in split_text(args):
            emit({"tool_calls": [{"index": i, key: {arg_key: piece}}]})
    if message.function_call is not None:
        fc = message.function_call
        emit({"function_call": {"name": fc.name, "arguments": ""}})
        for piece in split_text(fc.arguments):
            emit({"function_call": {"arguments": piece}})
    # What the text deltas did not carry rides on the finish chunk.
    rest = None
    if logprobs is not None and (lp_content is not None or lp_refusal is not None or not placed):
        rest = {"content": lp_content, "refusal": lp_refusal}
    emit({}, rest, choice.finish_reason)
    return out


def _text_deltas(emit: _Emit, key: str, text: str | None, tokens: list[Any] | None) -> bool:
    """Emit ``text`` as deltas under ``key``; ``True`` when they carry ``tokens`` as logprobs.

    When the logprob tokens spell the text, the pieces follow token boundaries and each delta
    carries its own tokens, as OpenAI's do; otherwise the pieces are plain 64-character cuts.
    """
    if text is None:
        return False
    groups = None if tokens is None else token_groups(text, [t.token for t in tokens])
    if tokens is None or groups is None:
        if text == "" and key != "content":  # content "" rides on the role delta
            emit({key: ""})
        for piece in split_text(text):
            emit({key: piece})
        return False
    other = "refusal" if key == "content" else "content"
    for group in groups:
        part = tokens[group.start : group.stop]
        emit({key: "".join(t.token for t in part)}, {key: part, other: None})
    return True


def _plain(value: Any) -> Any:
    """Delta extras are plain JSON values in SDK-parsed chunks; keep replayed ones alike."""
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
