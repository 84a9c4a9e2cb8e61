"""The console app in-process (FastAPI's TestClient) against the fake servicers."""

from __future__ import annotations

import functools
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.metrics import MeterProvider
from screwops_console.accounts import AccountFile
from screwops_console.config import ConsoleSettings
from screwops_console.web import create_app
from screwops_settings import Role

from tests.unit.console.fakes import (
    FakePrometheus,
    Fakes,
    populated,
    serving,
    serving_prometheus,
)

Console = Callable[..., TestClient]

USERS = {"admin": Role.ADMIN, "ops": Role.OPERATOR, "lab": Role.LABELER, "vic": Role.VIEWER}
"""The accounts every console of these tests has; each one's password is :func:`password`."""
SESSION_SECRET = "a-session-secret-for-the-console-tests"


def password(name: str) -> str:
    return f"{name}'s password, long enough"


@functools.cache
def accounts_file() -> Path:
    """An accounts file of :data:`USERS`, written once (argon2 hashing is slow on purpose)."""
    path = Path(tempfile.mkdtemp(prefix="screwops-console-accounts-")) / "accounts"
    accounts = AccountFile(path)
    for name, role in USERS.items():
        accounts.add(name, role, password(name))
    return path


def settings_for(address: str, **overrides: Any) -> ConsoleSettings:
    """Settings with every service at ``address`` (one server hosts the four fakes) and the
    accounts of :data:`USERS`."""
    values: dict[str, Any] = {
        "gateway_address": address,
        "ingestion_address": address,
        "labeling_address": address,
        "registry_address": address,
        "gateway_token": "",
        "rpc_timeout_s": 5.0,
        "accounts_file": accounts_file(),
        "first_admin": False,
        "session_secret": SESSION_SECRET,
        **overrides,
    }
    return ConsoleSettings(**values)


def form_token(client: TestClient) -> str:
    """The form token of ``client``'s session, as the login page's form carries it."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
    assert found is not None
    return found.group(1)


def log_in(client: TestClient, name: str) -> None:
    """Log ``client`` in as ``name`` through the login form."""
    answer = client.post(
        "/login",
        data={"name": name, "password": password(name), "csrf_token": form_token(client)},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text


class SignedIn(TestClient):
    """A browser logged in to the console: every form it posts carries its session's form token,
    as the console's pages put it in every form."""

    token = ""

    def post(self, url: Any, **kwargs: Any) -> Any:
        data = kwargs.pop("data", None) or {}
        return super().post(url, data={"csrf_token": self.token, **data}, **kwargs)


@pytest.fixture
def fakes() -> Fakes:
    return populated()


@pytest.fixture
def address(fakes: Fakes) -> Iterator[str]:
    with serving(fakes) as where:
        yield where


@pytest.fixture
def prometheus(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakePrometheus]:
    """A fake Prometheus where the consoles started after it look for one (the stack's
    ``SCREWOPS_TELEMETRY__PROMETHEUS_URL``), so no test reaches a real one."""
    fake = FakePrometheus()
    with serving_prometheus(fake) as url:
        monkeypatch.setenv("SCREWOPS_TELEMETRY__PROMETHEUS_URL", url)
        yield fake


@pytest.fixture
def make_console(fakes: Fakes, address: str, prometheus: FakePrometheus) -> Iterator[Console]:
    """Start a console with settings overrides; every one started is stopped after the test.
    Its Prometheus is always the fake one (:func:`prometheus`)."""
    clients: list[TestClient] = []

    def start(user: str | None = "ops", **overrides: Any) -> TestClient:
        """A console logged in as ``user`` (None: nobody)."""
        settings = settings_for(overrides.pop("address", address), **overrides)
        app = create_app(settings, fakes.runs, fakes.reports, meter_provider=MeterProvider())
        client = SignedIn(app) if user else TestClient(app)
        client.__enter__()
        clients.append(client)
        if isinstance(client, SignedIn) and user:
            log_in(client, user)
            client.token = form_token(client)
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def console(make_console: Console) -> TestClient:
    return make_console()
