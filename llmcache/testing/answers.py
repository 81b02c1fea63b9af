"""Deterministic answers: text, tool-call arguments and embedding vectors from a request.

Everything here is a pure function of its arguments, so the same request always gets the same
answer (byte for byte) and a different request (another message, ``seed`` or ``temperature``)
gets another one. The request is reduced to a *seed*: the sha256 of its canonical JSON without
the fields that only change how the answer is delivered or cut (:data:`TRANSPORT_FIELDS`), so a
streamed answer and a non-streamed one, or a full one and a ``max_tokens``-truncated one, are
the same text.

Token counts and the per-token split of streamed text use the model's own tiktoken encoding
through :mod:`accounting` (offline); a model tiktoken does not know is counted as ``gpt-4o``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import tiktoken

from accounting import UnknownModelError, count_tokens
from accounting._bpe import get_encoding

__all__ = [
    "CONTENT_FILTER_MARKER",
    "FALLBACK_MODEL",
    "TRANSPORT_FIELDS",
    "Answer",
    "answer_text",
    "counting_model",
    "cut",
    "embedding",
    "hex_id",
    "request_seed",
    "split_tokens",
    "tool_arguments",
]

#: A last user message containing this text is answered cut short, ``finish_reason``
#: ``"content_filter"`` (Responses: ``incomplete_details.reason == "content_filter"``).
CONTENT_FILTER_MARKER = "[content_filter]"

#: The model whose tokenizer counts requests for models tiktoken does not know.
FALLBACK_MODEL = "gpt-4o"

#: Request fields that do not change the answer's text: how it is delivered, or where it is cut.
TRANSPORT_FIELDS = frozenset(
    {"stream", "stream_options", "max_tokens", "max_completion_tokens", "max_output_tokens"}
)

# Plain ASCII words so every one is a token or two in any encoding.
_WORDS = (
    "amber", "anchor", "autumn", "beacon", "birch", "bright", "canyon", "cedar", "cobalt",
    "comet", "coral", "crisp", "delta", "ember", "falcon", "fern", "fjord", "gentle", "glacier",
    "granite", "harbor", "hazel", "indigo", "island", "jasper", "juniper", "kestrel", "lantern",
    "lattice", "linen", "maple", "meadow", "marble", "nimble", "north", "oak", "ocean", "orchid",
    "pebble", "pine", "prairie", "quartz", "quiet", "raven", "river", "saffron", "sierra",
    "silver", "spruce", "summit", "tidal", "timber", "topaz", "tundra", "umber", "valley",
    "velvet", "willow", "winter", "yarrow", "zenith", "zephyr", "steady", "orbit",
)  # fmt: skip
_QUOTE_WORDS = 12
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """A text answer as sent: its per-token pieces, why it ended, and its token count.

    Attributes:
        pieces: the text split where the stream sends one delta each (about one token each).
        finish_reason: ``"stop"``, ``"length"`` or ``"content_filter"``.
        tokens: the text's token count for the request's model.
    """

    pieces: tuple[str, ...]
    finish_reason: str
    tokens: int

    @property
    def text(self) -> str:
        """The whole text."""
        return "".join(self.pieces)


def request_seed(endpoint: str, body: Mapping[str, Any]) -> bytes:
    """The sha256 of the request's canonical JSON, without :data:`TRANSPORT_FIELDS`.

    Args:
        endpoint: the endpoint name, so that two endpoints never answer alike.
        body: the decoded request body.

    Returns:
        32 bytes.
    """
    kept = {key: value for key, value in body.items() if key not in TRANSPORT_FIELDS}
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(f"{endpoint}\0{text}".encode()).digest()


def _derive(seed: bytes, *parts: object) -> bytes:
    """A sub-seed of ``seed`` for one choice, property, id …"""
    return hashlib.sha256(seed + "\0".join(map(str, parts)).encode()).digest()


def hex_id(seed: bytes, what: str, length: int = 24) -> str:
    """A deterministic hex id of ``length`` characters for ``what`` in this request."""
    return _derive(seed, "id", what).hex()[:length]


def answer_text(seed: bytes, quote: str, index: int = 0) -> str:
    """A short sentence quoting ``quote`` and followed by words picked from ``seed``.

    Args:
        seed: the request seed.
        quote: what the answer refers to (the last user message); may be empty.
        index: the choice index, so that ``n`` choices differ.

    Returns:
        The sentence.
    """
    digest = _derive(seed, "answer", index)
    count = 6 + digest[0] % 6
    words = " ".join(_WORDS[b % len(_WORDS)] for b in digest[1 : 1 + count])
    words = words[0].upper() + words[1:] + "."
    short = " ".join(_SPACE.split(quote.strip())[:_QUOTE_WORDS])
    return f'You said "{short}". {words}' if short else words


@functools.lru_cache(maxsize=256)
def counting_model(model: str) -> str:
    """``model`` when accounting can count its tokens, else :data:`FALLBACK_MODEL`."""
    try:
        count_tokens("", model)
    except UnknownModelError:
        return FALLBACK_MODEL
    return model


def _encoding(model: str) -> tiktoken.Encoding:
    # accounting's process-wide, verified, offline copy of the encoding count_tokens uses.
    return get_encoding(tiktoken.encoding_name_for_model(counting_model(model)))


def _pieces(text: str, model: str) -> list[tuple[str, int]]:
    """``text`` cut at token boundaries, each piece with its number of tokens."""
    encoding = _encoding(model)
    pieces: list[tuple[str, int]] = []
    pending = b""
    held = 0
    for token in encoding.encode_ordinary(text):
        pending += encoding.decode_single_token_bytes(token)
        held += 1
        try:
            pieces.append((pending.decode("utf-8"), held))
        except UnicodeDecodeError:
            continue  # a character split across tokens: wait for its other bytes
        pending, held = b"", 0
    return pieces


def split_tokens(text: str, model: str) -> tuple[str, ...]:
    """``text`` cut at ``model``'s token boundaries (tokens holding part of a character join).

    Args:
        text: any text.
        model: any model name (unknown ones use :data:`FALLBACK_MODEL`'s tokenizer).

    Returns:
        Pieces that join to ``text``; one per token for ASCII text.
    """
    return tuple(piece for piece, _ in _pieces(text, model))


def cut(text: str, model: str, *, max_tokens: int | None, content_filter: bool) -> Answer:
    """The answer as sent: split per token, cut by the content filter and then ``max_tokens``.

    Args:
        text: the full answer.
        model: the requested model.
        max_tokens: at most this many tokens are kept (``finish_reason`` ``"length"``).
        content_filter: keep only the first half (``finish_reason`` ``"content_filter"``).

    Returns:
        The answer; its ``tokens`` is the count of the text sent, by ``model``'s tokenizer.
    """
    pieces = _pieces(text, model)
    reason = "stop"
    if content_filter:
        pieces, reason = pieces[: len(pieces) // 2], "content_filter"
    if max_tokens is not None and sum(n for _, n in pieces) > max_tokens:
        kept: list[tuple[str, int]] = []
        used = 0
        for piece, n in pieces:
            if used + n > max_tokens:
                break
            kept.append((piece, n))
            used += n
        pieces, reason = kept, "length"
    sent = tuple(piece for piece, _ in pieces)
    return Answer(
        pieces=sent,
        finish_reason=reason,
        tokens=count_tokens("".join(sent), counting_model(model)),
    )


def tool_arguments(parameters: object, seed: bytes, quote: str) -> dict[str, Any]:
    """Arguments for a function call: each property of its JSON schema given a value.

    Enums take one of their values, strings a word of ``quote`` (or a picked word), integers
    1 to 100, numbers two decimals, booleans either, arrays one item, objects recurse; every
    choice comes from ``seed`` and the property's name.

    Args:
        parameters: the function's ``parameters`` JSON schema (anything else gives ``{}``).
        seed: the request seed.
        quote: the text string values are taken from.

    Returns:
        A JSON object.
    """
    properties = parameters.get("properties") if isinstance(parameters, Mapping) else None
    if not isinstance(properties, Mapping):
        return {}
    words = [w for w in (re.sub(r"\W", "", w) for w in quote.split()) if w]
    # Prefer the words that carry meaning ("Paris" rather than "in") when there are some.
    words = [w for w in words if len(w) > 3] or words
    return {
        str(name): _value(schema, _derive(seed, "arg", name), words)
        for name, schema in properties.items()
    }


def _value(schema: object, digest: bytes, words: Sequence[str]) -> Any:
    if not isinstance(schema, Mapping):
        return _WORDS[digest[0] % len(_WORDS)]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[digest[0] % len(enum)]
    kind = schema.get("type", "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    number = int.from_bytes(digest[:4], "big")
    if kind == "integer":
        return 1 + number % 100
    if kind == "number":
        return (number % 10_000) / 100
    if kind == "boolean":
        return bool(digest[0] & 1)
    if kind == "null":
        return None
    if kind == "array":
        return [_value(schema.get("items"), hashlib.sha256(digest).digest(), words)]
    if kind == "object":
        props = schema.get("properties")
        if not isinstance(props, Mapping):
            return {}
        return {
            str(k): _value(v, hashlib.sha256(digest + str(k).encode()).digest(), words)
            for k, v in props.items()
        }
    if words:
        return words[digest[1] % len(words)]
    return _WORDS[digest[1] % len(_WORDS)]


def embedding(model: str, item: str | Sequence[int], dimensions: int) -> list[float]:
    """A unit vector for one input, from the sha256 of the model and the input.

    A shorter ``dimensions`` gives the normalised prefix of a longer one, as OpenAI's
    ``text-embedding-3`` models do. Components are rounded to float32 so that the ``float``
    and ``base64`` (little-endian float32) encodings carry the same numbers.

    Args:
        model: the requested model.
        item: a string, or a token array.
        dimensions: the vector's length (at least 1).

    Returns:
        The vector.
    """
    material = item if isinstance(item, str) else json.dumps(list(item))
    base = f"{model}\0{material}".encode()
    raw: list[float] = []
    block = 0
    while len(raw) < dimensions:
        digest = hashlib.sha256(base + block.to_bytes(4, "big")).digest()
        raw.extend(int.from_bytes(digest[i : i + 4], "big") / 2**31 - 1.0 for i in range(0, 32, 4))
        block += 1
    raw = raw[:dimensions]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return list(
        struct.unpack(f"<{dimensions}f", struct.pack(f"<{dimensions}f", *(x / norm for x in raw)))
    )
