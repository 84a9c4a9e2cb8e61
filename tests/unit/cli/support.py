"""Running the real ``screwops`` app in-process, against in-process gRPC servers with fake
servicers (no network beyond 127.0.0.1, no stack)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import grpc
from screwops_cli.main import app
from screwops_rpc import server_credentials
from typer.testing import CliRunner, Result

S = TypeVar("S")

runner = CliRunner()


def screwops(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    """Run ``screwops ARGS`` in-process and return what it printed and its exit code."""
    return runner.invoke(app, list(args), input=input, env=env)


@contextmanager
def serving(add: Callable[[S, grpc.Server], None], servicer: S) -> Iterator[str]:
    """``servicer`` on a free port of 127.0.0.1; yields its address."""
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    add(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials())
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None)


def closed_port() -> str:
    """An address where nothing listens."""
    server = grpc.server(ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    server.stop(None).wait()
    return f"127.0.0.1:{port}"
