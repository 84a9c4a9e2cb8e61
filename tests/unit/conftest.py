"""Fixtures the unit tests share."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from screwops_settings import GrpcTlsSettings

from tests.support import GRPC_TLS_VARIABLES, grpc_tls_home, use_grpc_tls


@pytest.fixture(scope="session", autouse=True)
def grpc_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcTlsSettings]:
    """A CA and gRPC server certificate of the unit tests' own, which every in-process server
    listens with and every client trusts (the settings' defaults), so no test needs the stack."""
    tls = grpc_tls_home(tmp_path_factory.mktemp("tls-home"))
    saved = {name: os.environ.get(name) for name in GRPC_TLS_VARIABLES}
    use_grpc_tls(tls)
    yield tls
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Start a settings test from the defaults, whatever the machine running the tests exports
    (a module opts in with ``pytestmark = pytest.mark.usefixtures("clean_environment")``); the
    monkeypatch it returns sets the variables a test wants on top. The session's own gRPC TLS
    variables (:func:`grpc_tls`) stay, so servers and clients still find their certificates."""
    for name in [n for n in os.environ if n.startswith("SCREWOPS_")]:
        if name not in GRPC_TLS_VARIABLES:
            monkeypatch.delenv(name)
    return monkeypatch
