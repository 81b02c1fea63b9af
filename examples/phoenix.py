"""Send ``llmcache demo``'s traces to Arize Phoenix, then read a miss and a hit back from it.

Run from a checkout with llmcache installed (the demo runs with this interpreter)::

    python examples/phoenix.py [--dir ~/.cache/llmcache-phoenix] [--keep]

What it does:

1. Phoenix lives in a venv of its own (``DIR/venv``, made once with ``pip install
   arize-phoenix``; a few minutes, ~850 MB): its many dependencies never meet yours.
2. ``phoenix serve`` starts on 127.0.0.1, on free ports, with its database in a temporary
   directory and its telemetry and external resources switched off.
3. ``python -m llmcache demo --otlp-endpoint http://127.0.0.1:PORT/v1/traces`` runs, with the
   spans' resource naming the Phoenix project (``openinference.project.name``).
4. The spans are read back from Phoenix (REST ``GET /v1/projects/{project}/spans``, then its
   GraphQL API for what the UI shows: latency, token counts and the cost Phoenix computes),
   and one miss and one hit are printed.
5. Phoenix is stopped (with ``--keep``, after Ctrl-C, so that you can browse its UI first) and
   the temporary directory removed.

Standard library only. Not part of the test suite: it downloads Phoenix.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import venv
from pathlib import Path
from typing import Any

#: The Phoenix release this recipe was run against; ``--phoenix`` picks another.
PHOENIX = "arize-phoenix==20.26.1"
DEFAULT_DIR = Path("~/.cache/llmcache-phoenix")
PROJECT = "llmcache-demo"
# What Phoenix shows for a span: its GraphQL names (the REST API has neither latency nor cost).
_SPAN_QUERY = """
query ($id: ID!) {
  node(id: $id) {
    ... on Span {
      name spanKind statusCode latencyMs
      tokenCountPrompt tokenCountCompletion tokenCountTotal
      costSummary { prompt { tokens cost } completion { tokens cost } total { tokens cost } }
    }
  }
}
"""
_PROJECT_QUERY = """
query ($id: ID!) {
  node(id: $id) {
    ... on Project { name traceCount tokenCountTotal costSummary { total { tokens cost } } }
  }
}
"""


class RecipeError(Exception):
    """A step failed; the message says which and why."""


# -- the venv -------------------------------------------------------------------------------------


def ensure_phoenix(directory: Path, requirement: str) -> Path:
    """The ``phoenix`` program of ``directory/venv``, with ``requirement`` installed there.

    The venv is made once; ``pip install`` then runs every time, and returns in seconds when
    the requirement is already satisfied (it also completes an install that was cut short).

    Args:
        directory: where the venv lives.
        requirement: what to ``pip install``, e.g. ``arize-phoenix==20.26.1``.

    Returns:
        The path of the ``phoenix`` command.

    Raises:
        RecipeError: the install failed.
    """
    env_dir = directory / "venv"
    python = env_dir / "bin" / "python"
    if python.exists():
        print(f"Phoenix venv: {env_dir}; pip install {requirement} ...", flush=True)
    else:
        print(f"making {env_dir}; pip install {requirement} (a few minutes, once) ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(env_dir)
    pip = [str(python), "-m", "pip", "install", "--quiet", requirement]
    if subprocess.run(pip, check=False).returncode != 0:  # noqa: S603  (our own command)
        raise RecipeError(f"pip install {requirement} into {env_dir} failed (see above)")
    return env_dir / "bin" / "phoenix"


# -- the server -----------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def phoenix_env(working_dir: Path, port: int, grpc_port: int) -> dict[str, str]:
    """The environment of ``phoenix serve``: loopback, free ports, a private database, offline."""
    # The caller's OTEL_* variables are for the caller's apps: Phoenix would trace itself there.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PHOENIX_"))}
    env.update(
        PHOENIX_WORKING_DIR=str(working_dir),  # its SQLite database goes here
        PHOENIX_HOST="127.0.0.1",
        PHOENIX_PORT=str(port),
        PHOENIX_GRPC_PORT=str(grpc_port),
        # phoenix/config.py: the telemetry pixels (FullStory, Scarf) off, and no request to the
        # public internet on its own initiative (web fonts, the WASM sandbox download).
        PHOENIX_TELEMETRY_ENABLED="false",
        PHOENIX_ALLOW_EXTERNAL_RESOURCES="false",
    )
    return env


def wait_until_up(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> str:
    """Poll Phoenix until it answers; return its version.

    Raises:
        RecipeError: Phoenix exited, or did not answer within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RecipeError(f"phoenix serve exited ({proc.returncode}):\n{_tail(log)}")
        try:
            return fetch(f"{url}/arize_phoenix_version", timeout=2).decode().strip()
        except (urllib.error.URLError, OSError):
            pass  # not listening yet, or still starting (migrating its database)
        if time.monotonic() > deadline:
            raise RecipeError(f"Phoenix did not answer within {timeout:.0f} s:\n{_tail(log)}")
        time.sleep(0.5)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop ``phoenix serve``: SIGTERM (it shuts down cleanly), SIGKILL after 15 s."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# -- reading back ---------------------------------------------------------------------------------


def fetch(url: str, body: dict[str, Any] | None = None, timeout: float = 10) -> bytes:
    """GET ``url``, or POST ``body`` as JSON; return the answer's bytes.

    Raises:
        urllib.error.URLError: no answer, or an HTTP error status.
    """
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"not a loopback URL of this recipe: {url}")
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310  (checked)
    with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
        return bytes(answer.read())


def http_json(url: str, body: dict[str, Any] | None = None) -> Any:
    """GET ``url`` (or POST ``body`` as JSON) and decode the JSON answer."""
    return json.loads(fetch(url, body))


def graphql(base: str, query: str, variables: dict[str, Any]) -> Any:
    """POST a GraphQL query to Phoenix; return its ``data``.

    Raises:
        RecipeError: the answer holds errors.
    """
    doc = http_json(f"{base}/graphql", {"query": query, "variables": variables})
    if doc.get("errors"):
        raise RecipeError(f"GraphQL errors: {doc['errors']}")
    return doc["data"]


def read_spans(base: str, project: str, expected: int, timeout: float) -> list[dict[str, Any]]:
    """The project's spans (REST), once ``expected`` of them are in or ``timeout`` has passed.

    Phoenix inserts spans in batches, shortly after it receives them.
    """
    url = f"{base}/v1/projects/{urllib.parse.quote(project)}/spans?limit=1000"
    deadline = time.monotonic() + timeout
    spans: list[dict[str, Any]] = []
    while True:
        try:
            spans = http_json(url)["data"]
        except urllib.error.HTTPError as exc:
            if exc.code != 404:  # 404: the project does not exist until its first span
                raise
        if len(spans) >= expected or time.monotonic() > deadline:
            return spans
        time.sleep(0.5)


def _usd(value: Any) -> str:
    return "-" if value is None else f"${value:.8f}"


def show_span(base: str, label: str, span: dict[str, Any]) -> None:
    """Print a span as Phoenix shows it, then the attributes llmcache and Phoenix gave it."""
    shown = graphql(base, _SPAN_QUERY, {"id": span["id"]})["node"]
    cost = shown["costSummary"]
    attrs = span["attributes"]
    print(f"{label}: {shown['name']}")
    print(
        f"  Phoenix shows   kind {shown['spanKind']}, status {shown['statusCode']}, "
        f"latency {shown['latencyMs']:.2f} ms"
    )
    print(
        f"                  tokens {shown['tokenCountTotal']} total ({shown['tokenCountPrompt']} "
        f"prompt, {shown['tokenCountCompletion']} completion)"
    )
    if cost is None:
        print("                  cost: none (Phoenix computed no cost for this span)")
    else:
        print(
            f"                  cost {_usd(cost['total']['cost'])} (prompt "
            f"{_usd(cost['prompt']['cost'])}, completion {_usd(cost['completion']['cost'])})"
        )
    synthesized = {k: v for k, v in attrs.items() if k.startswith("llm.")}
    print(f"  Phoenix derived {json.dumps(synthesized, sort_keys=True)}")
    ours = {
        k: v
        for k, v in attrs.items()
        if k.startswith(("llmcache.cost.total", "llmcache.cache.")) or k == "gen_ai.usage.cost"
    }
    print(f"  llmcache sent   {json.dumps(ours, sort_keys=True)}")


def show_project(base: str, project: str) -> None:
    """Print the project's totals as Phoenix shows them."""
    info = http_json(f"{base}/v1/projects/{urllib.parse.quote(project)}")["data"]
    node = graphql(base, _PROJECT_QUERY, {"id": info["id"]})["node"]
    total = node["costSummary"]["total"]
    print(
        f"project {node['name']!r} in Phoenix: {node['traceCount']} traces, "
        f"{node['tokenCountTotal']:.0f} tokens, total cost {_usd(total['cost'])}"
    )


# -- the recipe -----------------------------------------------------------------------------------


def run_demo(endpoint: str, workdir: Path) -> int:
    """Run ``llmcache demo`` with this interpreter; return how many spans it says it sent.

    Raises:
        RecipeError: the demo failed.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMCACHE_")}
    # Phoenix files spans under the project their resource names (else "default").
    env["OTEL_RESOURCE_ATTRIBUTES"] = f"openinference.project.name={PROJECT}"
    command = [sys.executable, "-m", "llmcache", "demo", "--dir", str(workdir)]
    command += ["--otlp-endpoint", endpoint]
    print(f"$ llmcache demo --otlp-endpoint {endpoint}", flush=True)
    done = subprocess.run(  # noqa: S603  (this interpreter, our arguments, no shell)
        command, env=env, capture_output=True, text=True, check=False
    )
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        raise RecipeError(f"llmcache demo exited {done.returncode}")
    for line in done.stdout.splitlines():
        if line.startswith("traces: "):  # "traces: 48 of 48 spans sent to ..."
            return int(line.split()[1])
    raise RecipeError("the demo did not say how many spans it sent")


def main(argv: list[str] | None = None) -> int:
    """Run the recipe; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_DIR,
        help=f"where Phoenix's venv lives (default: {DEFAULT_DIR})",
    )
    parser.add_argument(
        "--phoenix",
        default=PHOENIX,
        metavar="REQUIREMENT",
        help=f"what to pip install (default: {PHOENIX})",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep Phoenix serving until Ctrl-C, to browse its UI"
    )
    args = parser.parse_args(argv)
    try:
        phoenix = ensure_phoenix(args.dir.expanduser(), args.phoenix)
        with tempfile.TemporaryDirectory(prefix="llmcache-phoenix-") as tmp:
            return serve_and_read(phoenix, Path(tmp), keep=args.keep)
    except RecipeError as exc:
        print(f"phoenix recipe: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def serve_and_read(phoenix: Path, tmp: Path, *, keep: bool) -> int:
    """Start Phoenix in ``tmp``, send it the demo's traces, print two spans, stop it."""
    port, grpc_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp / "phoenix.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603  (the phoenix of our venv, no shell)
            [str(phoenix), "serve"],
            env=phoenix_env(tmp / "phoenix", port, grpc_port),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        started = time.monotonic()
        version = wait_until_up(base, proc, log, timeout=180)
        print(f"Phoenix {version} up at {base} in {time.monotonic() - started:.1f} s", flush=True)
        sent = run_demo(f"{base}/v1/traces", tmp / "llmcache")
        spans = read_spans(base, PROJECT, sent, timeout=30)
        print(f"\nread back {len(spans)} spans from Phoenix (GET /v1/projects/{PROJECT}/spans)")
        outcome = "llmcache.cache.outcome"
        miss = next((s for s in spans if s["attributes"].get(outcome) == "miss"), None)
        hit = next((s for s in spans if s["attributes"].get(outcome) == "hit"), None)
        if miss is None or hit is None:
            raise RecipeError("Phoenix holds no miss or no hit of the demo")
        show_span(base, "miss", miss)
        show_span(base, "hit", hit)
        show_project(base, PROJECT)
        if keep:
            print(f"\nPhoenix UI: {base}/projects  (Ctrl-C to stop it)", flush=True)
            proc.wait()
    finally:
        stop(proc)
    print("Phoenix stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
