"""``screwops``: the stack, data, datasets, labels, runs, models, inspections and events.

Exit codes mean the same for every command (see :mod:`screwops_cli.common`): 0 done, 1 failed
(the message says why), 2 bad usage, 3 a service could not be reached, 4 not found, 5 refused in
the current state, 6 not allowed, 130 interrupted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from screwops.v1 import ingestion_pb2, ingestion_pb2_grpc
from screwops_contracts.datasets import parse_label_map
from screwops_contracts.layouts import Layout
from screwops_errors import InvalidInputError
from screwops_rpc import open_channel
from screwops_settings import StackSettings
from screwops_stack.cli import app as stack_app
from screwops_synth.cli import app as data_app

from screwops_cli import dlq, events, labels, models, runs, upload
from screwops_cli.common import (
    CaFile,
    ClientCert,
    ClientKey,
    ExitCode,
    Json,
    address_option,
    calling,
    console,
    emit,
    errors,
    fail,
    message_dict,
    resolve,
    token_option,
    use_tls_options,
)
from screwops_cli.demo import run as run_demo
from screwops_cli.inspection import inspect

app = typer.Typer(
    help="ScrewOps: event-driven MLOps for screw defect detection.", no_args_is_help=True
)


def _print_version(requested: bool) -> None:
    """Eager, so ``--version`` answers before a subcommand is required."""
    if requested:
        typer.echo(f"screwops {package_version('screwops-cli')}")
        raise typer.Exit()


@app.callback()
def _options(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    ca_file: CaFile = None,
    cert: ClientCert = None,
    key: ClientKey = None,
) -> None:
    """Options that come before any command: the gRPC connections' TLS among them (every call
    goes over TLS, checked against the native stack's CA unless --ca-file names another)."""
    use_tls_options(ctx, ca_file, cert, key)


app.add_typer(stack_app, name="stack")
app.add_typer(data_app, name="data")
datasets_app = typer.Typer(help="Dataset versions.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")

IngestionAddress = Annotated[str | None, address_option("ingestion")]
IngestionToken = Annotated[str | None, token_option("ingestion")]


_LAYOUTS = {
    Layout.AUTO: ingestion_pb2.LAYOUT_AUTO,
    Layout.CLASS_FOLDERS: ingestion_pb2.LAYOUT_CLASS_FOLDERS,
    Layout.MVTEC: ingestion_pb2.LAYOUT_MVTEC,
    Layout.CSV: ingestion_pb2.LAYOUT_CSV,
}


@app.command()
def ingest(
    path: Annotated[Path, typer.Argument(help="Directory or zip: class folders, MVTec or CSV.")],
    dataset: Annotated[str, typer.Option(help="Dataset id to add the images to.")] = "screws",
    layout: Annotated[
        Layout, typer.Option(help="How labels are encoded (auto: told from the tree).")
    ] = Layout.AUTO,
    label_map: Annotated[
        str,
        typer.Option(
            help="Labels of class folders (or CSV words) with other names, e.g. "
            "'defective=bad,fine=good'. Without it such folders refuse the import.",
        ),
    ] = "",
    server_side: Annotated[
        bool,
        typer.Option(
            "--server-side",
            help="Have ingestion read PATH from its own disk (under its import_roots) instead "
            "of uploading it from here.",
        ),
    ] = False,
    parallel: Annotated[
        int, typer.Option(min=1, max=64, help="Files read and hashed at once while uploading.")
    ] = 8,
    address: IngestionAddress = None,
    token: IngestionToken = None,
    as_json: Json = False,
) -> None:
    """Upload a local directory or zip into a dataset, sending only the images it lacks."""
    try:
        mapping = parse_label_map(label_map) if label_map else {}
    except InvalidInputError as exc:
        fail(f"--label-map: {exc.message}", ExitCode.USAGE)
    target = resolve("ingestion", address)
    if server_side:
        request = ingestion_pb2.ImportRequest(
            path=str(path.resolve()),
            layout=_LAYOUTS[layout],
            dataset_id=dataset,
            label_map={word: labels.LABELS[labels.LabelWord(w)] for word, w in mapping.items()},
        )
        with calling("ingestion", target), open_channel(target, token) as channel:
            result = ingestion_pb2_grpc.IngestionServiceStub(channel).Import(request, timeout=600)
        _print_ingested(result, as_json)
        return
    with (
        calling("ingestion", target),
        upload.walk(path, layout, mapping) as (source, planned),
        open_channel(target, token) as channel,
        _progress() as progress,
    ):
        stub = ingestion_pb2_grpc.IngestionServiceStub(channel)
        done = upload.upload(stub, source, planned, dataset, workers=parallel, progress=progress)
    _print_ingested(done.result, as_json)
    if not as_json:
        console.print(f"sent {done.sent} file(s); {done.held} already in {dataset}")


@contextmanager
def _progress() -> Iterator[Callable[[str, int], upload.Advance]]:
    """Bars on stderr, gone when done, so stdout holds only the result (and JSON stays JSON)."""
    columns = (
        TextColumn("{task.description:<9}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=errors, transient=True) as bars:

        def task(description: str, total: int) -> upload.Advance:
            made = bars.add_task(description, total=total)
            return lambda step: bars.advance(made, step)

        yield task


def _print_ingested(result: ingestion_pb2.ImportResult, as_json: bool) -> None:
    if as_json:
        emit(result)
        return
    new = " (new)" if result.created else ""
    table = Table(title=f"{result.dataset_id} v{result.dataset_version}{new}")
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
    address: IngestionAddress = None,
    ingestion_token: Annotated[str | None, token_option("ingestion", "--ingestion-token")] = None,
    gateway: Annotated[str | None, address_option("gateway", "--gateway")] = None,
    gateway_token: Annotated[str | None, token_option("gateway", "--gateway-token")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the run.")] = 1200.0,
) -> None:
    """The main job: render, import and follow a whole pipeline run on the local stack."""
    target = resolve("ingestion", address)
    with calling("ingestion", target):
        code = run_demo(
            StackSettings(),
            address=target,
            dataset=dataset,
            timeout=timeout,
            ingestion_token=ingestion_token,
            gateway=resolve("gateway", gateway),
            gateway_token=gateway_token,
        )
    raise typer.Exit(code)


@datasets_app.command("list")
def datasets_list(
    address: IngestionAddress = None, token: IngestionToken = None, as_json: Json = False
) -> None:
    """Every dataset version."""
    target = resolve("ingestion", address)
    with calling("ingestion", target), open_channel(target, token) as channel:
        stub = ingestion_pb2_grpc.IngestionServiceStub(channel)
        page = stub.ListDatasets(ingestion_pb2.ListDatasetsRequest(page_size=500), timeout=30)
    if as_json:
        emit(page)
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
    address: IngestionAddress = None,
    token: IngestionToken = None,
    as_json: Json = False,
) -> None:
    """One dataset version."""
    request = ingestion_pb2.GetDatasetRequest(dataset_id=dataset, version=version)
    target = resolve("ingestion", address)
    with calling("ingestion", target), open_channel(target, token) as channel:
        found = ingestion_pb2_grpc.IngestionServiceStub(channel).GetDataset(request, timeout=30)
    if as_json:
        emit(found)
        return
    table = Table(title=f"{found.dataset_id} v{found.version}", show_header=False)
    for key, value in message_dict(found).items():
        table.add_row(key, str(value))
    console.print(table)


app.add_typer(labels.app, name="label", no_args_is_help=True)
app.add_typer(runs.app, name="runs", no_args_is_help=True)
app.add_typer(models.app, name="models", no_args_is_help=True)
app.command()(inspect)
app.add_typer(events.app, name="events", no_args_is_help=True)
app.add_typer(dlq.app, name="dlq", no_args_is_help=True)
