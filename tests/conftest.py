"""Shared fixtures: a private redis-server per test session, fresh directories and caches.

The Redis server is our own process on a free loopback port with persistence off; tests never
touch another database. When ``redis-server`` is missing the session fails with a clear message
(``scripts/test`` installs it): a Redis test is never skipped.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from llmcache import Cache, DiskTier, MemoryTier, RedisTier


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server process of our own, which a test may kill and restart on the same port."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail(
                "redis-server is not installed: the tests need a real Redis. "
                "Run scripts/test (it installs it), or `apt-get install -y redis-server`.",
                pytrace=False,
            )
        self.binary = binary
        self.directory = directory
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
                "--logfile", str(self.directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.ConnectionError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                        pytest.fail(f"redis-server did not start on port {self.port}:\n{log}")
                    time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        """Terminate the server cleanly."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None

    def client(self) -> redis.Redis:
        """A plain redis-py client for inspecting the server from a test."""
        return redis.Redis(port=self.port)


@pytest.fixture(scope="session", autouse=True)
def _private_llmcache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Defaults (disk cache, SQLite ledger) live in a session directory, never the user's."""
    before = os.environ.get("LLMCACHE_DIR")
    os.environ["LLMCACHE_DIR"] = str(tmp_path_factory.mktemp("llmcache-dir"))
    yield
    if before is None:
        os.environ.pop("LLMCACHE_DIR", None)
    else:
        os.environ["LLMCACHE_DIR"] = before


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One private redis-server for the whole session (flushed between tests by ``redis_url``)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """URL of the private server, emptied before each test (it is ours alone)."""
    client = redis_server.client()
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server for one test only, for tests that kill or restart it."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def three_tier_cache(tmp_path: Path, redis_url: str) -> Iterator[Cache]:
    """memory → disk → Redis, all real."""
    cache = Cache([MemoryTier(), DiskTier(tmp_path / "disk"), RedisTier(redis_url)])
    yield cache
    cache.close()
