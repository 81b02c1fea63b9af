"""RedisTier over every URL scheme it accepts: redis://, unix:// and rediss:// (TLS)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import trustme
from conftest import free_port

from llmcache import Cache, MemoryTier, RedisTier


def start(args: list[str], directory: Path, ping: redis.Redis) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (scripts/test installs it)", pytrace=False)
    proc = subprocess.Popen(
        [binary, "--save", "", "--appendonly", "no", "--dir", str(directory), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                ping.ping()
                return proc
            except (redis.ConnectionError, OSError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    proc.wait()
                    pytest.fail(f"redis-server {args} did not start")
                time.sleep(0.02)
    finally:
        ping.close()


@pytest.fixture
def unix_socket(tmp_path: Path) -> Iterator[Path]:
    sock = tmp_path / "redis.sock"
    proc = start(
        ["--port", "0", "--unixsocket", str(sock)],
        tmp_path,
        redis.Redis(unix_socket_path=str(sock)),
    )
    yield sock
    proc.kill()
    proc.wait()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    port = free_port()
    args = [
        "--port", "0",
        "--bind", "127.0.0.1",
        "--tls-port", str(port),
        "--tls-cert-file", str(tmp_path / "server.pem"),
        "--tls-key-file", str(tmp_path / "server.pem"),
        "--tls-ca-cert-file", str(tmp_path / "ca.pem"),
        "--tls-auth-clients", "no",
    ]  # fmt: skip
    ping = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(tmp_path / "ca.pem"))
    proc = start(args, tmp_path, ping)
    yield port, tmp_path / "ca.pem"
    proc.kill()
    proc.wait()


def round_trip(tier: RedisTier) -> None:
    cache = Cache([MemoryTier(), tier])
    assert cache.get_or_set({"q": "scheme"}, lambda: "computed") == "computed"
    other = Cache([MemoryTier(), tier])  # empty memory: must come from Redis
    assert other.fetch({"q": "scheme"}, lambda: "recomputed").info.tier == "redis"
    assert tier.get("missing") is None

    async def go() -> None:
        await tier.aset("async", b"v", 10)
        assert await tier.aget("async") == b"v"
        await tier.aclose()

    asyncio.run(go())
    assert other.stats().tiers[1].errors == 0
    tier.close()


def test_unix_socket_url(unix_socket: Path) -> None:
    round_trip(RedisTier(f"unix://{unix_socket}?db=2"))
    raw = redis.Redis(unix_socket_path=str(unix_socket), db=2)
    assert any(k.startswith(b"llmcache:") for k in raw.scan_iter())
    raw.close()


def test_tls_url_with_a_verified_certificate(tls_server: tuple[int, Path]) -> None:
    port, ca = tls_server
    tier = RedisTier(f"rediss://127.0.0.1:{port}/0", client_options={"ssl_ca_certs": str(ca)})
    round_trip(tier)


def test_tls_with_an_untrusted_certificate_is_a_counted_failure_never_an_exception(
    tls_server: tuple[int, Path],
) -> None:
    port, _ = tls_server
    cache = Cache([MemoryTier(), RedisTier(f"rediss://127.0.0.1:{port}/0")])  # system CAs only
    assert cache.get_or_set({"q": 1}, lambda: "served anyway") == "served anyway"
    redis_stats = cache.stats().tiers[1]
    assert redis_stats.errors >= 1
    assert redis_stats.last_error is not None
    assert (
        "certificate" in redis_stats.last_error.lower() or "ssl" in redis_stats.last_error.lower()
    )


def test_plain_client_on_the_tls_port_fails_cleanly(tls_server: tuple[int, Path]) -> None:
    port, _ = tls_server
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # the port is open: what follows is a protocol failure, not a refused connection
    cache = Cache([MemoryTier(), RedisTier(f"redis://127.0.0.1:{port}/0")])
    assert cache.get_or_set({"q": 1}, lambda: "fine") == "fine"
    assert cache.stats().tiers[1].errors >= 1
