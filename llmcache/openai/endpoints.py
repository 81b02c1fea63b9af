"""The four cached endpoints: their result types, stream shapes and storage form.

An entry is the complete result's JSON as the SDK dumps it, whether the request streamed or
not, so a hit costs one ``model_validate_json`` and a non-stream request can be answered from
a stream's entry and the other way round.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from typing import Any

from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel, ValidationError

from llmcache.openai import policy, streams

_MODEL_DUMP_JSON = BaseModel.model_dump_json

__all__ = ["CHAT", "COMPLETIONS", "EMBEDDINGS", "ENDPOINTS", "RESPONSES", "Endpoint"]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """How one endpoint's results are stored, streamed and accounted.

    Attributes:
        name: the key's endpoint name, as the SDK path reads (``"chat.completions"``).
        operation: the ledger's and span's operation name.
        result: the complete result's SDK type.
        chunk: what its stream yields (``None``: the endpoint does not stream).
        assemble: stream items → the complete result, ``None`` when the stream is incomplete.
        replay: complete result, ``include_usage`` → stream items.
    """

    name: str
    operation: str
    result: type[BaseModel]
    chunk: Any = None
    assemble: Callable[[Sequence[Any]], Any] | None = None
    replay: Callable[[Any, bool], list[Any]] | None = None

    def decode(self, body: bytes) -> Any:
        """Stored JSON → the SDK object.

        Validation first (fast, and what the SDK's own types accept); a result an
        OpenAI-compatible provider shaped a little differently (a finish reason OpenAI does not
        use) is built leniently, as the SDK itself builds responses.
        """
        try:
            return self.result.model_validate_json(body)
        except ValidationError:
            return self.result.model_construct(**json.loads(body))

    @staticmethod
    def encode(result: Any) -> bytes:
        """The SDK object → stored JSON (every field, extras included)."""
        if type(result).model_dump_json is _MODEL_DUMP_JSON:
            # model_dump_json() is these bytes decoded to str; skip that round trip (and its
            # keyword plumbing): this runs at every miss.
            body: bytes = result.__pydantic_serializer__.to_json(result)
            return body
        body = result.model_dump_json().encode()
        return body

    def storable(self, result: Any) -> bool:
        """Whether ``result`` may be stored (see :func:`policy.storable`)."""
        return policy.storable(self.name, result)

    @staticmethod
    def is_usage_chunk(chunk: Any) -> bool:
        """The trailing usage-only chunk of a chat or completions stream."""
        return not chunk.choices and getattr(chunk, "usage", None) is not None


def _replay_response(result: Any, include_usage: bool) -> list[Any]:
    events: list[Any] = streams.replay_response(result)
    return events


CHAT = Endpoint(
    name="chat.completions",
    operation="chat",
    result=ChatCompletion,
    chunk=ChatCompletionChunk,
    assemble=streams.assemble_chat,
    replay=lambda c, usage: list(streams.replay_chat(c, include_usage=usage)),
)
COMPLETIONS = Endpoint(
    name="completions",
    operation="text_completion",
    result=Completion,
    chunk=Completion,
    assemble=streams.assemble_completion,
    replay=lambda c, usage: list(streams.replay_completion(c, include_usage=usage)),
)
EMBEDDINGS = Endpoint(name="embeddings", operation="embeddings", result=CreateEmbeddingResponse)
RESPONSES = Endpoint(
    name="responses",
    operation="responses",
    result=Response,
    chunk=ResponseStreamEvent,
    assemble=streams.assemble_response,
    replay=_replay_response,
)
ENDPOINTS = {e.name: e for e in (CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES)}
