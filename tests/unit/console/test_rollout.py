"""The pipeline page's rollout panel: the registry's rollout (strategy, steps, share, versions and
their thresholds, state, changes) beside the gateways' comparison read from Prometheus, and the
operator's advance, pause, resume and abort, sent to the registry as the logged-in user."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from screwops.v1 import registry_pb2

from tests.unit.console.conftest import Console
from tests.unit.console.fakes import T0, FakePrometheus, Fakes, canary, stamp

FIGURES: dict[str, list[tuple[dict[str, str], float]]] = {
    "rollout_agreement_total": [({"agreement": "agree"}, 396.0), ({"agreement": "disagree"}, 4.2)],
    "rollout_score_difference": [({}, 0.0123)],
    "model_calls_total": [
        ({"model_version": "2", "role": "production", "path": "response", "outcome": a}, n)
        for a, n in (("answered", 3000.0), ("no_part", 3.0))
    ]
    + [
        (
            {"model_version": "2", "role": "production", "path": "off_path", "outcome": "answered"},
            398,
        ),
        (
            {"model_version": "1", "role": "canary", "path": "response", "outcome": "answered"},
            398.0,
        ),
        ({"model_version": "1", "role": "canary", "path": "response", "outcome": "failed"}, 2.0),
    ],
    "model_call_duration_seconds_bucket": [
        ({"model_version": "2", "role": "production", "path": "response"}, 0.0081),
        ({"model_version": "1", "role": "canary", "path": "response"}, 0.0123),
        ({"model_version": "2", "role": "production", "path": "off_path"}, float("nan")),
    ],
}


@pytest.fixture
def figures(fakes: Fakes, prometheus: FakePrometheus) -> FakePrometheus:
    """A canary of v1 beside production v2 at its second step, and the gateways' figures."""
    fakes.registry.rollout = canary(1, step=1)
    prometheus.series = dict(FIGURES)
    return prometheus


def panel(page: str) -> str:
    return page[page.index('<section id="rollout">') : page.index('<section id="runs">')]


def notice(location: str, name: str = "notice") -> str:
    return parse_qs(urlsplit(location).query)[name][0]


def changes(fakes: Fakes) -> list[registry_pb2.ChangeRolloutRequest]:
    return [r for r in fakes.registry.requests if r.DESCRIPTOR.name == "ChangeRolloutRequest"]


@pytest.mark.usefixtures("figures")
def test_the_panel_shows_the_rollout_as_the_registry_records_it(console: TestClient) -> None:
    shown = panel(console.get("/pipeline").text)

    assert 'id="rollout-v1-7"' in shown
    assert '<span class="badge">canary</span>' in shown
    assert re.search(r'id="rollout-state">running<', shown)
    assert re.search(r'id="rollout-candidate">v1</strong> \(threshold 0\.4500\)', shown)
    assert re.search(r'id="rollout-production">v2</strong> \(threshold 0\.0372\)', shown)
    steps = re.findall(r"<li( class=\"current\" aria-current=\"step\")?>([^<]+)</li>", shown)
    assert steps == [("", "5 %"), (' class="current" aria-current="step"', "25 %"), ("", "100 %")]
    assert re.search(r'id="rollout-share">25 %</strong> of the requests answered by', shown)
    assert "step 2 of 3" in shown
    assert "at least 200 inspections and 300 s" in shown
    assert "line-3" in shown
    # The changes, with who made each and why: an abort's reason is read here.
    assert "step 1 held: 0 of 400 disagreed" in shown
    assert shown.index(">started<") < shown.index(">advanced<")


@pytest.mark.usefixtures("figures")
def test_the_panel_compares_the_two_versions_from_prometheus(
    console: TestClient, prometheus: FakePrometheus
) -> None:
    asked_from = datetime.now(UTC)
    shown = panel(console.get("/pipeline").text)

    assert re.search(r'id="rollout-agree">396<', shown)
    assert re.search(r'id="rollout-disagree">4<', shown)
    assert "(1.0 % disagreement)" in shown
    assert "mean score difference 0.0123" in shown
    canary_row = shown[shown.index('id="side-canary-response-1"') :]
    assert re.match(
        r'id="side-canary-response-1">\s*<td>v1</td><td>canary</td><td>answering</td>\s*'
        r"<td>398</td><td>0</td><td>2</td>\s*<td>12\.3 ms</td>",
        canary_row,
    )
    production_row = shown[shown.index('id="side-production-response-2"') :]
    assert "<td>3000</td><td>3</td><td>0</td>" in production_row
    assert "8.1 ms" in production_row
    off_path = shown[shown.index('id="side-production-off_path-2"') :]
    assert "off the response path" in off_path
    assert "<td>—</td>" in off_path  # no latency quantile to show (NaN)
    rows = re.findall(r'id="side-(\w+)-(\w+)-(\d)"', shown)
    assert rows == [
        ("production", "response", "2"),
        ("production", "off_path", "2"),
        ("canary", "response", "1"),
    ]
    # Every query names the model and the rollout's versions only, over the whole rollout,
    # evaluated now.
    assert len(prometheus.queries) == 4
    since_start = (asked_from - T0).total_seconds()
    for query, at in prometheus.queries:
        assert 'model_name="screw-classifier"' in query
        assert 'model_version="1"' in query or 'model_version=~"2|1"' in query
        windows = {int(w) for w in re.findall(r"\[(\d+)s\]", query)}
        assert len(windows) == 1
        assert since_start <= windows.pop() <= since_start + 60
        assert asked_from.timestamp() - 1 <= at <= datetime.now(UTC).timestamp() + 1


def test_an_ended_rollout_is_compared_up_to_its_end_and_offers_nothing(
    console: TestClient, fakes: Fakes, prometheus: FakePrometheus
) -> None:
    rollout = canary(1, step=0)
    rollout.state = registry_pb2.ROLLOUT_STATE_ABORTED
    rollout.share = 0
    rollout.changes.add(
        kind=registry_pb2.ROLLOUT_CHANGE_KIND_ABORTED,
        actor="monitor",
        reason="disagreement 9.0 % above 2 % (binomial p=0.0001)",
        changed_at=stamp(T0 + timedelta(hours=1)),
        sequence=8,
    )
    fakes.registry.rollout = rollout

    shown = panel(console.get("/pipeline").text)

    assert re.search(r'id="rollout-state">aborted<', shown)
    assert "disagreement 9.0 % above 2 % (binomial p=0.0001)" in shown
    assert "<form" not in shown
    for query, at in prometheus.queries:
        assert at == (T0 + timedelta(hours=1)).timestamp()
        assert "[3600s]" in query


@pytest.mark.usefixtures("figures")
def test_an_operator_gets_the_actions_of_the_rollouts_state(
    console: TestClient, fakes: Fakes
) -> None:
    running = panel(console.get("/pipeline").text)
    fakes.registry.rollout.state = registry_pb2.ROLLOUT_STATE_PAUSED
    paused = panel(console.get("/pipeline").text)

    def offered(shown: str) -> list[str]:
        return re.findall(r'action="/pipeline/rollout/(\w+)"', shown)

    assert offered(running) == ["advance", "pause", "abort"]
    assert offered(paused) == ["resume", "abort"]
    forms = running.split("<form")[1:]
    token = console.token  # type: ignore[attr-defined]
    ids = set()
    for form in forms:
        assert 'name="rollout_id" value="v1-7"' in form
        assert 'name="expect_step" value="1"' in form
        assert f'name="csrf_token" value="{token}"' in form
        found = re.search(r'name="request_id" value="([0-9a-f-]{36})"', form)
        assert found is not None
        ids.add(found.group(1))
    assert len(ids) == len(forms), "each action names its own request"


@pytest.mark.parametrize("user", ["vic", "lab"])
@pytest.mark.usefixtures("figures")
def test_below_operator_the_panel_shows_without_actions_and_refuses_them(
    make_console: Console, fakes: Fakes, user: str
) -> None:
    console = make_console(user=user)

    shown = panel(console.get("/pipeline").text)
    answers = [
        console.post(f"/pipeline/rollout/{action}", data={"reason": "r"})
        for action in ("advance", "pause", "resume", "abort")
    ]

    assert 'id="rollout-v1-7"' in shown
    assert re.search(r'id="rollout-agree">396<', shown)
    assert "<form" not in shown
    assert 'id="rollout-abort"' not in shown
    assert [a.status_code for a in answers] == [403] * 4
    assert f"this needs the operator role; {user} is" in answers[0].text
    assert changes(fakes) == []
    assert fakes.registry.rollout.state == registry_pb2.ROLLOUT_STATE_RUNNING


@pytest.mark.parametrize(
    ("action", "state", "kind"),
    [
        ("advance", registry_pb2.ROLLOUT_STATE_RUNNING, "advanced"),
        ("pause", registry_pb2.ROLLOUT_STATE_PAUSED, "paused"),
        ("abort", registry_pb2.ROLLOUT_STATE_ABORTED, "aborted"),
    ],
)
@pytest.mark.parametrize(("user", "role"), [("ops", "operator"), ("admin", "admin")])
@pytest.mark.usefixtures("figures")
def test_an_action_changes_the_rollout_as_the_logged_in_user(
    make_console: Console, fakes: Fakes, action: str, state: int, kind: str, user: str, role: str
) -> None:
    console = make_console(user=user)

    answer = console.post(
        f"/pipeline/rollout/{action}",
        data={
            "actor": "mallory",
            "reason": " line 3 says so ",
            "request_id": "rq-7",
            "rollout_id": "v1-7",
            "expect_step": "1",
        },
        follow_redirects=False,
    )

    assert answer.status_code == 303
    [sent] = changes(fakes)
    assert (sent.model_name, sent.rollout_id, sent.expect_step) == ("screw-classifier", "v1-7", 1)
    assert (sent.actor, sent.reason, sent.request_id) == (user, "line 3 says so", "rq-7")
    sent_as = fakes.registry.metadata[-1]
    assert (sent_as["x-screwops-on-behalf-of"], sent_as["x-screwops-on-behalf-of-role"]) == (
        user,
        role,
    )
    assert fakes.registry.rollout.state == state
    said = notice(answer.headers["location"])
    assert said.startswith(f"rollout v1-7 {kind}: v1 beside v2, step ")
    assert said.endswith(f"(by {user}: line 3 says so)")


@pytest.mark.usefixtures("figures")
def test_resume_sends_the_paused_candidate_its_share_again(
    console: TestClient, fakes: Fakes
) -> None:
    fakes.registry.rollout.state = registry_pb2.ROLLOUT_STATE_PAUSED
    fakes.registry.rollout.share = 0

    answer = console.post(
        "/pipeline/rollout/resume", data={"reason": "checked the line"}, follow_redirects=False
    )

    assert notice(answer.headers["location"]) == (
        "rollout v1-7 resumed: v1 beside v2, step 2 of 3, 25% to the candidate now "
        "(by ops: checked the line)"
    )
    [sent] = changes(fakes)
    assert len(sent.request_id) == 36  # a form without one gets one
    assert not sent.HasField("expect_step")


@pytest.mark.usefixtures("figures")
def test_an_action_taken_on_a_step_the_rollout_has_left_is_refused(
    console: TestClient, fakes: Fakes
) -> None:
    page = console.post(
        "/pipeline/rollout/advance", data={"reason": "looks good", "expect_step": "0"}
    ).text

    assert "registry: FAILED_PRECONDITION: the rollout is at step 1, not 0" in page
    assert fakes.registry.rollout.step == 1


@pytest.mark.usefixtures("figures")
def test_an_action_needs_a_reason_the_form_token_and_a_known_name(
    console: TestClient, fakes: Fakes
) -> None:
    no_reason = console.post("/pipeline/rollout/abort", data={"reason": "  "}).text
    forged = console.post("/pipeline/rollout/abort", data={"reason": "r", "csrf_token": "forged"})
    cross_site = console.post(
        "/pipeline/rollout/abort", data={"reason": "r"}, headers={"origin": "https://evil.example"}
    )
    unknown = console.post("/pipeline/rollout/complete", data={"reason": "r"})

    assert "abort needs a reason" in no_reason
    assert forged.status_code == 403
    assert "this form is stale or was not sent from the console" in forged.text
    assert cross_site.status_code == 403
    assert unknown.status_code == 404
    assert changes(fakes) == []
    assert fakes.registry.rollout.state == registry_pb2.ROLLOUT_STATE_RUNNING


def test_nobody_logged_in_changes_nothing(make_console: Console, fakes: Fakes) -> None:
    fakes.registry.rollout = canary()
    answer = make_console(user=None).post("/pipeline/rollout/abort", data={"reason": "r"})
    assert answer.status_code == 403
    assert changes(fakes) == []


@pytest.mark.usefixtures("figures")
def test_prometheus_down_leaves_the_registrys_part_of_the_panel(
    console: TestClient, prometheus: FakePrometheus
) -> None:
    prometheus.down = True

    shown = panel(console.get("/pipeline").text)

    assert re.search(r'id="rollout-comparison-error">comparison: UNAVAILABLE: prometheus', shown)
    assert "not ready" in shown
    assert re.search(r'id="rollout-share">25 %<', shown)
    assert 'id="rollout-abort"' in shown


def test_with_no_rollout_yet_the_panel_says_so_and_asks_prometheus_nothing(
    console: TestClient, prometheus: FakePrometheus
) -> None:
    shown = panel(console.get("/pipeline").text)

    assert "No rollout yet" in shown
    assert "<form" not in shown
    assert prometheus.queries == []


def test_a_shadow_says_its_share_is_mirrored(
    console: TestClient, fakes: Fakes, prometheus: FakePrometheus
) -> None:
    rollout = canary(1, step=0)
    rollout.strategy = registry_pb2.ROLLOUT_STRATEGY_SHADOW
    del rollout.steps[1:]
    rollout.share = 5
    fakes.registry.rollout = rollout

    shown = panel(console.get("/pipeline").text)

    assert '<span class="badge">shadow</span>' in shown
    assert re.search(r'id="rollout-share">5 %</strong> of the requests mirrored to', shown)
    assert "No call counted for either version yet." in shown
