"""``screwops label``: ground truth over the labeling service's gRPC API.

``import`` applies a labeling tool's export (a CSV of ``filename,label[,defect_type]``, or Label
Studio's JSON or JSON-MIN export) to a dataset's open version; ``next`` hands you unlabeled
images one at a time (saved to a folder so you can look at them) and sends the label you type;
``review list|submit`` works through the inspections the gateway queued for a person to check.
"""

from __future__ import annotations

import getpass
import json
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import grpc
import typer
from rich.table import Table
from screwops.v1 import ingestion_pb2, inspection_pb2, labeling_pb2, labeling_pb2_grpc
from screwops_rpc import open_channel

from screwops_cli.common import (
    ExitCode,
    Json,
    address_option,
    calling,
    console,
    emit,
    fail,
    message_dict,
    resolve,
    token_option,
)

app = typer.Typer(help="Labels: import an export, label images one by one, review inspections.")
review_app = typer.Typer(help="The review queue: inspections waiting for a person's verdict.")
app.add_typer(review_app, name="review", no_args_is_help=True)

Address = Annotated[str | None, address_option("labeling")]
Token = Annotated[str | None, token_option("labeling")]
Dataset = Annotated[str, typer.Option(help="The dataset whose open version gets the labels.")]
TIMEOUT_S = 60.0


class ExportFormat(StrEnum):
    """The export formats ``label import`` reads."""

    AUTO = "auto"
    CSV = "csv"
    LABEL_STUDIO = "label-studio"
    LABEL_STUDIO_MIN = "label-studio-min"


class LabelWord(StrEnum):
    """A label given on the command line."""

    GOOD = "good"
    BAD = "bad"


FORMATS = {
    ExportFormat.CSV: labeling_pb2.LABEL_FORMAT_CSV,
    ExportFormat.LABEL_STUDIO: labeling_pb2.LABEL_FORMAT_LABEL_STUDIO_JSON,
    ExportFormat.LABEL_STUDIO_MIN: labeling_pb2.LABEL_FORMAT_LABEL_STUDIO_JSON_MIN,
}
LABELS = {LabelWord.GOOD: ingestion_pb2.LABEL_GOOD, LabelWord.BAD: ingestion_pb2.LABEL_BAD}
VERDICTS = {inspection_pb2.VERDICT_GOOD: "GOOD", inspection_pb2.VERDICT_DEFECT: "DEFECT"}


def _stub(channel: grpc.Channel) -> labeling_pb2_grpc.LabelingServiceStub:
    return labeling_pb2_grpc.LabelingServiceStub(channel)


def detect_format(path: Path, content: bytes) -> ExportFormat:
    """The export's format from its content: a JSON list of tasks with ``annotations`` is Label
    Studio's full export, another JSON list its JSON-MIN; anything else is read as a CSV."""
    try:
        parsed = json.loads(content)
    except ValueError:
        if path.suffix.lower() == ".json":
            fail(f"{path} is not valid JSON", ExitCode.USAGE)
        return ExportFormat.CSV
    if not isinstance(parsed, list):
        fail(f"{path}: a Label Studio export is a JSON list of tasks", ExitCode.USAGE)
    full = any(isinstance(task, dict) and "annotations" in task for task in parsed)
    return ExportFormat.LABEL_STUDIO if full else ExportFormat.LABEL_STUDIO_MIN


@app.command("import")
def import_labels(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="The export file.")
    ],
    dataset: Dataset,
    export_format: Annotated[
        ExportFormat, typer.Option("--format", help="The export's format.")
    ] = ExportFormat.AUTO,
    annotator: Annotated[
        str, typer.Option(help="Credited where the export names nobody (default: your user).")
    ] = "",
    address: Address = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """Apply a CSV or Label Studio export's labels to a dataset's open version."""
    content = file.read_bytes()
    chosen = detect_format(file, content) if export_format == ExportFormat.AUTO else export_format
    request = labeling_pb2.ImportLabelsRequest(
        dataset_id=dataset,
        format=FORMATS[chosen],
        content=content,
        annotator=annotator or getpass.getuser(),
    )
    target = resolve("labeling", address)
    with calling("labeling", target), open_channel(target, token) as channel:
        result = _stub(channel).ImportLabels(request, timeout=TIMEOUT_S)
    if as_json:
        emit(result)
        return
    table = Table(title=f"{file.name} ({chosen}) into {dataset}")
    for column in ("applied", "unchanged", "unmatched", "invalid", "still unlabeled"):
        table.add_column(column, justify="right")
    table.add_row(
        str(result.applied_count),
        str(result.unchanged_count),
        str(result.unmatched_count),
        str(result.invalid_count),
        str(result.remaining_count),
    )
    console.print(table)
    for problem in result.problems[:20]:
        console.print(
            f"  [yellow]row {problem.row}[/yellow] {problem.reference}: {problem.reason}",
            highlight=False,
        )
    if len(result.problems) > 20:
        console.print(f"  ... and {len(result.problems) - 20} more (--json lists them)")


@app.command("next")
def next_image(
    dataset: Dataset,
    annotator: Annotated[str, typer.Option(help="Who labels (default: your user).")] = "",
    save_dir: Annotated[
        Path | None,
        typer.Option(
            file_okay=False, help="Where images are saved to look at (default: a temp folder)."
        ),
    ] = None,
    address: Address = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """Label unlabeled images one by one: g (good), b (bad) or q (quit) for each.

    With --json, reserves the next image, saves it and prints the task without asking.
    """
    who = annotator or getpass.getuser()
    folder = save_dir or Path(tempfile.mkdtemp(prefix="screwops-label-"))
    folder.mkdir(parents=True, exist_ok=True)
    target = resolve("labeling", address)
    labeled = 0
    with calling("labeling", target), open_channel(target, token) as channel:
        stub = _stub(channel)
        while True:
            request = labeling_pb2.NextUnlabeledRequest(dataset_id=dataset, annotator=who)
            try:
                task = stub.NextUnlabeled(request, timeout=TIMEOUT_S)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND or as_json or not labeled:
                    raise
                console.print(f"{exc.details()}; labeled {labeled} this time")
                return
            saved = folder / f"{task.image_sha256[:12]}-{Path(task.filename).name or 'image'}"
            saved.write_bytes(task.image)
            if as_json:
                shown = message_dict(task)
                shown.pop("image", None)
                emit(shown | {"saved_to": str(saved)})
                return
            console.print(
                f"\n[bold]{task.filename}[/bold] ({task.image_sha256[:12]}) in "
                f"{task.dataset_id} v{task.dataset_version}, {task.remaining_count} unlabeled; "
                f"saved to {saved}",
                highlight=False,
            )
            key = _ask_key()
            if key == "q":
                console.print(f"labeled {labeled} this time")
                return
            defect = None
            if key == "b":
                defect = typer.prompt("defect type (empty: none)", default="", show_default=False)
            submit = labeling_pb2.SubmitLabelRequest(
                image_sha256=task.image_sha256,
                dataset_id=task.dataset_id,
                label=ingestion_pb2.LABEL_GOOD if key == "g" else ingestion_pb2.LABEL_BAD,
                defect_type=defect or None,
                annotator=who,
            )
            answer = stub.SubmitLabel(submit, timeout=TIMEOUT_S)
            labeled += 1
            console.print(
                f"  labeled {'good' if key == 'g' else 'bad'}; {answer.remaining_count} left"
            )


def _ask_key() -> str:
    while True:
        answer = str(typer.prompt("[g]ood, [b]ad or [q]uit")).strip().lower()[:1]
        if answer in ("g", "b", "q"):
            return answer
        console.print("type g, b or q")


@review_app.command("list")
def review_list(
    line: Annotated[str, typer.Option(help="Only inspections from this line.")] = "",
    limit: Annotated[int, typer.Option(min=1, help="The most items to show.")] = 50,
    address: Address = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """Inspections waiting for review, oldest first."""
    target = resolve("labeling", address)
    request = labeling_pb2.ListReviewQueueRequest(line_id=line, page_size=limit)
    with calling("labeling", target), open_channel(target, token) as channel:
        page = _stub(channel).ListReviewQueue(request, timeout=TIMEOUT_S)
    if as_json:
        emit(page)
        return
    table = Table(title=f"review queue ({page.total_size} waiting)")
    for column in ("inspection", "line/camera", "verdict", "probability", "model", "why", "at"):
        table.add_column(column)
    for item in page.review_items:
        table.add_row(
            item.inspection_id,
            f"{item.line_id}/{item.camera_id}",
            VERDICTS.get(item.verdict, "?"),
            f"{item.defect_probability:.4f} (threshold {item.threshold:.3f})",
            f"{item.model_name} v{item.model_version}",
            item.queue_reason,
            item.inspected_at.ToDatetime().isoformat(timespec="seconds"),
        )
    console.print(table)


@review_app.command("submit")
def review_submit(
    inspection_id: Annotated[str, typer.Argument(help="The inspection reviewed.")],
    label: Annotated[LabelWord, typer.Option(help="What the screw really is.")],
    defect_type: Annotated[
        str | None, typer.Option(help="The kind of defect, for a bad screw.")
    ] = None,
    reviewer: Annotated[str, typer.Option(help="Who reviewed (default: your user).")] = "",
    address: Address = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """Record your verdict on an inspection; it becomes that inspection's ground truth."""
    target = resolve("labeling", address)
    request = labeling_pb2.SubmitReviewRequest(
        inspection_id=inspection_id,
        label=LABELS[label],
        defect_type=defect_type,
        reviewer=reviewer or getpass.getuser(),
    )
    with calling("labeling", target), open_channel(target, token) as channel:
        answer = _stub(channel).SubmitReview(request, timeout=TIMEOUT_S)
    if as_json:
        emit(answer)
        return
    agreed = "[green]agreed[/green]" if answer.verdict_correct else "[red]was wrong[/red]"
    console.print(f"recorded; the model {agreed}; {answer.remaining_count} left in the queue")
