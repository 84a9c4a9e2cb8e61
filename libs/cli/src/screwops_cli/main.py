"""``screwops``: the stack, synthetic data, ingestion and datasets from one command.

Exit codes mean something: 0 done, 1 the operation failed (the message says why), 2 bad usage,
3 a service could not be reached.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import grpc
import typer
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Table
from screwops.v1 import ingestion_pb2, ingestion_pb2_grpc
from screwops_settings import StackSettings
from screwops_stack.cli import app as stack_app
from screwops_synth.cli import app as data_app

from screwops_cli.demo import run as run_demo

app = typer.Typer(
    help="ScrewOps: event-driven MLOps for screw defect detection.", no_args_is_help=True
)
app.add_typer(stack_app, name="stack")
app.add_typer(data_app, name="data")
datasets_app = typer.Typer(help="Dataset versions.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
console = Console()
errors = Console(stderr=True)

UNREACHABLE = 3
Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
IngestionAddress = Annotated[
    str, typer.Option(envvar="SCREWOPS_INGESTION_ADDRESS", help="Ingestion's gRPC address.")
]


@contextmanager
def _calling(service: str) -> Iterator[None]:
    """Turn a failed call into a one-line message and a meaningful exit code."""
    try:
        yield
    except grpc.RpcError as exc:
        code = exc.code()
        errors.print(f"[red]{service}: {code.name}: {exc.details()}[/red]")
        raise typer.Exit(UNREACHABLE if code == grpc.StatusCode.UNAVAILABLE else 1) from None


def _emit(message: Message) -> None:
    console.print_json(json.dumps(MessageToDict(message, preserving_proto_field_name=True)))


@app.command()
def ingest(
    path: Annotated[Path, typer.Argument(help="Directory or zip: class folders, MVTec or CSV.")],
    dataset: Annotated[str, typer.Option(help="Dataset id to add the images to.")] = "screws",
    address: IngestionAddress = "127.0.0.1:50052",
    as_json: Json = False,
) -> None:
    """Import a directory or zip into a dataset (the ingestion service reads the path)."""
    request = ingestion_pb2.ImportRequest(path=str(path.resolve()), dataset_id=dataset)
    with _calling("ingestion"), grpc.insecure_channel(address) as channel:
        result = ingestion_pb2_grpc.IngestionServiceStub(channel).Import(request, timeout=600)
    if as_json:
        _emit(result)
        return
    table = Table(
        title=f"{dataset} v{result.dataset_version}" + (" (new)" if result.created else "")
    )
    for column in ("accepted", "duplicates", "refused"):
        table.add_column(column, justify="right")
    table.add_row(
        str(result.accepted_count), str(result.duplicate_count), str(result.refused_count)
    )
    console.print(table)
    for outcome in result.files:
        if outcome.status == ingestion_pb2.FILE_STATUS_REFUSED:
            console.print(f"  [red]refused[/red] {outcome.filename}: {outcome.reason}")


@app.command()
def demo(
    dataset: Annotated[str, typer.Option(help="Dataset id for the demo run.")] = "screws",
    address: IngestionAddress = "127.0.0.1:50052",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the run.")] = 1200.0,
) -> None:
    """The main job: render, import and follow a whole pipeline run on the local stack."""
    with _calling("ingestion"):
        code = run_demo(StackSettings(), address=address, dataset=dataset, timeout=timeout)
    raise typer.Exit(code)


@datasets_app.command("list")
def datasets_list(address: IngestionAddress = "127.0.0.1:50052", as_json: Json = False) -> None:
    """Every dataset version."""
    with _calling("ingestion"), grpc.insecure_channel(address) as channel:
        stub = ingestion_pb2_grpc.IngestionServiceStub(channel)
        page = stub.ListDatasets(ingestion_pb2.ListDatasetsRequest(page_size=500), timeout=30)
    if as_json:
        _emit(page)
        return
    table = Table(title="dataset versions")
    for column in ("dataset", "version", "images", "added", "created", "run"):
        table.add_column(column)
    for v in page.versions:
        table.add_row(
            v.dataset_id,
            str(v.version),
            str(v.image_count),
            str(v.added_count),
            v.created_at.ToDatetime().isoformat(timespec="seconds"),
            v.correlation_id,
        )
    console.print(table)


@datasets_app.command("show")
def datasets_show(
    dataset: Annotated[str, typer.Argument(help="Dataset id.")],
    version: Annotated[int | None, typer.Option(help="Version (default: newest).")] = None,
    address: IngestionAddress = "127.0.0.1:50052",
    as_json: Json = False,
) -> None:
    """One dataset version."""
    request = ingestion_pb2.GetDatasetRequest(dataset_id=dataset, version=version)
    with _calling("ingestion"), grpc.insecure_channel(address) as channel:
        found = ingestion_pb2_grpc.IngestionServiceStub(channel).GetDataset(request, timeout=30)
    if as_json:
        _emit(found)
        return
    table = Table(title=f"{found.dataset_id} v{found.version}", show_header=False)
    for key, value in MessageToDict(found, preserving_proto_field_name=True).items():
        table.add_row(key, str(value))
    console.print(table)
