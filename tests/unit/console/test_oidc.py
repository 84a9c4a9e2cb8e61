"""Sign-in through an OpenID Connect issuer: a real one served by the test (``issuer``), the
console driven through login → issuer → callback → a page that needs a role, as a browser would."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from screwops_console import __main__ as entry
from screwops_console.accounts import AccountFile
from screwops_console.config import ConsoleSettings
from screwops_settings import Role

from tests.unit.console.conftest import Console, form_token
from tests.unit.console.fakes import Fakes
from tests.unit.console.issuer import CLIENT_ID, CLIENT_SECRET, Issuer, rsa_key, serving

CAROL = {"sub": "3f1c-77", "preferred_username": "carol", "groups": ["screwops-operators"]}


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    with serving(Issuer(user=dict(CAROL))) as started:
        yield started


def oidc(issuer: Issuer, **overrides: Any) -> dict[str, Any]:
    """The console's settings for ``issuer``."""
    return {
        "oidc_issuer": issuer.url,
        "oidc_client_id": CLIENT_ID,
        "oidc_client_secret": CLIENT_SECRET,
        "oidc_roles": {
            "screwops-viewers": Role.VIEWER,
            "screwops-labelers": Role.LABELER,
            "screwops-operators": Role.OPERATOR,
        },
        "oidc_display_name": "Factory SSO",
        **overrides,
    }


def sign_in(console: TestClient, issuer: Issuer, back_to: str = "/pipeline") -> httpx2.Response:
    """What a browser does after "Sign in with": to the issuer, which approves the user at once,
    and back to the console's callback, whose answer is returned."""
    start = console.get("/login/oidc", params={"next": back_to}, follow_redirects=False)
    assert start.status_code == 302, start.text
    assert start.headers["location"].startswith(f"{issuer.url}/authorize?")
    approved = httpx2.get(start.headers["location"], follow_redirects=False)
    assert approved.status_code == 302, approved.text
    assert approved.headers["location"].startswith("http://testserver/login/oidc/callback?")
    answer: httpx2.Response = console.get(approved.headers["location"], follow_redirects=False)
    return answer


def test_the_login_page_offers_the_issuer_only_when_one_is_configured(
    make_console: Console, issuer: Issuer
) -> None:
    with_issuer = make_console(user=None, **oidc(issuer)).get("/login?next=/labeling")
    without = make_console(user=None).get("/login")
    assert "Sign in with Factory SSO" in with_issuer.text
    assert 'href="/login/oidc?next=%2Flabeling"' in with_issuer.text
    assert "Sign in with" not in without.text
    # The issuer's redirect back is a navigation from another site: a strict cookie stays behind.
    assert "samesite=lax" in with_issuer.headers["set-cookie"].lower()
    assert "samesite=strict" in without.headers["set-cookie"].lower()
    assert make_console(user=None).get("/login/oidc").status_code == 404


def test_a_sign_in_takes_the_users_name_and_role_from_the_id_token(
    make_console: Console, issuer: Issuer, fakes: Fakes
) -> None:
    console = make_console(user=None, **oidc(issuer))
    before = form_token(console)

    answer = sign_in(console, issuer, back_to="/pipeline")

    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/pipeline"
    assert "carol (operator)" in console.get("/pipeline").text
    token = form_token(console)
    assert token != before  # a new session, as a local login starts
    promote = console.post(
        "/pipeline/promote",
        data={"version": "1", "reason": "fewer false rejects", "csrf_token": token},
        follow_redirects=False,
    )
    assert promote.status_code == 303
    assert fakes.registry.production == 1
    assert fakes.registry.requests[-1].actor == "carol"
    sent_as = fakes.registry.metadata[-1]
    assert (sent_as["x-screwops-on-behalf-of"], sent_as["x-screwops-on-behalf-of-role"]) == (
        "carol",
        "operator",
    )


def test_a_public_client_signs_in_with_pkce_and_no_secret(
    make_console: Console, issuer: Issuer
) -> None:
    issuer.public = True
    console = make_console(user=None, **oidc(issuer, oidc_client_secret=""))
    assert sign_in(console, issuer).status_code == 303
    assert "carol (operator)" in console.get("/").text


def test_the_highest_mapped_role_wins_and_the_name_falls_back_to_sub(
    make_console: Console, issuer: Issuer
) -> None:
    issuer.user = {"sub": "dave", "groups": ["staff", "screwops-viewers", "screwops-labelers"]}
    console = make_console(user=None, **oidc(issuer))
    assert sign_in(console, issuer).status_code == 303
    assert "dave (labeler)" in console.get("/").text


def test_a_role_claim_inside_an_object_is_reached_by_a_dotted_path(
    make_console: Console, issuer: Issuer
) -> None:
    issuer.user = {"sub": "x", "preferred_username": "erin", "realm_access": {"roles": ["ops"]}}
    settings = oidc(issuer, oidc_role_claim="realm_access.roles", oidc_roles={"ops": "operator"})
    console = make_console(user=None, **settings)
    assert sign_in(console, issuer).status_code == 303
    assert "erin (operator)" in console.get("/").text


def test_a_viewer_from_the_issuer_cannot_promote(
    make_console: Console, issuer: Issuer, fakes: Fakes
) -> None:
    issuer.user = {**CAROL, "groups": ["screwops-viewers"]}
    console = make_console(user=None, **oidc(issuer))
    assert sign_in(console, issuer).status_code == 303

    answer = console.post(
        "/pipeline/promote",
        data={"version": "1", "reason": "r", "csrf_token": form_token(console)},
    )

    assert answer.status_code == 403
    assert "needs the operator role; carol is viewer" in answer.text
    assert fakes.registry.production == 2
    assert not any(r.DESCRIPTOR.name == "PromoteRequest" for r in fakes.registry.requests)


def test_a_user_with_no_mapped_role_is_refused_with_a_page_that_says_why(
    make_console: Console, issuer: Issuer
) -> None:
    issuer.user = {**CAROL, "groups": ["staff"]}
    console = make_console(user=None, **oidc(issuer))

    answer = sign_in(console, issuer)

    assert answer.status_code == 403
    assert "carol has no role in the console: none of their groups (staff)" in answer.text
    assert 'id="oidc-refused"' in answer.text
    assert console.get("/pipeline", follow_redirects=False).status_code == 303


def test_a_default_role_lets_an_unmapped_user_in_with_that_role(
    make_console: Console, issuer: Issuer
) -> None:
    issuer.user = {**CAROL, "groups": ["staff"]}
    console = make_console(user=None, **oidc(issuer, oidc_default_role="viewer"))
    assert sign_in(console, issuer).status_code == 303
    assert "carol (viewer)" in console.get("/").text


@pytest.mark.parametrize(
    "spoiled",
    [
        {"sign_with": rsa_key()},  # the same key id, another key: the signature fails
        {"audience": "another-client"},
        # authlib alone lets this one through: the audience is not checked while azp names us.
        {"audience": "another-client", "user": {**CAROL, "azp": CLIENT_ID}},
        {"issued_by": "https://another-issuer.example"},
        {"nonce": "a-nonce-of-another-sign-in"},
        {"lifetime_s": -600},
    ],
    ids=[
        "another-key",
        "wrong-audience",
        "wrong-audience-but-azp",
        "wrong-issuer",
        "wrong-nonce",
        "expired",
    ],
)
def test_an_id_token_that_does_not_validate_signs_no_one_in(
    make_console: Console, issuer: Issuer, spoiled: dict[str, Any]
) -> None:
    for name, value in spoiled.items():
        setattr(issuer, name, value)
    console = make_console(user=None, **oidc(issuer))

    answer = sign_in(console, issuer)

    assert answer.status_code == 401
    assert "Factory SSO did not sign you in" in answer.text
    assert console.get("/pipeline", follow_redirects=False).status_code == 303


def test_a_callback_this_browser_did_not_start_is_refused(
    make_console: Console, issuer: Issuer
) -> None:
    victim = make_console(user=None, **oidc(issuer))
    attacker = make_console(user=None, **oidc(issuer))
    start = attacker.get("/login/oidc", follow_redirects=False)
    callback = httpx2.get(start.headers["location"], follow_redirects=False).headers["location"]

    assert victim.get(callback, follow_redirects=False).status_code == 401
    assert victim.get("/", follow_redirects=False).status_code == 303


def test_a_local_accounts_name_from_the_issuer_is_refused(
    make_console: Console, issuer: Issuer
) -> None:
    issuer.user = {**CAROL, "preferred_username": "admin"}
    console = make_console(user=None, **oidc(issuer))
    answer = sign_in(console, issuer)
    assert answer.status_code == 403
    assert "admin is the name of a local account here" in answer.text


def test_logging_out_ends_an_issuers_session(make_console: Console, issuer: Issuer) -> None:
    console = make_console(user=None, **oidc(issuer))
    assert sign_in(console, issuer).status_code == 303
    logout = console.post(
        "/logout", data={"csrf_token": form_token(console)}, follow_redirects=False
    )
    assert logout.status_code == 303
    assert console.get("/pipeline", follow_redirects=False).status_code == 303


def test_an_issuer_counts_as_authentication_beyond_loopback(tmp_path: Path) -> None:
    accounts = AccountFile(tmp_path / "accounts")
    settings = ConsoleSettings(
        http_host="0.0.0.0",
        accounts_file=accounts.path,
        oidc_issuer="https://sso.example/realms/factory",
        oidc_client_id=CLIENT_ID,
        oidc_default_role="viewer",
    )
    assert entry.open_exposure(settings, accounts) is None


@pytest.mark.parametrize(
    ("settings", "why"),
    [
        ({"oidc_issuer": "http://sso.example"}, "must be an https URL"),
        ({"oidc_client_id": ""}, "needs oidc_client_id"),
        ({"oidc_scopes": ["profile"]}, "must include 'openid'"),
        ({"oidc_roles": {}}, "needs oidc_roles or oidc_default_role"),
    ],
)
def test_an_issuer_that_could_sign_no_one_in_is_refused_at_start(
    settings: dict[str, Any], why: str
) -> None:
    values = {
        "oidc_issuer": "https://sso.example",
        "oidc_client_id": CLIENT_ID,
        "oidc_roles": {"ops": "operator"},
        **settings,
    }
    with pytest.raises(ValidationError, match=why):
        ConsoleSettings(**values)
