"""``python -m llmcache.testing``: run the local OpenAI-compatible server until stopped.

Prints ``llmcache test server: http://HOST:PORT/v1`` on one line, then serves until SIGINT or
SIGTERM (exit status 0). :func:`add_arguments` and :func:`run` let another command line (such
as ``llmcache serve``) offer the same options.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType

from llmcache.testing.server import LocalServer

__all__ = ["add_arguments", "main", "run"]


class _Stop(Exception):
    """SIGINT or SIGTERM arrived."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--host``, ``--port``, ``--ttft`` and ``--tokens-per-second`` to ``parser``.

    Args:
        parser: the parser (or sub-parser) of the command that runs :func:`run`.
    """
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, default=0, help="port to listen on; 0 picks a free one (default: 0)"
    )
    parser.add_argument(
        "--ttft",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds before the first byte of each response (default: 0)",
    )
    parser.add_argument(
        "--tokens-per-second",
        type=float,
        default=None,
        metavar="N",
        help="pace of streamed tokens (default: as fast as possible)",
    )


def run(args: argparse.Namespace) -> int:
    """Serve with the options :func:`add_arguments` parsed, until SIGINT or SIGTERM.

    Must run on the main thread (it installs a SIGTERM handler, restored on return).

    Args:
        args: the parsed options.

    Returns:
        The exit status: 0 when stopped by a signal, 2 when the options or the address are
        refused (one line on standard error says why).
    """
    try:
        server = LocalServer(
            host=args.host,
            port=args.port,
            ttft=args.ttft,
            tokens_per_second=args.tokens_per_second,
        )
        server.start()
    except (ValueError, OSError) as exc:
        print(f"llmcache test server: {exc}", file=sys.stderr)
        return 2

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise _Stop

    # SIGINT too: a shell starts background jobs with SIGINT ignored, and Ctrl-C must still work.
    previous = {sig: signal.signal(sig, terminate) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f"llmcache test server: {server.base_url}", flush=True)
        while True:
            time.sleep(3600)  # a signal handler raising ends the sleep at once
    except _Stop:
        return 0
    finally:
        server.stop()
        for sig, handler in previous.items():
            if handler is not None:  # None: set outside Python, nothing to restore
                signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m llmcache.testing`` and return its exit status.

    Args:
        argv: the arguments after the program name (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(
        prog="python -m llmcache.testing",
        description="A local OpenAI-compatible server with deterministic answers, for tests, "
        "demos and benchmarks.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
