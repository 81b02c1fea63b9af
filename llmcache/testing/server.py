""":class:`LocalServer`: a local OpenAI-compatible HTTP server for tests, demos and benchmarks.

It speaks the wire format of ``/v1/chat/completions``, ``/v1/completions``,
``/v1/embeddings``, ``/v1/responses`` and ``/v1/models`` (JSON and server-sent events) well
enough for the real ``openai`` SDK, answers deterministically (the same request gets the same
answer), counts requests per endpoint, injects faults on demand, and can be slowed down to a
chosen time to first token and token rate. See :mod:`llmcache.testing` for an example.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType, TracebackType

from llmcache.testing.endpoints import DEFAULT_MODELS, ENDPOINTS
from llmcache.testing.faults import Fault, FaultQueue, PendingFault
from llmcache.testing.handler import HTTPServer

__all__ = ["LocalServer"]

# How often the accept loop looks for a stop request: bounds how long stop() waits for it.
_POLL_INTERVAL = 0.05


def _ttft(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ValueError(f"LocalServer.ttft must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


def _rate(value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(
            f"LocalServer.tokens_per_second must be None or a finite number > 0, got {value!r}"
        )
    return float(value)


class _State:
    """What the request handlers share with their :class:`LocalServer` (``handler.State``)."""

    def __init__(
        self, *, ttft: float, tokens_per_second: float | None, models: Sequence[str]
    ) -> None:
        self.ttft = ttft
        self.tokens_per_second = tokens_per_second
        self.models = models
        self.faults = FaultQueue()
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.counts = dict.fromkeys(ENDPOINTS, 0)

    def record(self, endpoint: str) -> None:
        with self.lock:
            self.counts[endpoint] += 1


def _endpoint(name: str | None, what: str) -> str | None:
    if name is not None and name not in ENDPOINTS:
        raise ValueError(f"{what} must be one of {', '.join(ENDPOINTS)}; got {name!r}")
    return name


class LocalServer:
    """A real HTTP server on a free loopback port that answers like OpenAI's API.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`::

        with LocalServer() as server:
            client = OpenAI(base_url=server.base_url, api_key="test", max_retries=0)
            client.chat.completions.create(model="gpt-4o", messages=[...])
            assert server.count("chat.completions") == 1

    Answers are deterministic functions of the request body (ids and text included; only
    ``created`` timestamps vary), so caching layers can be tested byte for byte. A last user
    message containing ``[content_filter]`` is answered cut short with ``finish_reason``
    ``"content_filter"``. The ``Authorization`` header is accepted, ignored, never logged.

    The openai SDK retries 429, 500 and dropped connections (twice by default): build clients
    with ``max_retries=0`` when injecting faults, or expect ``1 + max_retries`` requests.

    Args:
        ttft: seconds before the first byte of every response (for a stream, before its first
            event; its headers go out at once). Settable while running.
        tokens_per_second: pace of streamed deltas (text or argument pieces); ``None`` sends
            them as fast as possible. Settable while running.
        host: the address to bind (loopback by default).
        port: the port to bind; 0 picks a free one.
        models: what ``GET /v1/models`` lists (other endpoints accept any model name).

    Raises:
        ValueError: an argument is out of range; the message names it.
    """

    def __init__(
        self,
        *,
        ttft: float = 0.0,
        tokens_per_second: float | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        models: Iterable[str] = DEFAULT_MODELS,
    ) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"LocalServer.port must be an int from 0 to 65535, got {port!r}")
        if not isinstance(host, str) or not host:
            raise ValueError(f"LocalServer.host must be a non-empty str, got {host!r}")
        self._state = _State(
            ttft=_ttft(ttft),
            tokens_per_second=_rate(tokens_per_second),
            models=tuple(str(model) for model in models),
        )
        self._host = host
        self._wanted_port = port
        self._lifecycle = threading.Lock()
        self._httpd: HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> LocalServer:
        """Bind the port and serve on a daemon thread.

        Returns:
            This server.

        Raises:
            RuntimeError: it is already running.
            OSError: the address cannot be bound.
        """
        with self._lifecycle:
            if self._httpd is not None:
                raise RuntimeError("LocalServer is already running")
            self._state.stopping.clear()
            httpd = HTTPServer((self._host, self._wanted_port), self._state)
            thread = threading.Thread(
                target=httpd.serve_forever,
                kwargs={"poll_interval": _POLL_INTERVAL},
                name=f"llmcache-testing-{httpd.server_port}",
                daemon=True,
            )
            thread.start()
            self._httpd, self._thread = httpd, thread
        return self

    def stop(self) -> None:
        """Stop serving: close open connections and the listening socket, join the thread.

        Responses in flight are cut off. Calling it again, or before :meth:`start`, does
        nothing.
        """
        with self._lifecycle:
            httpd, thread = self._httpd, self._thread
            self._httpd = self._thread = None
        if httpd is None or thread is None:
            return
        self._state.stopping.set()  # wakes handlers sleeping for ttft or pacing
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        thread.join()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- where --------------------------------------------------------------------------------

    def _running(self) -> HTTPServer:
        httpd = self._httpd
        if httpd is None:
            raise RuntimeError("LocalServer is not running: call start() or use `with`")
        return httpd

    @property
    def port(self) -> int:
        """The bound port.

        Raises:
            RuntimeError: the server is not running.
        """
        return self._running().server_port

    @property
    def base_url(self) -> str:
        """The URL to give ``OpenAI(base_url=...)``: ``http://127.0.0.1:<port>/v1``.

        Raises:
            RuntimeError: the server is not running.
        """
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}/v1"

    # -- knobs --------------------------------------------------------------------------------

    @property
    def ttft(self) -> float:
        """Seconds before the first byte of a response (a stream's first event)."""
        return self._state.ttft

    @ttft.setter
    def ttft(self, value: float) -> None:
        self._state.ttft = _ttft(value)

    @property
    def tokens_per_second(self) -> float | None:
        """Pace of streamed deltas; ``None`` for as fast as possible."""
        return self._state.tokens_per_second

    @tokens_per_second.setter
    def tokens_per_second(self, value: float | None) -> None:
        self._state.tokens_per_second = _rate(value)

    @property
    def models(self) -> Sequence[str]:
        """The models ``GET /v1/models`` lists."""
        return self._state.models

    # -- counters and faults ------------------------------------------------------------------

    @property
    def requests(self) -> Mapping[str, int]:
        """A read-only snapshot: endpoint name to requests received (faulted ones included).

        Names: ``"chat.completions"``, ``"completions"``, ``"embeddings"``, ``"responses"``,
        ``"models"``.
        """
        with self._state.lock:
            return MappingProxyType(dict(self._state.counts))

    def count(self, endpoint: str) -> int:
        """Requests received on ``endpoint`` so far (faulted ones included).

        Raises:
            ValueError: ``endpoint`` is not one of the names :attr:`requests` lists.
        """
        _endpoint(endpoint, "endpoint")
        with self._state.lock:
            return self._state.counts[endpoint]

    def fault(
        self,
        fault: Fault,
        *,
        times: int = 1,
        endpoint: str | None = None,
        retry_after: float = 0.0,
        after_chunks: int = 0,
    ) -> None:
        """Make the next ``times`` requests (to ``endpoint``, or any) fail with ``fault``.

        Faults queue in order; each applies to one request. The openai SDK retries 429, 500
        and dropped connections by default: use ``max_retries=0`` or queue enough faults.

        Args:
            fault: what goes wrong (see :class:`Fault`).
            times: how many requests it applies to.
            endpoint: only requests to this endpoint (``"chat.completions"`` …); ``None``
                for any.
            retry_after: seconds sent in ``Retry-After`` with ``Fault.RATE_LIMIT``.
            after_chunks: events a ``Fault.DROP_STREAM`` stream sends before the drop.

        Raises:
            ValueError: an argument is out of range; the message names it.
        """
        if not isinstance(fault, Fault):
            raise ValueError(f"fault must be a Fault, got {fault!r}")
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ValueError(f"times must be an int >= 1, got {times!r}")
        _endpoint(endpoint, "endpoint")
        if not isinstance(retry_after, (int, float)) or not 0 <= retry_after < math.inf:
            raise ValueError(f"retry_after must be a finite number >= 0, got {retry_after!r}")
        if isinstance(after_chunks, bool) or not isinstance(after_chunks, int) or after_chunks < 0:
            raise ValueError(f"after_chunks must be an int >= 0, got {after_chunks!r}")
        pending = PendingFault(
            fault=fault,
            endpoint=endpoint,
            retry_after=float(retry_after),
            after_chunks=after_chunks,
        )
        self._state.faults.add(pending, times)

    def reset(self) -> None:
        """Zero the counters and drop the faults not yet applied."""
        self._state.faults.clear()
        with self._state.lock:
            self._state.counts = dict.fromkeys(ENDPOINTS, 0)
