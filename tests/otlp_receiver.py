"""Small real OTLP receivers for the tests, built on ``opentelemetry-proto``.

:class:`OTLPReceiver` is an HTTP server on a free loopback port taking ``POST /v1/traces`` and
``POST /v1/metrics`` with protobuf bodies (gzip or deflate encoded, or not), as OTLP/HTTP
specifies; :class:`GrpcReceiver` serves the OTLP gRPC trace and metrics services. Both keep the
raw request bytes (after content decoding) and the decoded messages, and answer with an empty
success response, or with a chosen HTTP status to play a backend that refuses.
"""

from __future__ import annotations

import gzip
import threading
import zlib
from collections.abc import Iterator, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span

ExportTrace = trace_service_pb2.ExportTraceServiceRequest
ExportMetrics = metrics_service_pb2.ExportMetricsServiceRequest


def value_of(value: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as a Python value (arrays as tuples)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(value_of(v) for v in value.array_value.values)
    if kind == "kvlist_value":
        return attributes_of(value.kvlist_value.values)
    return getattr(value, kind)


def attributes_of(pairs: Any) -> dict[str, Any]:
    """OTLP ``KeyValue`` pairs as a dict."""
    result: dict[str, Any] = {}
    pair: KeyValue
    for pair in pairs:
        result[pair.key] = value_of(pair.value)
    return result


@dataclass
class ReceivedSpan:
    """A span as the receiver got it, with its resource and scope."""

    span: Span
    resource: dict[str, Any]
    scope_name: str
    scope_version: str
    schema_url: str

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def attributes(self) -> dict[str, Any]:
        return attributes_of(self.span.attributes)


@dataclass
class ReceivedMetric:
    """A metric as the receiver got it (one per export request it appeared in)."""

    metric: Metric
    resource: dict[str, Any]
    scope_name: str

    @property
    def name(self) -> str:
        return self.metric.name

    def points(self) -> list[Any]:
        """Its data points (histogram, sum or gauge)."""
        kind = self.metric.WhichOneof("data")
        return list(getattr(self.metric, kind).data_points) if kind else []


@dataclass
class _Store:
    lock: threading.Lock = field(default_factory=threading.Lock)
    bodies: list[tuple[str, bytes]] = field(default_factory=list)
    traces: list[Any] = field(default_factory=list)
    metrics: list[Any] = field(default_factory=list)

    def add(self, path: str, body: bytes) -> None:
        with self.lock:
            self.bodies.append((path, body))
            if path == "/v1/traces":
                self.traces.append(ExportTrace.FromString(body))
            elif path == "/v1/metrics":
                self.metrics.append(ExportMetrics.FromString(body))

    def raw(self) -> bytes:
        with self.lock:
            return b"".join(body for _, body in self.bodies)

    def spans(self) -> list[ReceivedSpan]:
        with self.lock:
            requests = list(self.traces)
        found = []
        for request in requests:
            for rs in request.resource_spans:
                resource = attributes_of(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        found.append(
                            ReceivedSpan(
                                span=span,
                                resource=resource,
                                scope_name=ss.scope.name,
                                scope_version=ss.scope.version,
                                schema_url=ss.schema_url,
                            )
                        )
        return found

    def metrics_received(self) -> Iterator[ReceivedMetric]:
        with self.lock:
            requests = list(self.metrics)
        for request in requests:
            for rm in request.resource_metrics:
                resource = attributes_of(rm.resource.attributes)
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        yield ReceivedMetric(
                            metric=metric, resource=resource, scope_name=sm.scope.name
                        )


class OTLPReceiver:
    """An OTLP/HTTP (protobuf) receiver on ``127.0.0.1``, in a thread of the test process.

    Args:
        status: the HTTP status to answer (200: accept; 400: refuse, not retryable).
    """

    def __init__(self, *, status: int = 200) -> None:
        self.status = status
        self._store = _Store()
        store = self._store
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                path = self.path
                if path not in ("/v1/traces", "/v1/metrics"):
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                store.add(path, body)
                status = receiver.status
                if path == "/v1/traces":
                    answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                else:
                    answer = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
                if status != 200:
                    answer = b""
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the test output clean

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def start(self) -> OTLPReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    @property
    def bodies(self) -> list[tuple[str, bytes]]:
        """Every request body received, ``(path, bytes)``, in order."""
        with self._store.lock:
            return list(self._store.bodies)

    def raw(self) -> bytes:
        """Every byte received, concatenated."""
        return self._store.raw()

    def spans(self) -> list[ReceivedSpan]:
        """Every span received."""
        return self._store.spans()

    def metrics(self) -> dict[str, list[ReceivedMetric]]:
        """Every metric received, by name."""
        found: dict[str, list[ReceivedMetric]] = {}
        for metric in self._store.metrics_received():
            found.setdefault(metric.name, []).append(metric)
        return found

    def last_points(self, name: str) -> list[Any]:
        """The data points of metric ``name`` in the last export that had it."""
        metrics = self.metrics().get(name, [])
        return metrics[-1].points() if metrics else []


class GrpcReceiver:
    """The OTLP gRPC trace and metrics services on ``127.0.0.1``."""

    def __init__(self) -> None:
        self._store = _Store()
        store = self._store

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:
                store.add("/v1/traces", request.SerializeToString())
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:
                store.add("/v1/metrics", request.SerializeToString())
                return metrics_service_pb2.ExportMetricsServiceResponse()

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), self._server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> GrpcReceiver:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=None).wait(5)

    def spans(self) -> list[ReceivedSpan]:
        """Every span received."""
        return self._store.spans()

    def metrics(self) -> Mapping[str, list[ReceivedMetric]]:
        """Every metric received, by name."""
        found: dict[str, list[ReceivedMetric]] = {}
        for metric in self._store.metrics_received():
            found.setdefault(metric.name, []).append(metric)
        return found
