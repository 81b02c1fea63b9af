"""What the benchmarks share: percentiles, a free loopback port, a private redis-server.

Not a benchmark itself; ``bench_*.py`` import it (they run with this folder on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import math
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis

#: The machine's own Redis: benchmarks never write to it.
FORBIDDEN_PORT = 6379


def _program() -> str:
    return Path(sys.argv[0]).stem or "benchmark"


def percentile(sorted_ns: list[int], q: float) -> float:
    """Nearest-rank percentile of sorted nanoseconds, in microseconds."""
    rank = max(1, math.ceil(q * len(sorted_ns)))
    return sorted_ns[rank - 1] / 1000.0


def summary(samples: list[int]) -> dict[str, Any]:
    """p50, p99, mean and max (microseconds) of per-call nanoseconds."""
    s = sorted(samples)
    return {
        "n": len(s),
        "p50_us": round(percentile(s, 0.50), 2),
        "p99_us": round(percentile(s, 0.99), 2),
        "mean_us": round(sum(s) / len(s) / 1000.0, 2),
        "max_us": round(s[-1] / 1000.0, 2),
    }


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (never 6379)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port != FORBIDDEN_PORT:
            return port


@contextlib.contextmanager
def private_redis(directory: Path) -> Iterator[tuple[str, str]]:
    """Start ``redis-server`` on a free loopback port; yield its URL and version; stop it."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit(f"{_program()}: redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(directory),
            "--logfile", str(directory / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                version = str(client.info("server")["redis_version"])
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"{_program()}: redis-server did not start on port {port}")
                time.sleep(0.02)
        client.close()
        yield url, version
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def redis_port(url: str) -> int | None:
    """The TCP port of a redis URL (6379 when it names none), ``None`` for a unix socket."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return None
    return parts.port or FORBIDDEN_PORT
