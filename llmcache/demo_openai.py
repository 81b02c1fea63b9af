"""The demo's wrapped-client section: agents on ``wrap(OpenAI(base_url=<local server>))``.

The upstream is :class:`llmcache.testing.LocalServer`, a real OpenAI-compatible HTTP server in
this process with a model-like latency, so the section runs offline and without an API key.
Calls are accounted in the demo's ledger and priced as OpenAI's ``gpt-4o-mini`` (the model the
agents ask for), so the money spent and saved is what the same traffic would cost on OpenAI.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from openai import OpenAI

from accounting import Accountant, CacheOutcome, Ledger, attribute, default_ledger
from llmcache.openai.client import cache_info, wrap
from llmcache.testing import LocalServer

if TYPE_CHECKING:
    from llmcache.demo import DemoContext

__all__ = ["MODEL", "agents_on_a_wrapped_client"]

MODEL = "gpt-4o-mini"
_TTFT = 0.12
_TOKENS_PER_SECOND = 400.0
# (agent, feature, question, streamed): each round every agent asks one, at the same moment.
_AGENTS = ("planner", "researcher", "writer", "reviewer")
_ASKS = {
    "p": "Break the launch checklist into three steps.",
    "r": "List the known issues of release 4.2.",
    "w": "Draft a two-line release note for 4.2.",
    "v": "Does the release note mention the SSO fix?",
}
# Letters: what each agent asks in a round; the writer streams its answers.
_ROUNDS = ("pppp", "prwr", "rrwv", "pwvv", "rwvp", "wwrv")


def _ask(client: Any, agent: str, question: str) -> str:
    messages = [
        {"role": "system", "content": "You work on a release team. Answer briefly."},
        {"role": "user", "content": question},
    ]
    with attribute(user="demo", feature=agent, task="release-4.2"):
        if agent == "writer":
            stream = client.chat.completions.create(
                model=MODEL, messages=messages, temperature=0, stream=True
            )
            info = cache_info(stream)
            for _ in stream:  # the caller reads the stream as it arrives
                pass
        else:
            info = cache_info(
                client.chat.completions.create(model=MODEL, messages=messages, temperature=0)
            )
    if info is None or (not info.hit and not info.coalesced):
        return "server"
    return "shared a call in flight" if info.coalesced else str(info.tier)


def _rounds(client: Any) -> tuple[float, Counter[str]]:
    barrier = threading.Barrier(len(_AGENTS), timeout=30)
    served: Counter[str] = Counter()
    lock = threading.Lock()

    def agent(index: int) -> None:
        try:
            for round_ in _ROUNDS:
                barrier.wait()
                how = _ask(client, _AGENTS[index], _ASKS[round_[index]])
                with lock:
                    served[how] += 1
        except BaseException:
            barrier.abort()
            raise

    start = time.perf_counter()
    with ThreadPoolExecutor(len(_AGENTS)) as pool:
        for future in [pool.submit(agent, i) for i in range(len(_AGENTS))]:
            future.result()
    return time.perf_counter() - start, served


def _line(ctx: DemoContext, label: str, took: float, reached: int, served: Counter[str]) -> None:
    parts = [f"{reached} reached the server"]
    parts += [f"{n} {how}" for how, n in sorted(served.items()) if how != "server"]
    ctx.say(f"   {label:<18}{took:6.2f} s   " + ", ".join(parts))


def _money(ctx: DemoContext, ledger: Ledger, since: float) -> None:
    ledger.flush()
    paid = saved = 0
    spent = saved_usd = None
    for record in ledger.records(since=since):
        if record.cache is CacheOutcome.HIT:
            saved += 1
            if record.saved is not None:
                saved_usd = (saved_usd or 0) + record.saved
        elif record.cost is not None:
            paid += 1
            spent = (spent or 0) + record.cost.total
    ctx.say(
        f"   ledger: {paid} calls paid ${spent or 0:.6f}; {saved} answered without the "
        f"provider saved ${saved_usd or 0:.6f} (priced as OpenAI {MODEL})"
    )


def agents_on_a_wrapped_client(ctx: DemoContext) -> None:
    """Four agents on a wrapped OpenAI client: server calls versus calls served per tier."""
    ledger = default_ledger(ctx.ledger_path)
    # With `llmcache demo --otlp-endpoint`, every call (hit or miss) is also a span.
    accountant = Accountant(ledger=ledger, exporter=ctx.exporter)
    since = time.time() - 1
    with LocalServer(ttft=_TTFT, tokens_per_second=_TOKENS_PER_SECOND) as server:
        raw = OpenAI(base_url=server.base_url, api_key="demo-key", max_retries=0)
        ctx.say(f"   client = llmcache.wrap(OpenAI(base_url={server.base_url!r}))")
        ctx.say(
            f"   a local OpenAI-compatible server answers as {MODEL!r} "
            f"(first token after {_TTFT * 1000:.0f} ms, {_TOKENS_PER_SECOND:.0f} tokens/s)"
        )
        asked = len(_ROUNDS) * len(_AGENTS)
        distinct = len(set("".join(_ROUNDS)))
        ctx.say(
            f"   {len(_AGENTS)} agents x {len(_ROUNDS)} rounds: {asked} calls, "
            f"{distinct} distinct requests; the writer streams its answers"
        )
        client = wrap(raw, ctx.cache, accountant=accountant, provider="openai")
        took, served = _rounds(client)
        _line(ctx, "first run", took, server.count("chat.completions"), served)
        ctx.restart()  # a new process: its memory tier is empty, the disk tier is not
        client = wrap(raw, ctx.cache, accountant=accountant, provider="openai")
        before = server.count("chat.completions")
        took, served = _rounds(client)
        _line(ctx, "after a restart", took, server.count("chat.completions") - before, served)
        raw.close()
    _money(ctx, ledger, since)
    ledger.close()
    ctx.say("   see who spent what: llmcache report --by feature")
