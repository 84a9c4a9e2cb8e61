"""Login: local accounts with argon2 hashes, the signed session cookie, the form token on every
POST, and the console's refusal to listen beyond loopback with no account."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from screwops_console import __main__ as entry
from screwops_console.accounts import AccountError, AccountFile, first_admin
from screwops_console.config import ConsoleSettings
from screwops_console.session import session_secret
from screwops_settings import Role

from tests.unit.console.conftest import Console, form_token, log_in, password
from tests.unit.console.fakes import Fakes


def test_a_page_without_a_login_goes_to_the_login_page(make_console: Console) -> None:
    console = make_console(user=None)
    answer = console.get("/pipeline?x=1", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=%2Fpipeline%3Fx%3D1"
    assert 'id="login-form"' in console.get("/").text


def test_the_probes_and_static_files_need_no_login(make_console: Console) -> None:
    console = make_console(user=None)
    assert console.get("/healthz").json()["status"] == "ok"
    assert console.get("/static/console.css").status_code == 200


def test_a_post_without_a_session_is_refused_and_changes_nothing(
    make_console: Console, fakes: Fakes
) -> None:
    console = make_console(user=None)
    token = form_token(console)  # even with the anonymous session's own form token
    answer = console.post("/pipeline/rollback", data={"reason": "r", "csrf_token": token})
    assert answer.status_code == 403
    assert fakes.registry.production == 2
    assert fakes.registry.requests == []


@pytest.mark.parametrize("token", [None, "", "not-the-sessions-token"])
def test_a_post_without_the_sessions_form_token_is_refused_and_changes_nothing(
    make_console: Console, fakes: Fakes, token: str | None
) -> None:
    console = make_console(user=None)
    log_in(console, "ops")
    data = {"reason": "r"} | ({} if token is None else {"csrf_token": token})
    answer = console.post("/pipeline/rollback", data=data)
    assert answer.status_code == 403
    assert "reload it" in answer.text
    assert fakes.registry.production == 2
    assert not any(r.DESCRIPTOR.name == "RollbackRequest" for r in fakes.registry.requests)


def test_a_wrong_password_logs_no_one_in(make_console: Console) -> None:
    console = make_console(user=None)
    answer = console.post(
        "/login",
        data={"name": "ops", "password": password("lab"), "csrf_token": form_token(console)},
    )
    unknown = console.post(
        "/login",
        data={"name": "nobody", "password": "whatever", "csrf_token": form_token(console)},
    )
    assert (answer.status_code, unknown.status_code) == (401, 401)
    assert "Wrong name or password." in answer.text
    assert console.get("/pipeline", follow_redirects=False).status_code == 303


def test_a_login_form_needs_its_token(make_console: Console) -> None:
    console = make_console(user=None)
    answer = console.post("/login", data={"name": "ops", "password": password("ops")})
    assert answer.status_code == 403
    assert console.get("/pipeline", follow_redirects=False).status_code == 303


def test_the_session_cookie_is_httponly_strict_and_new_after_the_login(
    make_console: Console,
) -> None:
    console = make_console(user=None)
    before = form_token(console)
    answer = console.post(
        "/login",
        data={
            "name": "lab",
            "password": password("lab"),
            "csrf_token": before,
            "next": "/pipeline",
        },
        follow_redirects=False,
    )
    cookie = answer.headers["set-cookie"].lower()
    assert answer.headers["location"] == "/pipeline"
    assert cookie.startswith("screwops_console_session=")
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "secure" not in cookie  # development over http
    assert form_token(console) != before
    assert "lab (labeler)" in console.get("/").text


def test_secure_cookies_are_marked_secure(make_console: Console) -> None:
    console = make_console(user=None, secure_cookies=True)
    assert "secure" in console.get("/login").headers["set-cookie"].lower()


def test_a_login_sends_on_to_this_console_only(make_console: Console) -> None:
    console = make_console(user=None)
    answer = console.post(
        "/login",
        data={
            "name": "ops",
            "password": password("ops"),
            "csrf_token": form_token(console),
            "next": "//evil.example/x",
        },
        follow_redirects=False,
    )
    assert answer.headers["location"] == "/"


def test_logging_out_ends_the_session(make_console: Console) -> None:
    console = make_console()
    assert console.post("/logout", follow_redirects=False).status_code == 303
    assert console.get("/pipeline", follow_redirects=False).status_code == 303


def test_an_account_removed_from_the_file_is_logged_out(
    make_console: Console, tmp_path: Path
) -> None:
    accounts = AccountFile(tmp_path / "accounts")
    accounts.add("temp", Role.OPERATOR, password("temp"))
    accounts.add("other", Role.VIEWER, password("other"))
    console = make_console(user=None, accounts_file=accounts.path)
    log_in(console, "temp")
    assert console.get("/pipeline", follow_redirects=False).status_code == 200
    accounts.path.write_text(
        "".join(
            line + "\n" for line in accounts.path.read_text().splitlines() if "temp" not in line
        )
    )
    assert console.get("/pipeline", follow_redirects=False).status_code == 303


def test_accounts_are_argon2_hashes_in_an_owner_only_file(tmp_path: Path) -> None:
    accounts = AccountFile(tmp_path / "console" / "accounts")
    accounts.add("alice", Role.OPERATOR, "first password!")
    accounts.add("alice", Role.LABELER, "second password!")

    [line] = accounts.path.read_text().splitlines()
    assert line.startswith("alice:labeler:$argon2id$")
    assert "password" not in line
    assert stat.S_IMODE(accounts.path.stat().st_mode) == 0o600
    assert AccountFile(accounts.path).verify("alice", "second password!") is not None
    assert accounts.verify("alice", "first password!") is None
    with pytest.raises(AccountError, match="12\\+ characters"):
        accounts.add("bob", Role.VIEWER, "short")
    with pytest.raises(AccountError, match="not a valid name"):
        accounts.add("bob:admin", Role.VIEWER, "long enough password")


def test_a_malformed_accounts_file_says_where(tmp_path: Path) -> None:
    path = tmp_path / "accounts"
    path.write_text("alice:boss:$argon2id$x\n")
    with pytest.raises(AccountError, match="accounts:1: role 'boss' is not one of viewer"):
        AccountFile(path).names()


def test_the_first_admin_gets_a_generated_password_in_an_owner_only_file(tmp_path: Path) -> None:
    accounts = AccountFile(tmp_path / "accounts")
    password_file = tmp_path / "admin-password"

    assert first_admin(accounts, password_file)
    assert not first_admin(accounts, password_file)  # only while there is no account
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    admin = accounts.verify("admin", password_file.read_text().strip())
    assert admin is not None
    assert admin.role is Role.ADMIN


def test_the_session_secret_is_generated_once_into_an_owner_only_file(tmp_path: Path) -> None:
    settings = ConsoleSettings(stack={"home": tmp_path})
    secret = session_secret(settings)
    path = tmp_path / "secrets" / "console" / "session-secret"

    assert len(secret) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert session_secret(settings) == secret
    assert session_secret(ConsoleSettings(session_secret="given-secret")) == "given-secret"


@pytest.mark.parametrize(
    ("host", "refused"),
    [("0.0.0.0", True), ("10.1.2.3", True), ("127.0.0.1", False), ("::1", False)],
)
def test_no_account_beyond_loopback_is_refused(tmp_path: Path, host: str, refused: bool) -> None:
    settings = ConsoleSettings(http_host=host, accounts_file=tmp_path / "accounts")
    refusal = entry.open_exposure(settings, AccountFile(tmp_path / "accounts"))
    assert (refusal is not None) == refused
    if refusal is not None:
        assert f"refuses to listen on {host} with no account" in refusal
        assert "add-user" in refusal


def test_an_account_lets_the_console_listen_beyond_loopback(tmp_path: Path) -> None:
    accounts = AccountFile(tmp_path / "accounts")
    accounts.add("alice", Role.ADMIN, "a long enough password")
    settings = ConsoleSettings(http_host="0.0.0.0", accounts_file=accounts.path)
    assert entry.open_exposure(settings, accounts) is None


def test_add_user_reads_the_password_from_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "accounts"
    monkeypatch.setenv("SCREWOPS_CONSOLE_ACCOUNTS_FILE", str(path))
    monkeypatch.setattr("sys.stdin", io.StringIO("bob's long password\n"))

    entry.main(["add-user", "bob", "labeler"])

    account = AccountFile(path).verify("bob", "bob's long password")
    assert account is not None
    assert account.role is Role.LABELER
    assert "bob (labeler) written to" in capsys.readouterr().out


def test_a_client_of_another_console_cannot_reuse_a_cookie_signed_elsewhere(
    make_console: Console,
) -> None:
    console = make_console()
    other: TestClient = make_console(user=None, session_secret="another-console-secret-value")
    other.cookies.update(console.cookies)
    assert other.get("/pipeline", follow_redirects=False).status_code == 303
