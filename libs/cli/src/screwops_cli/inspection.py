"""``screwops inspect``: images through the gateway, as a line's camera sends them.

Each file is one ``Inspect`` call. A file the gateway refuses (INVALID_ARGUMENT: not an image,
too large, too small) or that cannot be read is reported on its own row and the other files still
go; an error that would fail every file (the gateway unreachable, a wrong token, a pinned version
that is not loaded) stops the command with its exit code. The exit code is 1 when some file
failed.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import grpc
import typer
from rich.table import Table
from screwops.v1 import inspection_pb2, inspection_pb2_grpc
from screwops_rpc import Balancing, open_channel

from screwops_cli.common import (
    GatewayToken,
    Json,
    address_option,
    calling,
    console,
    emit,
    fail,
    resolve,
    rpc_failure,
)

VERDICTS = {inspection_pb2.VERDICT_GOOD: "GOOD", inspection_pb2.VERDICT_DEFECT: "DEFECT"}
# Statuses that are about the one file; any other stops the command.
PER_FILE = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE}


class LoadBalancing(StrEnum):
    """How calls are spread over the addresses the gateway's name resolves to."""

    PICK_FIRST = "pick_first"
    ROUND_ROBIN = "round_robin"


@dataclass
class Outcome:
    """What happened to one file."""

    file: str
    ok: bool
    verdict: str = ""
    defect_probability: float | None = None
    threshold: float | None = None
    model_name: str = ""
    model_version: int | None = None
    latency_ms: float | None = None
    gateway_ms: float | None = None
    inspection_id: str = ""
    trace_id: str = ""
    error: str = ""


def inspect(
    images: Annotated[list[Path], typer.Argument(help="PNG or JPEG files.", show_default=False)],
    version: Annotated[
        int | None,
        typer.Option(min=1, help="Pin a model version (default: the production version)."),
    ] = None,
    line: Annotated[str, typer.Option(help="The production line recorded.")] = "cli",
    camera: Annotated[str, typer.Option(help="The camera recorded.")] = "cli",
    token: GatewayToken = None,
    timeout: Annotated[float, typer.Option(min=0.1, help="Deadline per image, seconds.")] = 10.0,
    address: Annotated[str | None, address_option("gateway")] = None,
    balancing: Annotated[
        LoadBalancing,
        typer.Option(
            envvar="SCREWOPS_GATEWAY_BALANCING",
            help="pick_first: every call to one address. round_robin: spread the calls over "
            "every address the name resolves to, e.g. dns:///gateway-headless.screwops:50051 "
            "in Kubernetes (docs/operations.md).",
        ),
    ] = LoadBalancing.PICK_FIRST,
    as_json: Json = False,
) -> None:
    """Inspect images through the gateway: verdict, probability, model version, latency."""
    target = resolve("gateway", address)
    outcomes: list[Outcome] = []
    stopped: grpc.RpcError | None = None
    policy: Balancing = "round_robin" if balancing is LoadBalancing.ROUND_ROBIN else "pick_first"
    with calling("gateway", target), open_channel(target, token, balancing=policy) as channel:
        stub = inspection_pb2_grpc.InspectionServiceStub(channel)
        for path in images:
            try:
                data = path.read_bytes()
            except OSError as exc:
                outcomes.append(Outcome(str(path), ok=False, error=f"cannot read: {exc.strerror}"))
                continue
            request = inspection_pb2.InspectRequest(
                image=data,
                line_id=line,
                camera_id=camera,
                request_id=f"cli-{uuid.uuid4().hex[:12]}",
                model_version=version,
            )
            began = time.perf_counter()
            try:
                answer = stub.Inspect(request, timeout=timeout)
            except grpc.RpcError as exc:
                if exc.code() not in PER_FILE:
                    stopped = exc
                    break
                outcomes.append(
                    Outcome(str(path), ok=False, error=f"{exc.code().name}: {exc.details()}")
                )
                continue
            outcomes.append(_outcome(path, answer, (time.perf_counter() - began) * 1000))
    if as_json:
        emit([asdict(o) for o in outcomes])
    elif outcomes:
        _print(outcomes)
    if stopped is not None:
        rpc_failure("gateway", stopped, target)
    if any(not o.ok for o in outcomes):
        fail(f"{sum(not o.ok for o in outcomes)} of {len(outcomes)} images failed")


def _outcome(path: Path, answer: inspection_pb2.InspectResponse, latency_ms: float) -> Outcome:
    return Outcome(
        str(path),
        ok=True,
        verdict=VERDICTS.get(answer.verdict, "?"),
        defect_probability=round(answer.defect_probability, 6),
        threshold=round(answer.threshold, 6),
        model_name=answer.model_name,
        model_version=answer.model_version,
        latency_ms=round(latency_ms, 2),
        gateway_ms=round(answer.timings.total_ms, 2),
        inspection_id=answer.inspection_id,
        trace_id=answer.trace_id,
    )


def _print(outcomes: list[Outcome]) -> None:
    table = Table(title="inspections")
    for column in ("file", "verdict", "probability", "model version", "latency ms"):
        table.add_column(column, justify="left" if column in ("file", "verdict") else "right")
    for o in outcomes:
        if not o.ok:
            table.add_row(o.file, f"[red]{o.error}[/red]", "", "", "")
            continue
        colour = "green" if o.verdict == "GOOD" else "red"
        table.add_row(
            o.file,
            f"[{colour}]{o.verdict}[/{colour}]",
            f"{o.defect_probability:.4f}",
            f"{o.model_name} v{o.model_version}",
            f"{o.latency_ms:.1f} ({o.gateway_ms:.1f} in gateway)",
        )
    console.print(table)
