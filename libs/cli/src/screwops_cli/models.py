"""``screwops models``: registered model versions, their aliases (``production``, ``candidate``
and the operators' own), the release of approved candidates and the rollouts (canary, shadow)
that take a version to production, over the registry's gRPC admin API."""

from __future__ import annotations

import enum
import getpass
import uuid
from typing import Annotated, Any

import grpc
import typer
from google.protobuf.message import Message
from rich.table import Table
from screwops.v1 import registry_pb2, registry_pb2_grpc
from screwops_contracts.models import MODEL_NAME
from screwops_rpc import open_channel

from screwops_cli.common import (
    Json,
    address_option,
    calling,
    console,
    emit,
    errors,
    resolve,
    token_option,
)
from screwops_cli.export import export_version

app = typer.Typer(
    help="Model versions, their lineage, aliases, release, promotion and rollback (registry)."
)
aliases = typer.Typer(
    help="Aliases naming versions besides production: candidate and your own (registry)."
)
app.add_typer(aliases, name="alias", no_args_is_help=True)
app.command("export")(export_version)
rollouts = typer.Typer(
    help="Rollouts of a version beside production: canary (a share of the requests answered "
    "by it, step by step) or shadow (a copy of them sent to it, its answers discarded)."
)
app.add_typer(rollouts, name="rollout", no_args_is_help=True)

Address = Annotated[str | None, address_option("registry")]
Token = Annotated[str | None, token_option("registry")]
Model = Annotated[str, typer.Option("--model", help="The registered model.")]
Actor = Annotated[
    str,
    typer.Option(
        help="Who asks, recorded with the change (default: your user name) where the registry "
        "has no tokens; where it has, it records your token's principal instead."
    ),
]
Reason = Annotated[str, typer.Option(help="Why, recorded with the change.")]
RequestId = Annotated[
    str,
    typer.Option(
        help="Names this move; a retry with the same id answers what the first call did and "
        "never moves production twice (default: a new UUID, printed on stderr for a retry)."
    ),
]
ExpectVersion = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Refuse (FAILED_PRECONDITION, exit 5) unless production names this version now.",
    ),
]
STAGES = {
    registry_pb2.MODEL_STAGE_REGISTERED: "registered",
    registry_pb2.MODEL_STAGE_PRODUCTION: "[green]production[/green]",
    registry_pb2.MODEL_STAGE_ARCHIVED: "archived",
    registry_pb2.MODEL_STAGE_FAILED: "[red]failed[/red]",
}
KINDS = {
    registry_pb2.MODEL_KIND_SUPERVISED: "supervised",
    registry_pb2.MODEL_KIND_GOOD_ONLY: "good-only",
}
TIMEOUT_S = 30.0
# Promote loads the version in Triton and checks it with a real inference first.
MOVE_TIMEOUT_S = 600.0


def _stub(channel: grpc.Channel) -> registry_pb2_grpc.RegistryServiceStub:
    return registry_pb2_grpc.RegistryServiceStub(channel)


@app.command("list")
def list_versions(
    model: Model = MODEL_NAME,
    limit: Annotated[int, typer.Option(min=1, help="The most versions to show.")] = 50,
    address: Address = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """A model's versions, newest first."""
    target = resolve("registry", address)
    versions: list[registry_pb2.ModelVersion] = []
    with calling("registry", target), open_channel(target, token) as channel:
        page_token = ""
        while len(versions) < limit:
            request = registry_pb2.ListVersionsRequest(
                model_name=model, page_size=min(limit - len(versions), 500), page_token=page_token
            )
            page = _stub(channel).ListVersions(request, timeout=TIMEOUT_S)
            versions.extend(page.model_versions)
            page_token = page.next_page_token
            if not page_token:
                break
    if as_json:
        emit(registry_pb2.ListVersionsResponse(model_versions=versions, next_page_token=page_token))
        return
    table = Table(title=f"{model} versions")
    columns = (
        "version",
        "stage",
        "kind",
        "dataset",
        "run",
        "accuracy",
        "threshold",
        "frame",
        "registered",
    )
    for column in columns:
        table.add_column(column)
    for v in versions:
        accuracy = v.metrics.get("accuracy")
        table.add_row(
            str(v.version),
            STAGES.get(v.stage, "?"),
            KINDS.get(v.model_kind, ""),
            f"{v.dataset_id} v{v.dataset_version}",
            v.run_id,
            "" if accuracy is None else f"{accuracy:.4f}",
            f"{v.threshold:.4g}",
            f"{v.frame_size} px" if v.frame_size else "none",
            v.created_at.ToDatetime().isoformat(timespec="seconds"),
        )
    console.print(table)
    if not versions:
        console.print(f"no versions of {model} yet")


@app.command("show")
def show(
    version: Annotated[int, typer.Argument(min=1, help="The version number.")],
    model: Model = MODEL_NAME,
    address: Address = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """One version with its lineage: dataset version, training run, evaluation, metrics, and the
    kind, threshold and frame size it is served with."""
    target = resolve("registry", address)
    request = registry_pb2.GetLineageRequest(model_name=model, version=version)
    with calling("registry", target), open_channel(target, token) as channel:
        found = _stub(channel).GetLineage(request, timeout=TIMEOUT_S)
    if as_json:
        emit(found)
        return
    table = Table(title=f"{found.model_name} v{found.version}", show_header=False)
    rows = [
        ("stage", STAGES.get(found.stage, "?")),
        ("aliases", ", ".join(found.aliases)),
        ("dataset", f"{found.dataset_id} v{found.dataset_version}"),
        ("run", found.run_id),
        ("evaluation", found.evaluation_id),
        ("kind", KINDS.get(found.model_kind, "")),
        ("threshold", f"{found.threshold:.4g} (chosen on the validation split)"),
        (
            "frame",
            f"{found.frame_size} x {found.frame_size} px (the full frame it takes)"
            if found.frame_size
            else "none: exported before models took full frames; retrain it to serve it",
        ),
        *(
            (name, f"{value:.4f}")
            for name, value in sorted(found.metrics.items())
            if name != "threshold"  # shown above: the threshold the version applies
        ),
        ("registered", found.created_at.ToDatetime().isoformat(timespec="seconds")),
        ("report", found.report_key),
        ("artifact", found.artifact_key),
        ("failure", found.failure_reason),
    ]
    for key, value in rows:
        if value:
            table.add_row(key, value)
    console.print(table)


def _print_change(change: registry_pb2.AliasChange) -> None:
    before = f"v{change.from_version}" if change.HasField("from_version") else "nothing"
    after = f"v{change.to_version}" if change.HasField("to_version") else "nothing"
    console.print(
        f"{change.model_name} {change.alias}: {before} -> [bold]{after}[/bold] "
        f"by {change.actor} ({change.reason}) at "
        f"{change.changed_at.ToDatetime().isoformat(timespec='seconds')}"
        + (f", move {change.sequence}" if change.sequence else "")
    )


def _audit(actor: str, reason: str, request_id: str) -> dict[str, str]:
    """The fields every moving request carries: who asks, why, and the id a retry reuses."""
    return {
        "actor": actor or getpass.getuser(),
        "reason": reason,
        "request_id": _request_id(request_id),
    }


def _request_id(given: str) -> str:
    """The operator's request id, or a new one, shown so that a lost answer can be retried."""
    if given.strip():
        return given.strip()
    made = str(uuid.uuid4())
    errors.print(f"request id {made} (if the answer is lost, retry with --request-id {made})")
    return made


@app.command()
def promote(
    version: Annotated[int, typer.Argument(min=1, help="The version to serve.")],
    reason: Reason,
    actor: Actor = "",
    request_id: RequestId = "",
    expect_version: ExpectVersion = None,
    model: Model = MODEL_NAME,
    address: Address = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """Point ``production`` at a version (loaded and checked in Triton first)."""
    request = registry_pb2.PromoteRequest(
        model_name=model,
        version=version,
        **_audit(actor, reason, request_id),
        expect_version=expect_version,
    )
    _show(_move("Promote", request, address=address, token=token), as_json=as_json)


@app.command()
def rollback(
    reason: Reason,
    actor: Actor = "",
    request_id: RequestId = "",
    expect_version: ExpectVersion = None,
    model: Model = MODEL_NAME,
    address: Address = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """Point ``production`` back at the version it named before the latest promotion."""
    request = registry_pb2.RollbackRequest(
        model_name=model,
        **_audit(actor, reason, request_id),
        expect_version=expect_version,
    )
    _show(_move("Rollback", request, address=address, token=token), as_json=as_json)


Version = Annotated[int, typer.Argument(min=1, help="The version `candidate` names.")]
AliasName = Annotated[
    str,
    typer.Argument(
        help="The alias: candidate, or a name of yours (lower-case letters, digits, '-' and "
        "'_', starting with a letter). production is moved by promote and rollback."
    ),
]


@app.command()
def release(
    version: Version,
    reason: Reason,
    actor: Actor = "",
    request_id: RequestId = "",
    model: Model = MODEL_NAME,
    address: Address = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """Release the version the evaluator approved and `candidate` names (manual release policy):
    announced as model.released, then loaded, checked and made production as promote does."""
    request = registry_pb2.ReleaseRequest(
        model_name=model,
        version=version,
        **_audit(actor, reason, request_id),
    )
    _show(_move("Release", request, address=address, token=token), as_json=as_json)


@app.command()
def refuse(
    version: Version,
    reason: Reason,
    actor: Actor = "",
    request_id: RequestId = "",
    model: Model = MODEL_NAME,
    address: Address = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """Refuse the version `candidate` names: `candidate` is cleared, your reason recorded, and
    nothing is deployed."""
    request = registry_pb2.RefuseRequest(
        model_name=model,
        version=version,
        **_audit(actor, reason, request_id),
    )
    _show(_move("Refuse", request, address=address, token=token), as_json=as_json)


@aliases.command("set")
def set_alias(
    alias: AliasName,
    version: Annotated[int, typer.Argument(min=1, help="The version it is to name.")],
    reason: Reason,
    actor: Actor = "",
    request_id: RequestId = "",
    model: Model = MODEL_NAME,
    address: Address = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """Point an alias at a version (it changes nothing served)."""
    request = registry_pb2.SetAliasRequest(
        model_name=model,
        alias=alias,
        version=version,
        **_audit(actor, reason, request_id),
    )
    _show(_move("SetAlias", request, address=address, token=token), as_json=as_json)


@aliases.command("unset")
def unset_alias(
    alias: AliasName,
    reason: Reason,
    actor: Actor = "",
    request_id: RequestId = "",
    model: Model = MODEL_NAME,
    address: Address = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """Make an alias name no version; its history stays."""
    request = registry_pb2.UnsetAliasRequest(
        model_name=model,
        alias=alias,
        **_audit(actor, reason, request_id),
    )
    _show(_move("UnsetAlias", request, address=address, token=token), as_json=as_json)


@aliases.command("list")
def list_aliases(
    model: Model = MODEL_NAME,
    address: Address = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """A model's aliases, the version each names and its latest move."""
    target = resolve("registry", address)
    request = registry_pb2.ListAliasesRequest(model_name=model)
    with calling("registry", target), open_channel(target, token) as channel:
        found = _stub(channel).ListAliases(request, timeout=TIMEOUT_S)
    if as_json:
        emit(found)
        return
    table = Table(title=f"{model} aliases")
    for column in ("alias", "version", "moved", "by", "why"):
        table.add_column(column)
    for alias in found.aliases:
        latest = alias.latest
        table.add_row(
            alias.alias,
            f"v{alias.version}" if alias.HasField("version") else "unset",
            latest.changed_at.ToDatetime().isoformat(timespec="seconds"),
            latest.actor,
            latest.reason,
        )
    console.print(table)


def _move(method: str, request: Message, *, address: str | None, token: str | None) -> Any:
    """Send a request that moves an alias or a rollout; its answer (an ``AliasChange`` or a
    ``RolloutChangeResponse``). It may load a version in Triton first, hence the long timeout."""
    target = resolve("registry", address)
    with calling("registry", target), open_channel(target, token) as channel:
        return getattr(_stub(channel), method)(request, timeout=MOVE_TIMEOUT_S)


def _show(change: registry_pb2.AliasChange, *, as_json: bool) -> None:
    if as_json:
        emit(change)
    else:
        _print_change(change)


class Strategy(enum.StrEnum):
    """The strategies an operator may start a rollout by."""

    CANARY = "canary"
    SHADOW = "shadow"


STRATEGIES = {
    Strategy.CANARY: registry_pb2.ROLLOUT_STRATEGY_CANARY,
    Strategy.SHADOW: registry_pb2.ROLLOUT_STRATEGY_SHADOW,
}
STRATEGY_NAMES = {number: strategy.value for strategy, number in STRATEGIES.items()}
ROLLOUT_STATES = {
    registry_pb2.ROLLOUT_STATE_RUNNING: "[green]running[/green]",
    registry_pb2.ROLLOUT_STATE_PAUSED: "[yellow]paused[/yellow]",
    registry_pb2.ROLLOUT_STATE_COMPLETED: "completed",
    registry_pb2.ROLLOUT_STATE_ABORTED: "[red]aborted[/red]",
}
ROLLOUT_CHANGES = {
    registry_pb2.ROLLOUT_CHANGE_KIND_STARTED: "started",
    registry_pb2.ROLLOUT_CHANGE_KIND_ADVANCED: "advanced",
    registry_pb2.ROLLOUT_CHANGE_KIND_PAUSED: "paused",
    registry_pb2.ROLLOUT_CHANGE_KIND_RESUMED: "resumed",
    registry_pb2.ROLLOUT_CHANGE_KIND_COMPLETED: "completed",
    registry_pb2.ROLLOUT_CHANGE_KIND_ABORTED: "aborted",
}
RolloutId = Annotated[
    str,
    typer.Option(
        "--rollout",
        help="Refuse (FAILED_PRECONDITION, exit 5) unless the model's latest rollout is this one.",
    ),
]
ExpectStep = Annotated[
    int | None,
    typer.Option(
        min=0,
        help="Refuse (FAILED_PRECONDITION, exit 5) unless the rollout is at this step now (0 is "
        "the first).",
    ),
]


@rollouts.command("status")
def rollout_status(
    model: Model = MODEL_NAME,
    address: Address = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """The model's latest rollout: its versions, steps, the share its candidate gets now and
    its changes."""
    target = resolve("registry", address)
    request = registry_pb2.GetRolloutRequest(model_name=model)
    with calling("registry", target), open_channel(target, token) as channel:
        found = _stub(channel).GetRollout(request, timeout=TIMEOUT_S)
    if as_json:
        emit(found)
        return
    steps = " -> ".join(
        f"[bold]{share:g}%[/bold]" if i == found.step else f"{share:g}%"
        for i, share in enumerate(found.steps)
    )
    table = Table(title=f"{model} rollout {found.rollout_id}", show_header=False)
    rows = [
        ("strategy", STRATEGY_NAMES.get(found.strategy, "?")),
        ("state", ROLLOUT_STATES.get(found.state, "?")),
        ("production", f"v{found.production_version}"),
        ("candidate", f"v{found.candidate_version}"),
        ("steps", steps),
        ("share now", f"{found.share:g}% of the requests"),
        ("lines", ", ".join(found.lines) or "every line"),
        (
            "each step",
            f"at least {found.min_inspections} inspections and {found.min_step_seconds:g} s",
        ),
        ("started", found.started_at.ToDatetime().isoformat(timespec="seconds")),
        ("step since", found.step_started_at.ToDatetime().isoformat(timespec="seconds")),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
    changes = Table(title="changes")
    for column in ("change", "step", "at", "by", "why", "sequence"):
        changes.add_column(column)
    for change in found.changes:
        changes.add_row(
            ROLLOUT_CHANGES.get(change.kind, "?"),
            str(change.step),
            change.changed_at.ToDatetime().isoformat(timespec="seconds"),
            change.actor,
            change.reason,
            str(change.sequence),
        )
    console.print(changes)


@rollouts.command("start")
def rollout_start(
    version: Annotated[int, typer.Argument(min=1, help="The version to roll out.")],
    reason: Reason,
    strategy: Annotated[
        Strategy | None,
        typer.Option(help="canary or shadow (default: the model's SCREWOPS_REGISTRY_ROLLOUT)."),
    ] = None,
    actor: Actor = "",
    request_id: RequestId = "",
    model: Model = MODEL_NAME,
    address: Address = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """Load a version beside production and start its rollout (one at a time per model)."""
    request = registry_pb2.StartRolloutRequest(
        model_name=model,
        version=version,
        strategy=STRATEGIES[strategy] if strategy else registry_pb2.ROLLOUT_STRATEGY_UNSPECIFIED,
        **_audit(actor, reason, request_id),
    )
    _show_rollout(_move("StartRollout", request, address=address, token=token), as_json=as_json)


def _change_command(method: str, doc: str) -> None:
    def command(
        reason: Reason,
        rollout: RolloutId = "",
        expect_step: ExpectStep = None,
        actor: Actor = "",
        request_id: RequestId = "",
        model: Model = MODEL_NAME,
        address: Address = None,
        token: Token = None,
        as_json: Json = False,
    ) -> None:
        request = registry_pb2.ChangeRolloutRequest(
            model_name=model,
            rollout_id=rollout,
            expect_step=expect_step,
            **_audit(actor, reason, request_id),
        )
        _show_rollout(_move(method, request, address=address, token=token), as_json=as_json)

    command.__doc__ = doc
    rollouts.command(method.removesuffix("Rollout").lower())(command)


_change_command(
    "AdvanceRollout",
    "Send the candidate its next step's share; past the last step, make it production "
    "(what the rollout controller calls; an operator may too).",
)
_change_command("PauseRollout", "Send the candidate nothing until resumed; it stays loaded.")
_change_command(
    "ResumeRollout", "Send the paused candidate its step's share again; the step's time restarts."
)
_change_command(
    "AbortRollout",
    "End the rollout: every request goes to production, which stays, and the candidate is "
    "unloaded unless an alias names it.",
)


def _show_rollout(answer: registry_pb2.RolloutChangeResponse, *, as_json: bool) -> None:
    if as_json:
        emit(answer)
        return
    rollout, change = answer.rollout, answer.change
    console.print(
        f"{rollout.model_name} rollout {rollout.rollout_id} "
        f"(v{rollout.candidate_version} beside v{rollout.production_version}): "
        f"[bold]{ROLLOUT_CHANGES.get(change.kind, '?')}[/bold], step {change.step + 1} of "
        f"{len(rollout.steps)}, {rollout.share:g}% to the candidate now, "
        f"by {change.actor} ({change.reason}) at "
        f"{change.changed_at.ToDatetime().isoformat(timespec='seconds')}, "
        f"change {change.sequence}"
    )
