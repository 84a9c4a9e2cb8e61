"""``screwops runs``: the trainer's runs, read from its records in MongoDB.

The trainer writes a run's record when it starts, adds each epoch's metrics as training goes and
completes it when the model is stored (``finished``) or the run failed (``failed``). These
commands read those records through their contract (``screwops_contracts.runs``, the schema the
trainer writes them with), so they show exactly what the trainer wrote without the trainer
package.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any, Protocol, cast

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from screwops_contracts.runs import RUNS, RunRecord, RunStatus, run_record
from screwops_errors import TransientError
from screwops_settings import StackSettings
from screwops_storage import Document, database, mongo_errors

from screwops_cli.common import ExitCode, Json, calling, console, emit, fail

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from motor.motor_asyncio import AsyncIOMotorDatabase

app = typer.Typer(help="Training runs, with their epochs (from the trainer's records).")

# Metrics shown beside the progress bar and in the epochs table, when the run has them.
SHOWN_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


class RunStore(Protocol):
    """What these commands read."""

    async def run(self, run: str) -> RunRecord | None:
        """One run's record."""
        ...

    async def list_runs(
        self, *, limit: int = 50, dataset_id: str | None = None, status: RunStatus | None = None
    ) -> list[RunRecord]:
        """The latest runs first."""
        ...


class MongoRuns:
    """:class:`RunStore` over the trainer's collection (read-only)."""

    def __init__(self, db: AsyncIOMotorDatabase[Document]) -> None:
        self._collection = db[RUNS]

    async def run(self, run: str) -> RunRecord | None:
        with mongo_errors():
            found = await self._collection.find_one({"_id": run})
        return None if found is None else run_record(found)

    async def list_runs(
        self, *, limit: int = 50, dataset_id: str | None = None, status: RunStatus | None = None
    ) -> list[RunRecord]:
        query: dict[str, Any] = {}
        if dataset_id is not None:
            query["dataset_id"] = dataset_id
        if status is not None:
            query["status"] = status
        with mongo_errors():
            found = await (
                self._collection.find(query).sort("started_at", -1).limit(limit).to_list(limit)
            )
        return [run_record(document) for document in found]


@asynccontextmanager
async def mongo_store() -> AsyncIterator[RunStore]:
    """The trainer's runs on the stack's MongoDB."""
    db = database(StackSettings().mongo, appname="screwops-cli")
    try:
        yield MongoRuns(db)
    finally:
        db.client.close()


# Tests replace this to read from memory.
open_store: Callable[[], AbstractAsyncContextManager[RunStore]] = mongo_store

Status = Annotated[
    str | None, typer.Option(help="Only runs in this status: running, finished or failed.")
]


@app.command("list")
def list_runs(
    dataset: Annotated[str | None, typer.Option(help="Only runs of this dataset.")] = None,
    status: Status = None,
    limit: Annotated[int, typer.Option(min=1, help="The most runs to show.")] = 20,
    as_json: Json = False,
) -> None:
    """The latest runs first."""
    if status not in (None, "running", "finished", "failed"):
        fail(f"unknown status {status!r}: running, finished or failed", ExitCode.USAGE)

    async def read() -> list[RunRecord]:
        async with open_store() as store:
            wanted = cast("RunStatus | None", status)
            return await store.list_runs(limit=limit, dataset_id=dataset, status=wanted)

    with calling("MongoDB (trainer's runs)"):
        runs = asyncio.run(read())
    if as_json:
        emit([run.model_dump(mode="json") for run in runs])
        return
    table = Table(title="training runs")
    for column in ("run", "status", "dataset", "epochs", "best", "accuracy", "started", "took"):
        table.add_column(column)
    for run in runs:
        table.add_row(
            run.run_id,
            _status(run.status),
            f"{run.dataset_id} v{run.dataset_version}",
            f"{len(run.epochs)}/{_planned(run)}",
            str(run.best_epoch or ""),
            _metric(run.metrics.get("accuracy", run.metrics.get("val_accuracy"))),
            run.started_at.isoformat(timespec="seconds"),
            f"{run.training_seconds:.0f}s" if run.training_seconds is not None else "",
        )
    console.print(table)
    if not runs:
        console.print("no runs yet")


@app.command("show")
def show(
    run_id: Annotated[str, typer.Argument(help="The run's id (run-...).")],
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="Show epochs live until the run finishes or fails; exit 0 if it finished, "
            "1 if it failed.",
        ),
    ] = False,
    interval: Annotated[
        float, typer.Option(min=0.1, help="Seconds between reads when following.")
    ] = 2.0,
    as_json: Json = False,
) -> None:
    """One run: its data, params, epochs and outcome."""
    with calling("MongoDB (trainer's runs)"):
        run = asyncio.run(_follow(run_id, interval, quiet=as_json) if follow else _one(run_id))
    if as_json:
        emit(run.model_dump(mode="json"))
    else:
        _print_run(run)
    if follow and run.status == "failed":
        raise typer.Exit(int(ExitCode.FAILED))


async def _one(run_id: str) -> RunRecord:
    async with open_store() as store:
        run = await store.run(run_id)
    if run is None:
        fail(f"no run {run_id!r} (`screwops runs list` shows the latest)", ExitCode.NOT_FOUND)
    return run


async def _follow(run_id: str, interval: float, *, quiet: bool) -> RunRecord:
    """Read the run every ``interval`` s until it is no longer running; no deadline."""
    async with open_store() as store:
        run = await store.run(run_id)
        if run is None:
            fail(f"no run {run_id!r} (`screwops runs list` shows the latest)", ExitCode.NOT_FOUND)
        if quiet or run.status != "running":
            while run.status == "running":
                await asyncio.sleep(interval)
                run = await _reread(store, run)
            return run
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("epochs"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=console,
        )
        with progress:
            task = progress.add_task(run.run_id, total=_planned(run), metrics="")
            while True:
                progress.update(
                    task,
                    completed=len(run.epochs),
                    description=f"{run.run_id} ({run.status}, attempt {run.attempts})",
                    metrics=epoch_figures(run),
                )
                if run.status != "running":
                    break
                await asyncio.sleep(interval)
                run = await _reread(store, run)
    return run


async def _reread(store: RunStore, last: RunRecord) -> RunRecord:
    """The run again; while the database is briefly away, the last record read."""
    try:
        found = await store.run(last.run_id)
    except TransientError:
        return last
    if found is None:
        fail(f"run {last.run_id!r} disappeared", ExitCode.NOT_FOUND)
    return found


def _planned(run: RunRecord) -> int:
    """Epochs the run may take, for a progress bar: at least those it took, and never 0."""
    return run.planned_epochs or max(len(run.epochs), 1)


def epoch_figures(run: RunRecord) -> str:
    """The latest epoch's metrics, for a progress line."""
    if not run.epochs:
        return ""
    metrics = run.epochs[-1].metrics
    return "  ".join(f"{name} {metrics[name]:.4f}" for name in SHOWN_METRICS if name in metrics)


def _metric(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _status(status: str) -> str:
    colour = {"finished": "green", "failed": "red"}.get(status, "yellow")
    return f"[{colour}]{status}[/{colour}]"


def _print_run(run: RunRecord) -> None:
    summary = Table(title=f"{run.run_id} ({_status(run.status)})", show_header=False)
    rows: list[tuple[str, Any]] = [
        ("model", run.model_name),
        ("dataset", f"{run.dataset_id} v{run.dataset_version} ({run.dataset_digest[:12]})"),
        ("split", ", ".join(f"{k} {v}" for k, v in run.split_counts.items())),
        ("params", ", ".join(f"{k}={v}" for k, v in sorted(run.params.items()))),
        ("seed", run.seed),
        ("git", run.git_sha),
        ("attempts", run.attempts),
        ("epochs", f"{len(run.epochs)}/{_planned(run)}"),
        ("best epoch", run.best_epoch or ""),
        ("metrics", ", ".join(f"{k} {v:.4f}" for k, v in sorted(run.metrics.items()))),
        ("took", f"{run.training_seconds:.1f}s" if run.training_seconds is not None else ""),
        ("started", run.started_at.isoformat(timespec="seconds")),
        ("finished", run.finished_at.isoformat(timespec="seconds") if run.finished_at else ""),
        ("artifact", run.artifact_key),
        ("run", run.correlation_id),
        ("error", run.error or ""),
    ]
    for key, value in rows:
        if value != "":
            summary.add_row(key, str(value))
    console.print(summary)
    if not run.epochs:
        return
    names = [n for n in SHOWN_METRICS if any(n in e.metrics for e in run.epochs)]
    epochs = Table(title="epochs")
    epochs.add_column("epoch", justify="right")
    for name in names:
        epochs.add_column(name, justify="right")
    for epoch in run.epochs:
        epochs.add_row(str(epoch.epoch), *(_metric(epoch.metrics.get(name)) for name in names))
    console.print(epochs)
