"""What an endpoint hands the HTTP layer, OpenAI-shaped errors, and request field checks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from accounting import (
    UnknownModelError,
    count_message_tokens,
    count_tokens,
    estimate_prompt_tokens,
)
from llmcache.testing.answers import (
    CONTENT_FILTER_MARKER,
    counting_model,
    hex_id,
    split_tokens,
    tool_arguments,
)
from llmcache.testing.sse import Event, dumps

__all__ = [
    "BadRequest",
    "Reply",
    "ToolCall",
    "choose_function",
    "error_body",
    "int_field",
    "message_text",
    "prompt_tokens",
    "require",
    "wants_filter",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """An endpoint's answer: a JSON document, or a stream of events.

    Attributes:
        status: the HTTP status.
        body: the JSON document (when ``events`` is ``None``).
        events: the events of a streamed answer, in order.
        headers: extra response headers.
    """

    status: int = 200
    body: Any = None
    events: Sequence[Event] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCall:
    """A function call the model "decided" to make.

    Attributes:
        name: the function's name.
        arguments: its arguments, compact JSON text.
        call_id: the call's id (``call_<hex>``).
        pieces: ``arguments`` split per token, as streamed.
        tokens: tokens of the name plus tokens of the arguments.
    """

    name: str
    arguments: str
    call_id: str
    pieces: tuple[str, ...]
    tokens: int

    @classmethod
    def make(
        cls, name: str, parameters: object, *, seed: bytes, quote: str, index: int, model: str
    ) -> ToolCall:
        """Call ``name`` with arguments filled from its ``parameters`` schema (deterministic)."""
        arguments = dumps(tool_arguments(parameters, seed + index.to_bytes(4, "big"), quote))
        counted = counting_model(model)
        return cls(
            name=name,
            arguments=arguments,
            call_id=f"call_{hex_id(seed, f'call{index}')}",
            pieces=split_tokens(arguments, model),
            tokens=count_tokens(name, counted) + count_tokens(arguments, counted),
        )


def choose_function(
    functions: Sequence[tuple[str, object]], forced: str | None
) -> tuple[str, object]:
    """The function to call: the one ``forced`` names, else the first.

    Raises:
        BadRequest: ``forced`` names no function of the request (param ``tool_choice``).
    """
    if forced is None:
        return functions[0]
    for function in functions:
        if function[0] == forced:
            return function
    raise BadRequest(
        f"tool_choice names function {forced!r}, which is not in 'tools'", param="tool_choice"
    )


class BadRequest(Exception):
    """A request the API refuses with 400 (or ``status``); ``param`` names the field."""

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None, status: int = 400
    ) -> None:
        super().__init__(message)
        self.param = param
        self.code = code
        self.status = status


def error_body(
    message: str, *, type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error document: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def require(body: Mapping[str, Any], name: str) -> Any:
    """``body[name]``, or :class:`BadRequest` naming the missing field."""
    if body.get(name) is None:
        raise BadRequest(
            f"you must provide a {name!r} parameter",
            param=name,
            code="missing_required_parameter",
        )
    return body[name]


def int_field(body: Mapping[str, Any], name: str, *, low: int, high: int) -> int | None:
    """``body[name]`` as an int in ``[low, high]``, ``None`` when absent, else BadRequest."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(
            f"invalid {name!r}: expected an integer from {low} to {high}, got {value!r}",
            param=name,
            code="invalid_value",
        )
    return value


def message_text(content: object) -> str:
    """The text of a message's ``content``: a string, or the text of its parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [part.get("text") for part in content if isinstance(part, Mapping)]
        return " ".join(text for text in texts if isinstance(text, str))
    return ""


def wants_filter(text: str) -> bool:
    """Whether ``text`` carries the :data:`~answers.CONTENT_FILTER_MARKER`."""
    return CONTENT_FILTER_MARKER in text


def prompt_tokens(messages: Sequence[Any], model: str) -> int:
    """Prompt tokens of chat ``messages`` as :func:`accounting.count_message_tokens` counts them.

    Models tiktoken does not know are counted as ``gpt-4o``; messages with parts that cannot be
    counted exactly (images …) get accounting's labelled estimate.
    """
    counted = counting_model(model)
    try:
        return count_message_tokens(messages, counted)
    except (ValueError, UnknownModelError):
        return estimate_prompt_tokens(messages, counted).tokens
    except TypeError as exc:
        raise BadRequest(f"invalid 'messages': {exc}", param="messages") from None
