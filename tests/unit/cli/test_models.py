"""``screwops models`` against a fake registry servicer: tables, JSON, and statuses turned into
exit codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from screwops.v1 import registry_pb2, registry_pb2_grpc

from tests.unit.cli.support import closed_port, screwops, serving

MODEL = "screw-classifier"


def version(
    number: int, stage: registry_pb2.ModelStage.ValueType = registry_pb2.MODEL_STAGE_REGISTERED
) -> Any:
    return registry_pb2.ModelVersion(
        model_name=MODEL,
        version=number,
        stage=stage,
        dataset_id="screws",
        dataset_version=number,
        run_id=f"run-{number:012d}",
        evaluation_id=f"eval-{number}",
        metrics={"accuracy": 0.9 + number / 100, "threshold": 0.0372},
        threshold=0.0372,
        model_kind=(
            registry_pb2.MODEL_KIND_GOOD_ONLY
            if number == 1
            else registry_pb2.MODEL_KIND_UNSPECIFIED
        ),
        created_at=Timestamp(seconds=1_790_000_000 + number),
    )


@dataclass
class FakeRegistry(registry_pb2_grpc.RegistryServiceServicer):
    versions: list[Any] = field(default_factory=list)
    production: int | None = None
    previous: int | None = None
    candidate: int | None = 3
    requests: list[Any] = field(default_factory=list)
    rollout: Any = None

    def ListVersions(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.requests.append(request)
        offset = int(request.page_token or "0")
        newest = sorted(self.versions, key=lambda v: -v.version)
        page = newest[offset : offset + request.page_size]
        more = offset + request.page_size < len(newest)
        return registry_pb2.ListVersionsResponse(
            model_versions=page, next_page_token=str(offset + request.page_size) if more else ""
        )

    def GetLineage(self, request: Any, context: Any) -> Any:  # noqa: N802
        for v in self.versions:
            if v.version == request.version:
                return v
        context.abort(grpc.StatusCode.NOT_FOUND, f"{MODEL} has no version {request.version}")

    def Promote(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.requests.append(request)
        found = [v for v in self.versions if v.version == request.version]
        if not found:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no version {request.version}")
        if found[0].stage == registry_pb2.MODEL_STAGE_FAILED:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "version failed to load")
        change = registry_pb2.AliasChange(
            model_name=MODEL,
            alias="production",
            from_version=self.production,
            to_version=request.version,
            actor=request.actor,
            reason=request.reason,
            changed_at=Timestamp(seconds=1_790_000_100),
        )
        self.previous, self.production = self.production, request.version
        return change

    def Rollback(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.requests.append(request)
        if self.previous is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no earlier version to go back to")
            raise AssertionError("abort raises")
        return registry_pb2.AliasChange(
            model_name=MODEL,
            alias="production",
            from_version=self.production,
            to_version=self.previous,
            actor=request.actor,
            reason=request.reason,
        )

    def _moved(self, request: Any, alias: str, to: int | None) -> Any:
        self.requests.append(request)
        return registry_pb2.AliasChange(
            model_name=MODEL,
            alias=alias,
            from_version=self.candidate,
            to_version=to,
            actor=request.actor,
            reason=request.reason,
            changed_at=Timestamp(seconds=1_790_000_200),
            sequence=3,
        )

    def SetAlias(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._moved(request, request.alias, request.version)

    def UnsetAlias(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._moved(request, request.alias, None)

    def Release(self, request: Any, context: Any) -> Any:  # noqa: N802
        if request.version != self.candidate:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "not the candidate")
        self.requests.append(request)
        return registry_pb2.AliasChange(
            model_name=MODEL,
            alias="production",
            from_version=self.production,
            to_version=request.version,
            actor=request.actor,
            reason=request.reason,
        )

    def Refuse(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._moved(request, "candidate", None)

    def ListAliases(self, request: Any, context: Any) -> Any:  # noqa: N802
        def latest(alias: str, to: int | None) -> Any:
            return registry_pb2.AliasChange(
                model_name=MODEL, alias=alias, to_version=to, actor="ana", reason=f"why {alias}"
            )

        return registry_pb2.ListAliasesResponse(
            aliases=[
                registry_pb2.ModelAlias(
                    alias="production", version=2, latest=latest("production", 2)
                ),
                registry_pb2.ModelAlias(alias="audit", latest=latest("audit", None)),
            ]
        )

    def GetRollout(self, request: Any, context: Any) -> Any:  # noqa: N802
        if self.rollout is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"{MODEL} never had a rollout")
        return self.rollout

    def StartRollout(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.requests.append(request)
        if self.rollout is not None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "rollout v4-9 is running")
        self.rollout = registry_pb2.Rollout(
            model_name=MODEL,
            rollout_id="v4-9",
            strategy=request.strategy or registry_pb2.ROLLOUT_STRATEGY_CANARY,
            state=registry_pb2.ROLLOUT_STATE_RUNNING,
            production_version=2,
            candidate_version=request.version,
            steps=[5, 25, 100],
            share=5,
            lines=["line-2"],
            min_inspections=200,
            min_step_seconds=300,
            started_at=Timestamp(seconds=1_790_000_300),
            step_started_at=Timestamp(seconds=1_790_000_300),
        )
        return self._rolled(request, registry_pb2.ROLLOUT_CHANGE_KIND_STARTED)

    def _rolled(self, request: Any, kind: Any) -> Any:
        change = registry_pb2.RolloutChange(
            kind=kind,
            step=self.rollout.step,
            actor=request.actor,
            reason=request.reason,
            changed_at=Timestamp(seconds=1_790_000_400),
            sequence=9 + len(self.rollout.changes),
            request_id=request.request_id,
        )
        self.rollout.changes.append(change)
        return registry_pb2.RolloutChangeResponse(rollout=self.rollout, change=change)

    def AdvanceRollout(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.requests.append(request)
        self.rollout.step += 1
        self.rollout.share = self.rollout.steps[self.rollout.step]
        return self._rolled(request, registry_pb2.ROLLOUT_CHANGE_KIND_ADVANCED)

    def PauseRollout(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.requests.append(request)
        self.rollout.state, self.rollout.share = registry_pb2.ROLLOUT_STATE_PAUSED, 0
        return self._rolled(request, registry_pb2.ROLLOUT_CHANGE_KIND_PAUSED)

    def ResumeRollout(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.requests.append(request)
        if self.rollout.state != registry_pb2.ROLLOUT_STATE_PAUSED:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "rollout v4-9 is running")
        self.rollout.state = registry_pb2.ROLLOUT_STATE_RUNNING
        return self._rolled(request, registry_pb2.ROLLOUT_CHANGE_KIND_RESUMED)

    def AbortRollout(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.requests.append(request)
        self.rollout.state, self.rollout.share = registry_pb2.ROLLOUT_STATE_ABORTED, 0
        return self._rolled(request, registry_pb2.ROLLOUT_CHANGE_KIND_ABORTED)


@pytest.fixture
def registry() -> Iterator[tuple[FakeRegistry, str]]:
    fake = FakeRegistry(
        versions=[
            version(1, registry_pb2.MODEL_STAGE_ARCHIVED),
            version(2, registry_pb2.MODEL_STAGE_PRODUCTION),
            version(3, registry_pb2.MODEL_STAGE_FAILED),
        ],
        production=2,
        previous=1,
    )
    with serving(registry_pb2_grpc.add_RegistryServiceServicer_to_server, fake) as address:
        yield fake, address


def test_list_shows_every_version_newest_first_across_pages(
    registry: tuple[FakeRegistry, str],
) -> None:
    fake, address = registry
    fake.versions += [version(n) for n in range(4, 8)]

    result = screwops("models", "list", "--limit", "5", "--address", address, "--json")

    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)["model_versions"]
    assert [v["version"] for v in listed] == ["7", "6", "5", "4", "3"]

    table = screwops("models", "list", "--address", address)
    assert table.exit_code == 0, table.output
    assert "production" in table.stdout
    assert "run-000000000002" in table.stdout
    assert table.stdout.index("run-000000000007") < table.stdout.index("run-000000000001")


def test_the_address_comes_from_the_environment(registry: tuple[FakeRegistry, str]) -> None:
    _, address = registry
    result = screwops("models", "show", "2", "--json", env={"SCREWOPS_REGISTRY_ADDRESS": address})
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert (shown["version"], shown["stage"]) == ("2", "MODEL_STAGE_PRODUCTION")


def test_show_prints_the_lineage(registry: tuple[FakeRegistry, str]) -> None:
    _, address = registry
    result = screwops("models", "show", "1", "--address", address)
    assert result.exit_code == 0, result.output
    for shown in ("archived", "screws v1", "run-000000000001", "eval-1", "accuracy", "0.9100"):
        assert shown in result.stdout
    assert "good-only" in result.stdout
    assert "0.0372 (chosen on the validation split)" in result.stdout, "not rounded to 0.037"
    as_json = json.loads(screwops("models", "show", "1", "--address", address, "--json").stdout)
    assert (as_json["model_kind"], as_json["threshold"]) == ("MODEL_KIND_GOOD_ONLY", 0.0372)


def test_an_unknown_version_exits_4_with_the_registrys_reason(
    registry: tuple[FakeRegistry, str],
) -> None:
    _, address = registry
    result = screwops("models", "show", "42", "--address", address)
    assert result.exit_code == 4
    assert "registry: NOT_FOUND: screw-classifier has no version 42" in result.stderr


def test_promote_sends_actor_and_reason_and_prints_the_move(
    registry: tuple[FakeRegistry, str],
) -> None:
    fake, address = registry
    result = screwops(
        "models", "promote", "1", "--actor", "ana", "--reason", "back to v1", "--address", address
    )
    assert result.exit_code == 0, result.output
    assert "production: v2 -> v1 by ana (back to v1)" in result.stdout
    request = fake.requests[-1]
    assert (request.model_name, request.version, request.actor, request.reason) == (
        MODEL,
        1,
        "ana",
        "back to v1",
    )


def test_promote_without_an_actor_records_the_user(registry: tuple[FakeRegistry, str]) -> None:
    fake, address = registry
    result = screwops("models", "promote", "1", "--reason", "r", "--address", address, "--json")
    assert result.exit_code == 0, result.output
    assert fake.requests[-1].actor
    assert json.loads(result.stdout)["to_version"] == "1"


def test_a_move_sends_a_new_request_id_and_shows_it_for_a_retry(
    registry: tuple[FakeRegistry, str],
) -> None:
    fake, address = registry
    result = screwops("models", "rollback", "--reason", "r", "--address", address)
    assert result.exit_code == 0, result.output
    request = fake.requests[-1]
    assert len(request.request_id) == 36
    assert f"retry with --request-id {request.request_id}" in result.stderr
    assert not request.HasField("expect_version")


def test_a_retry_sends_the_given_request_id_and_expected_version(
    registry: tuple[FakeRegistry, str],
) -> None:
    fake, address = registry
    result = screwops(
        "models",
        "promote",
        "1",
        "--reason",
        "r",
        "--request-id",
        "rq-7",
        "--expect-version",
        "2",
        "--address",
        address,
    )
    assert result.exit_code == 0, result.output
    request = fake.requests[-1]
    assert (request.request_id, request.expect_version) == ("rq-7", 2)
    assert "request id" not in result.stderr


def test_promoting_a_failed_version_exits_5(registry: tuple[FakeRegistry, str]) -> None:
    _, address = registry
    result = screwops("models", "promote", "3", "--reason", "try", "--address", address)
    assert result.exit_code == 5
    assert "FAILED_PRECONDITION: version failed to load" in result.stderr


def test_a_reason_is_required() -> None:
    result = screwops("models", "promote", "1", "--address", "127.0.0.1:1")
    assert result.exit_code == 2
    assert "--reason" in result.output


def test_rollback_moves_back_and_refuses_without_history(
    registry: tuple[FakeRegistry, str],
) -> None:
    fake, address = registry
    back = screwops("models", "rollback", "--reason", "drift", "--address", address, "--json")
    assert back.exit_code == 0, back.output
    change = json.loads(back.stdout)
    assert (change["from_version"], change["to_version"], change["reason"]) == ("2", "1", "drift")

    fake.previous = None
    refused = screwops("models", "rollback", "--reason", "again", "--address", address)
    assert refused.exit_code == 5
    assert "no earlier version" in refused.stderr


def test_an_unreachable_registry_exits_3_and_says_where_it_looked() -> None:
    address = closed_port()
    result = screwops("models", "list", "--address", address)
    assert result.exit_code == 3
    assert "registry: UNAVAILABLE" in result.stderr
    assert f"is registry running at {address}?" in result.stderr


def test_alias_set_and_unset_send_who_and_why_and_print_the_move(
    registry: tuple[FakeRegistry, str],
) -> None:
    fake, address = registry
    made = screwops(
        "models",
        "alias",
        "set",
        "audit",
        "1",
        "--reason",
        "pinned",
        "--actor",
        "ana",
        "--address",
        address,
    )
    unmade = screwops("models", "alias", "unset", "audit", "--reason", "done", "--address", address)

    assert made.exit_code == 0, made.output
    assert "audit: v3 -> v1 by ana (pinned)" in made.stdout
    assert unmade.exit_code == 0, unmade.output
    assert "audit: v3 -> nothing" in unmade.stdout
    set_request, unset_request = fake.requests[-2:]
    assert (set_request.alias, set_request.version, set_request.actor) == ("audit", 1, "ana")
    assert (unset_request.alias, unset_request.reason) == ("audit", "done")
    assert len(unset_request.request_id) == 36


def test_alias_list_shows_each_alias_and_its_latest_move(
    registry: tuple[FakeRegistry, str],
) -> None:
    _, address = registry
    result = screwops("models", "alias", "list", "--address", address)
    as_json = screwops("models", "alias", "list", "--address", address, "--json")

    assert result.exit_code == 0, result.output
    assert "production" in result.stdout
    assert "v2" in result.stdout
    assert "unset" in result.stdout
    assert "why audit" in result.stdout
    assert [a["alias"] for a in json.loads(as_json.stdout)["aliases"]] == ["production", "audit"]


def test_release_deploys_the_candidate_and_refuse_clears_it(
    registry: tuple[FakeRegistry, str],
) -> None:
    fake, address = registry
    released = screwops(
        "models", "release", "3", "--reason", "QA agreed", "--address", address, "--json"
    )
    refused = screwops("models", "refuse", "3", "--reason", "false rejects", "--address", address)
    wrong = screwops("models", "release", "1", "--reason", "r", "--address", address)

    assert released.exit_code == 0, released.output
    assert json.loads(released.stdout)["alias"] == "production"
    assert refused.exit_code == 0, refused.output
    assert "candidate: v3 -> nothing" in refused.stdout
    assert [type(r).__name__ for r in fake.requests[-2:]] == ["ReleaseRequest", "RefuseRequest"]
    assert fake.requests[-1].reason == "false rejects"
    assert wrong.exit_code == 5
    assert "not the candidate" in wrong.stderr


def test_a_rollout_is_started_changed_and_shown(registry: tuple[FakeRegistry, str]) -> None:
    fake, address = registry
    missing = screwops("models", "rollout", "status", "--address", address)
    started = screwops(
        "models",
        "rollout",
        "start",
        "4",
        "--strategy",
        "shadow",
        "--reason",
        "compare on live traffic",
        "--actor",
        "ana",
        "--address",
        address,
    )
    advanced = screwops(
        "models",
        "rollout",
        "advance",
        "--reason",
        "5 % held",
        "--rollout",
        "v4-9",
        "--expect-step",
        "0",
        "--address",
        address,
    )
    paused = screwops("models", "rollout", "pause", "--reason", "line stop", "--address", address)
    status = screwops("models", "rollout", "status", "--address", address)
    as_json = screwops("models", "rollout", "status", "--address", address, "--json")

    assert missing.exit_code == 4
    assert "never had a rollout" in missing.stderr
    assert started.exit_code == 0, started.output
    assert "rollout v4-9 (v4 beside v2): started, step 1 of 3, 5% to the candidate" in (
        started.stdout
    )
    assert "by ana (compare on live traffic)" in started.stdout
    start, advance, pause = fake.requests[-3:]
    assert (start.version, start.strategy, start.actor) == (
        4,
        registry_pb2.ROLLOUT_STRATEGY_SHADOW,
        "ana",
    )
    assert (advance.rollout_id, advance.expect_step, advance.reason) == ("v4-9", 0, "5 % held")
    assert not pause.HasField("expect_step")
    assert len({start.request_id, advance.request_id, pause.request_id}) == 3
    assert advanced.exit_code == 0, advanced.output
    assert "advanced, step 2 of 3, 25% to the candidate now" in advanced.stdout
    assert paused.exit_code == 0, paused.output
    assert "0% to the candidate now" in paused.stdout
    assert status.exit_code == 0, status.output
    for shown in ("shadow", "paused", "line-2", "200 inspections", "5% -> 25% -> 100%", "5 % held"):
        assert shown in status.stdout, shown
    assert json.loads(as_json.stdout)["rollout_id"] == "v4-9"


def test_a_refused_rollout_change_exits_5(registry: tuple[FakeRegistry, str]) -> None:
    _, address = registry
    screwops("models", "rollout", "start", "4", "--reason", "r", "--address", address)

    again = screwops("models", "rollout", "start", "5", "--reason", "r", "--address", address)
    resumed = screwops("models", "rollout", "resume", "--reason", "r", "--address", address)
    aborted = screwops("models", "rollout", "abort", "--reason", "bad", "--address", address)

    assert again.exit_code == 5
    assert "rollout v4-9 is running" in again.stderr
    assert resumed.exit_code == 5
    assert aborted.exit_code == 0, aborted.output
    assert "aborted" in aborted.stdout
