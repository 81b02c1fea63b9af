"""A local OpenAI-compatible HTTP server, for tests, demos, benchmarks and offline work.

::

    from openai import OpenAI
    from llmcache.testing import Fault, LocalServer

    with LocalServer() as server:
        client = OpenAI(base_url=server.base_url, api_key="test", max_retries=0)
        reply = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Hello"}]
        )
        server.fault(Fault.RATE_LIMIT)          # the next request gets a 429
        assert server.count("chat.completions") == 1

It is a real HTTP/1.1 server (standard library only) on a free loopback port, speaking chat
completions, legacy completions, embeddings, the Responses API and the model list, streamed or
not. Answers are deterministic functions of the request; token counts come from
:mod:`accounting.tokens`. Run it on its own with ``python -m llmcache.testing``.
"""

from llmcache.testing.answers import CONTENT_FILTER_MARKER
from llmcache.testing.faults import Fault
from llmcache.testing.server import LocalServer

__all__ = ["CONTENT_FILTER_MARKER", "Fault", "LocalServer"]
