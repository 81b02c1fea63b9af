"""The routing table, ``POST /v1/embeddings`` and ``GET /v1/models``, built as pure values."""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from accounting import count_tokens
from llmcache.testing.answers import counting_model, embedding
from llmcache.testing.chat import chat_completions, completions
from llmcache.testing.responses import responses
from llmcache.testing.wire import BadRequest, Reply, error_body, int_field, require

__all__ = [
    "DEFAULT_DIMENSIONS",
    "DEFAULT_MODELS",
    "ENDPOINTS",
    "MODELS_CREATED",
    "Route",
    "embeddings",
    "route",
]

#: The endpoint names requests are counted under.
ENDPOINTS = ("chat.completions", "completions", "embeddings", "responses", "models")

#: What ``GET /v1/models`` lists by default. Any model name is accepted by the other endpoints.
DEFAULT_MODELS = (
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "o3-mini",
    "gpt-3.5-turbo-instruct",
    "text-embedding-3-small",
    "text-embedding-3-large",
)

#: The ``created`` of every listed model (a fixed time, so listings are deterministic).
MODELS_CREATED = 1_700_000_000

#: The length of embedding vectors when the request gives no ``dimensions``.
DEFAULT_DIMENSIONS = 16
_MAX_DIMENSIONS = 4096

Build = Callable[[Mapping[str, Any], int], Reply]


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """Where a request goes.

    Attributes:
        endpoint: the counter name (one of :data:`ENDPOINTS`).
        build: for a POST, builds the reply from the decoded body and the time; ``None`` for
            a GET, answered from ``model_id``.
        model_id: ``GET /v1/models/{model_id}``; ``None`` for the list.
    """

    endpoint: str
    build: Build | None = None
    model_id: str | None = None


def _chat(body: Mapping[str, Any], now: int) -> Reply:
    return chat_completions(body, now=now)


def _completions(body: Mapping[str, Any], now: int) -> Reply:
    return completions(body, now=now)


def _responses(body: Mapping[str, Any], now: int) -> Reply:
    return responses(body, now=now)


def _embeddings(body: Mapping[str, Any], now: int) -> Reply:
    return embeddings(body)


_POST: Mapping[str, Route] = {
    "/v1/chat/completions": Route(endpoint="chat.completions", build=_chat),
    "/v1/completions": Route(endpoint="completions", build=_completions),
    "/v1/embeddings": Route(endpoint="embeddings", build=_embeddings),
    "/v1/responses": Route(endpoint="responses", build=_responses),
}


def route(method: str, path: str) -> Route | None:
    """The route of ``method`` ``path`` (query string already removed), or ``None``."""
    path = path.rstrip("/")
    if method == "POST":
        return _POST.get(path)
    if method == "GET":
        if path == "/v1/models":
            return Route(endpoint="models")
        prefix, _, model_id = path.rpartition("/")
        if prefix == "/v1/models" and model_id:
            return Route(endpoint="models", model_id=model_id)
    return None


def models(known: Sequence[str], model_id: str | None) -> Reply:
    """``GET /v1/models`` (``model_id`` ``None``) or ``GET /v1/models/{model_id}``.

    Args:
        known: the models the server lists.
        model_id: one model to describe.

    Returns:
        The list, the model, or a 404 ``model_not_found`` error.
    """

    def describe(name: str) -> dict[str, Any]:
        return {
            "id": name,
            "object": "model",
            "created": MODELS_CREATED,
            "owned_by": "llmcache-testing",
        }

    if model_id is None:
        return Reply(body={"object": "list", "data": [describe(name) for name in known]})
    if model_id in known:
        return Reply(body=describe(model_id))
    message = f"The model {model_id!r} does not exist"
    return Reply(
        status=404,
        body=error_body(
            message, type="invalid_request_error", param="model", code="model_not_found"
        ),
    )


def _inputs(body: Mapping[str, Any]) -> list[str | list[int]]:
    raw = require(body, "input")
    if isinstance(raw, str):
        items: list[Any] = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw):
        items = [raw]
    elif isinstance(raw, list) and raw:
        items = raw
    else:
        items = []
    for item in items:
        text_ok = isinstance(item, str) and item != ""
        tokens_ok = isinstance(item, list) and item and all(isinstance(t, int) for t in item)
        if not (text_ok or tokens_ok):
            items = []
    if not items:
        raise BadRequest(
            "'input' must be a non-empty string, an array of them, or token arrays",
            param="input",
        )
    return items


def embeddings(body: Mapping[str, Any]) -> Reply:
    """The answer to an embeddings request: one deterministic unit vector per input.

    ``encoding_format`` ``"float"`` (the API's default) gives lists of numbers, ``"base64"``
    (the openai SDK's default) the little-endian float32 bytes in base64, as OpenAI does.

    Args:
        body: the decoded request body.

    Returns:
        A ``list`` of ``embedding`` objects with ``usage``.

    Raises:
        BadRequest: a required field is missing or a field is invalid.
    """
    model = require(body, "model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' must be a non-empty string", param="model")
    items = _inputs(body)
    dimensions = int_field(body, "dimensions", low=1, high=_MAX_DIMENSIONS) or DEFAULT_DIMENSIONS
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise BadRequest(
            f"'encoding_format' must be 'float' or 'base64', got {encoding!r}",
            param="encoding_format",
        )
    counted = counting_model(model)
    tokens = sum(count_tokens(i, counted) if isinstance(i, str) else len(i) for i in items)
    data = []
    for index, item in enumerate(items):
        vector = embedding(model, item, dimensions)
        value: list[float] | str = vector
        if encoding == "base64":
            value = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode("ascii")
        data.append({"object": "embedding", "index": index, "embedding": value})
    return Reply(
        body={
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )
