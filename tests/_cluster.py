"""A real Redis Cluster for tests: master redis-server processes on free loopback ports.

Three masters by default. The cluster is formed with ``redis-cli --cluster create`` when
redis-cli is installed, else with redis-py alone (CLUSTER ADDSLOTSRANGE on each node, CLUSTER
MEET, then wait for ``cluster_state:ok`` everywhere); ``Cluster(directory, nodes=1)`` makes a
one-node cluster, which only redis-py forms (redis-cli wants three masters). Only servers of our
own are started and touched: never the default port 6379. Test modules import it as
``from _cluster import Cluster``.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import free_port

SLOTS = 16384
NODES = 3


class Cluster:
    """``nodes`` (``NODES`` by default) cluster-enabled redis-server processes, masters only."""

    def __init__(self, directory: Path, *, nodes: int = NODES) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: `apt-get install -y redis-server`")
        self.binary = binary
        self.directory = directory
        # The bus port is chosen too: the default (port + 10000) may not be free or even valid.
        self.count = nodes
        self.ports = [(free_port(), free_port()) for _ in range(nodes)]
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0][0]}/0"

    def start(self) -> None:
        for port, bus in self.ports:
            self.procs.append(
                subprocess.Popen(
                    [
                        self.binary,
                        "--port", str(port),
                        "--cluster-port", str(bus),
                        "--bind", "127.0.0.1",
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", str(self.directory / f"nodes-{port}.conf"),
                        "--cluster-node-timeout", "5000",
                        "--save", "",
                        "--appendonly", "no",
                        "--dir", str(self.directory),
                        "--logfile", str(self.directory / f"redis-{port}.log"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip
        for port, _ in self.ports:
            self._wait(lambda c: c.ping(), port, "answer PING")

    def form(self, *, use_cli: bool) -> None:
        cli = shutil.which("redis-cli") if use_cli else None
        if cli is not None:
            addresses = [f"127.0.0.1:{port}" for port, _ in self.ports]
            command = [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0"]
            subprocess.run(
                [*command, "--cluster-yes"],
                check=True,
                capture_output=True,
                timeout=60,
            )
        else:
            self._form_with_redis_py()
        for port, _ in self.ports:
            self._wait(lambda c: _cluster_ok(c, self.count), port, "report cluster_state:ok")

    def _form_with_redis_py(self) -> None:
        step = SLOTS // self.count
        for i, (port, _) in enumerate(self.ports):
            last = SLOTS - 1 if i == self.count - 1 else (i + 1) * step - 1
            with redis.Redis(port=port) as node:
                node.execute_command("CLUSTER", "ADDSLOTSRANGE", i * step, last)
        with redis.Redis(port=self.ports[0][0]) as first:
            for port, bus in self.ports[1:]:
                first.execute_command("CLUSTER", "MEET", "127.0.0.1", port, bus)

    def _wait(self, check: Any, port: int, what: str) -> None:
        deadline = time.monotonic() + 20
        with redis.Redis(port=port, socket_connect_timeout=0.2, decode_responses=True) as node:
            while True:
                try:
                    if check(node):
                        return
                except redis.ConnectionError:
                    pass
                if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                    log = (self.directory / f"redis-{port}.log").read_text(errors="replace")
                    pytest.fail(f"cluster node {port} did not {what}:\n{log[-2000:]}")
                time.sleep(0.02)

    def nodes(self) -> list[redis.Redis]:
        """Plain clients of each node, to look at what each one holds."""
        return [redis.Redis(port=port) for port, _ in self.ports]

    def flush(self) -> None:
        for node in self.nodes():
            with node:
                node.flushall()

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=10)


def _cluster_ok(node: redis.Redis, nodes: int) -> bool:
    info = node.execute_command("CLUSTER", "INFO")
    text = info if isinstance(info, str) else "\n".join(f"{k}:{v}" for k, v in info.items())
    fields = dict(line.split(":", 1) for line in text.split() if ":" in line)
    return (
        fields.get("cluster_state") == "ok"
        and fields.get("cluster_slots_ok") == str(SLOTS)
        and fields.get("cluster_known_nodes") == str(nodes)
    )
