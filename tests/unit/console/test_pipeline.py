"""The pipeline page: dataset versions with their reports, runs with learning curves, model
versions with lineage, and promote/rollback and release/refusal through the registry."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient
from screwops_console.records import GateVerdict
from screwops_contracts.runs import RunRecord
from screwops_errors import UnavailableError

from tests.unit.console.conftest import Console
from tests.unit.console.fakes import Fakes, closed_port


def figure(html: str, metric: str) -> str:
    """The figure of ``metric`` in ``html``, from its label to its gate verdict."""
    start = html.index(f'data-metric="{metric}"')
    end = html.find('<span class="metric', start)
    return html[start : end if end != -1 else None]


def notice(location: str, name: str = "notice") -> str:
    return parse_qs(urlsplit(location).query)[name][0]


def test_dataset_versions_are_listed_newest_first_with_their_reports(console: TestClient) -> None:
    page = console.get("/pipeline").text
    assert page.index('id="dataset-screws-2"') < page.index('id="dataset-screws-1"')
    v2 = page[page.index('id="dataset-screws-2"') : page.index('id="dataset-screws-1"')]
    assert "rejected" in v2
    assert "class_balance: bad is 4% of images" in v2
    assert "min_images_per_class" not in v2  # passed checks are not listed
    assert 'href="/reports/screws/v2"' in v2
    assert "passed" in page[page.index('id="dataset-screws-1"') :]


def test_a_version_without_a_report_says_so(console: TestClient, fakes: Fakes) -> None:
    fakes.reports.reports.clear()
    assert console.get("/pipeline").text.count("not validated") == 2


def test_runs_are_drawn_as_learning_curves(console: TestClient, fakes: Fakes) -> None:
    page = console.get("/pipeline").text
    run = page[page.index('id="run-run-000000000002"') : page.index('id="run-run-000000000001"')]
    assert "6/10 epochs" in run
    assert "best epoch 5" in run
    assert run.count("<svg") == 2
    for metric in ("loss", "val_loss", "accuracy", "val_accuracy"):
        assert f'data-metric="{metric}"' in run
    points = re.search(r'data-metric="loss" points="([^"]+)"', run)
    assert points is not None
    assert len(points.group(1).split()) == 6
    assert fakes.runs.limits == [10]


def test_a_run_without_epochs_has_no_chart(console: TestClient, fakes: Fakes) -> None:
    fakes.runs.runs = [fakes.runs.runs[0].model_copy(update={"epochs": [], "status": "running"})]
    page = console.get("/pipeline").text
    assert "No finished epoch yet." in page
    assert "<svg" not in page


def test_metrics_are_labelled_figures_with_the_gates_verdict_and_floor(
    console: TestClient, fakes: Fakes
) -> None:
    fakes.registry.versions[1].metrics.update(
        {
            "accuracy_ci_low": 0.8812,
            "accuracy_ci_high": 0.9377,
            "test_images": 120.0,
            "true_positives": 37.0,
            "false_negatives": 3.0,
            "recall_thread_damage": 0.75,
            "roc_auc": 0.9731,
            "champion_accuracy": 0.905,
        }
    )
    fakes.reports.gates["evaluations/eval-1.json"] = GateVerdict.model_validate(
        {
            "passed": False,
            "checks": [
                {"name": "test_split_size", "passed": True, "expected": ">= 5 images"},
                {"name": "accuracy", "passed": True, "expected": "> 0.9"},
                {"name": "defect_type_recall", "passed": False, "expected": ">= 0.9 for each"},
                {"name": "champion_comparison", "passed": True, "expected": ">= -0.02"},
            ],
        }
    )
    page = console.get("/pipeline").text
    start = page.index('id="version-1"')
    v1 = page[start : page.index("</tbody>", start)]
    # Rates as percentages, their interval folded in; counts as integers; AUC a number.
    accuracy = figure(v1, "accuracy")
    assert '<span class="label">accuracy</span> <strong>91.0 %</strong>' in accuracy
    assert "(88.1 to 93.8 %)" in accuracy
    assert 'data-metric="accuracy_ci_low"' not in v1
    assert '<span class="label">test images</span> <strong>120</strong>' in figure(
        v1, "test_images"
    )
    assert "<strong>37</strong>" in figure(v1, "true_positives")
    assert "<strong>0.973</strong>" in figure(v1, "roc_auc")
    assert "production&#39;s accuracy</span> <strong>90.5 %</strong>" in figure(
        v1, "champion_accuracy"
    )
    # Beside each metric the gate check that judged it: its verdict and its floor.
    assert '<span class="gate pass"' in accuracy
    assert "gate: pass &gt; 0.9" in accuracy
    assert "gate: pass &gt;= 5 images" in figure(v1, "test_images")
    thread = figure(v1, "recall_thread_damage")
    assert "thread_damage recall</span> <strong>75.0 %</strong>" in thread
    assert '<span class="gate fail"' in thread
    assert "gate: fail &gt;= 0.9 for each" in thread
    assert "gate: pass &gt;= -0.02" in figure(v1, "champion_accuracy")
    assert "gate:" not in figure(v1, "true_positives")  # no check judges it
    assert "gate checks unread" not in v1
    # A check that failed on the production version is shown failed there too.
    v2 = page[page.index('id="version-2"') : page.index('id="version-1"')]
    assert "gate: fail &gt;= 0.9" in figure(v2, "recall")
    assert "defect recall</span> <strong>80.0 %</strong>" in figure(v2, "recall")


def test_a_version_without_its_evaluation_report_shows_its_metrics_ungated(
    console: TestClient, fakes: Fakes
) -> None:
    del fakes.reports.gates["evaluations/eval-2.json"]
    page = console.get("/pipeline").text
    v2 = page[page.index('id="version-2"') : page.index('id="version-1"')]
    assert "<strong>92.0 %</strong>" in figure(v2, "accuracy")
    assert "gate:" not in v2
    assert "gate checks unread (no evaluation report could be read)" in v2


def test_a_runs_metrics_are_labelled_too(console: TestClient) -> None:
    page = console.get("/pipeline").text
    run = page[page.index('id="run-run-000000000002"') :]
    assert '<span class="label">accuracy</span> <strong>93.0 %</strong>' in figure(run, "accuracy")
    assert '<span class="label">ROC AUC</span> <strong>0.970</strong>' in figure(run, "auc")


def test_model_versions_show_metrics_lineage_and_the_production_alias(
    console: TestClient,
) -> None:
    page = console.get("/pipeline").text
    assert re.search(r'id="production-version">v2<', page)
    v2 = page[page.index('id="version-2"') : page.index('id="version-1"')]
    assert "production" in v2
    assert "92.0 %" in figure(v2, "accuracy")
    # The kind and the threshold the version is served with, not rounded away.
    assert '<td class="kind">good-only</td>' in v2
    assert ">0.0372</td>" in v2
    assert re.search(r'\(good-only, threshold <span id="production-threshold">0\.0372<', page)
    assert 'href="#run-run-000000000002"' in v2
    assert 'href="#dataset-screws-2"' in v2
    assert "eval-2" in v2
    assert "models/evaluations/eval-2.json" in v2
    # Promote is offered for what can be served: not the production one, not a failed one.
    assert 'id="promote-1"' in page
    assert 'id="promote-2"' not in page
    assert 'id="promote-3"' not in page
    assert "check inference failed" in page
    assert 'id="rollback"' in page


def test_promote_moves_the_alias_as_the_logged_in_user(console: TestClient, fakes: Fakes) -> None:
    answer = console.post(
        "/pipeline/promote",
        data={"version": "1", "actor": "mallory", "reason": "fewer false rejects"},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert notice(answer.headers["location"]) == (
        "promoted: production v2 → v1 (by ops: fewer false rejects)"
    )
    sent = fakes.registry.requests[-1]
    assert (sent.model_name, sent.version, sent.actor, sent.reason) == (
        "screw-classifier",
        1,
        "ops",
        "fewer false rejects",
    )
    sent_as = fakes.registry.metadata[-1]
    assert (sent_as["x-screwops-on-behalf-of"], sent_as["x-screwops-on-behalf-of-role"]) == (
        "ops",
        "operator",
    )
    page = console.get(answer.headers["location"]).text
    assert re.search(r'id="production-version">v1<', page)
    assert 'name="actor"' not in page  # who moves production is who is logged in


def test_each_move_form_carries_its_own_request_id_and_the_production_it_saw(
    console: TestClient, fakes: Fakes
) -> None:
    page = console.get("/pipeline").text
    ids = re.findall(r'name="request_id" value="([0-9a-f-]{36})"', page)
    assert len(ids) == len(set(ids)) == 2, "the rollback form and version 1's promote form"
    assert page.count('name="expect_version" value="2"') == 2


def test_a_resent_form_sends_the_same_request_id_and_expected_version(
    console: TestClient, fakes: Fakes
) -> None:
    form = {"reason": "r", "request_id": "rq-1", "expect_version": "2"}
    console.post("/pipeline/rollback", data=form, follow_redirects=False)

    sent = fakes.registry.requests[-1]
    assert (sent.request_id, sent.expect_version) == ("rq-1", 2)
    stale = console.post("/pipeline/promote", data={**form, "version": "1"}).text
    assert "registry: FAILED_PRECONDITION: production is v1, not v2" in stale


def test_a_form_without_a_request_id_gets_one(console: TestClient, fakes: Fakes) -> None:
    console.post("/pipeline/rollback", data={"reason": "r"}, follow_redirects=False)

    sent = fakes.registry.requests[-1]
    assert len(sent.request_id) == 36
    assert not sent.HasField("expect_version")


def test_promote_needs_a_reason(console: TestClient, fakes: Fakes) -> None:
    answer = console.post("/pipeline/promote", data={"version": "1"}, follow_redirects=False)
    assert notice(answer.headers["location"], "error") == "promoting needs a reason"
    assert not any(r.DESCRIPTOR.name == "PromoteRequest" for r in fakes.registry.requests)


def test_promoting_a_failed_version_shows_the_registrys_refusal(console: TestClient) -> None:
    page = console.post("/pipeline/promote", data={"version": "3", "reason": "r"}).text
    assert "registry: FAILED_PRECONDITION: version failed to load" in page


def test_rollback_returns_to_the_previous_version(console: TestClient, fakes: Fakes) -> None:
    answer = console.post(
        "/pipeline/rollback",
        data={"reason": "false rejects on line 3"},
        follow_redirects=False,
    )
    assert notice(answer.headers["location"]) == (
        "rolled back: production v2 → v1 (by ops: false rejects on line 3)"
    )
    assert fakes.registry.production == 1
    again = console.post("/pipeline/rollback", data={"reason": "again"}).text
    assert "registry: FAILED_PRECONDITION: no earlier version to go back to" in again


def test_rollback_needs_a_reason(console: TestClient, fakes: Fakes) -> None:
    page = console.post("/pipeline/rollback", data={}).text
    assert "rolling back needs a reason" in page
    assert fakes.registry.production == 2


def nominate(fakes: Fakes, version: int) -> None:
    """Make ``version`` the candidate, as an approval under a manual release policy does."""
    fakes.registry.versions[version].aliases.append("candidate")
    fakes.registry.candidate = version


def test_the_candidate_is_offered_for_release_and_refusal(
    console: TestClient, fakes: Fakes
) -> None:
    nominate(fakes, 1)

    page = console.get("/pipeline").text

    v1 = page[page.index('id="version-1"') : page.index("</tbody>")]
    assert "candidate" in v1
    assert 'id="release-1"' in v1
    assert 'id="refuse-1"' in v1
    assert 'id="release-2"' not in page


def test_release_deploys_the_candidate_as_the_logged_in_user(
    console: TestClient, fakes: Fakes
) -> None:
    nominate(fakes, 1)

    answer = console.post(
        "/pipeline/release",
        data={"version": "1", "actor": "mallory", "reason": "QA agreed"},
        follow_redirects=False,
    )

    assert notice(answer.headers["location"]) == (
        "released: production v2 → v1 (by ops: QA agreed)"
    )
    sent = fakes.registry.requests[-1]
    assert (sent.DESCRIPTOR.name, sent.version, sent.actor) == ("ReleaseRequest", 1, "ops")
    assert fakes.registry.metadata[-1]["x-screwops-on-behalf-of"] == "ops"
    assert fakes.registry.production == 1


def test_refuse_clears_the_candidate_as_the_logged_in_user(
    console: TestClient, fakes: Fakes
) -> None:
    nominate(fakes, 1)

    answer = console.post(
        "/pipeline/refuse",
        data={"version": "1", "reason": "false rejects"},
        follow_redirects=False,
    )
    needs_reason = console.post("/pipeline/refuse", data={"version": "1"}).text

    assert notice(answer.headers["location"]) == (
        "refused: candidate v1 → none (by ops: false rejects)"
    )
    assert fakes.registry.production == 2
    assert fakes.registry.candidate is None
    assert "refusing needs a reason" in needs_reason


def test_a_viewer_can_neither_release_nor_refuse(make_console: Console, fakes: Fakes) -> None:
    nominate(fakes, 1)
    console = make_console(user="vic")

    page = console.get("/pipeline").text
    answers = [
        console.post(f"/pipeline/{action}", data={"version": "1", "reason": "r"})
        for action in ("release", "refuse")
    ]

    assert 'id="release-1"' in page
    assert [a.status_code for a in answers] == [403, 403]
    assert "this needs the operator role; vic is viewer" in answers[0].text
    assert fakes.registry.candidate == 1
    assert not any(
        r.DESCRIPTOR.name in ("ReleaseRequest", "RefuseRequest") for r in fakes.registry.requests
    )


def test_the_validation_report_is_served_from_storage(console: TestClient) -> None:
    answer = console.get("/reports/screws/v1")
    assert answer.status_code == 200
    assert "screws v1 passed" in answer.text
    assert "sandbox" in answer.headers["content-security-policy"]
    assert console.get("/reports/screws/v2").status_code == 404
    assert console.get("/reports/..%2Fsecrets/v1").status_code == 404
    assert console.get("/reports/screws/v0").status_code == 404


def test_each_section_fails_on_its_own(make_console: Console, fakes: Fakes, address: str) -> None:
    async def down(limit: int) -> list[RunRecord]:
        raise UnavailableError("MongoDB did not answer")

    fakes.runs.list_runs = down  # type: ignore[method-assign]
    page = make_console(registry_address=closed_port(), rpc_timeout_s=2.0).get("/pipeline").text
    assert "registry: UNAVAILABLE" in page
    assert "UNAVAILABLE: MongoDB did not answer" in page
    assert 'id="dataset-screws-1"' in page  # ingestion and the reports still answer


@pytest.mark.parametrize("user", ["vic", "lab"])
def test_only_an_operator_moves_production(make_console: Console, fakes: Fakes, user: str) -> None:
    console = make_console(user=user)
    promote = console.post("/pipeline/promote", data={"version": "1", "reason": "r"})
    rollback = console.post("/pipeline/rollback", data={"reason": "r"})

    assert (promote.status_code, rollback.status_code) == (403, 403)
    assert "this needs the operator role" in promote.text
    assert fakes.registry.production == 2
    assert not any(r.DESCRIPTOR.name != "ListVersionsRequest" for r in fakes.registry.requests)


def test_an_admin_moves_production_too(make_console: Console, fakes: Fakes) -> None:
    make_console(user="admin").post(
        "/pipeline/rollback", data={"reason": "r"}, follow_redirects=False
    )
    assert fakes.registry.production == 1
    assert fakes.registry.requests[-1].actor == "admin"
