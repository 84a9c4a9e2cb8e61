"""What every page shares: health, the overview, security headers, settings, records, charts."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from PIL import Image
from screwops_console.charts import learning_curve
from screwops_console.config import ConsoleSettings
from screwops_console.images import THUMBNAIL_PX, data_uri, thumbnail
from screwops_console.records import MinioReports, report_key
from screwops_console.web import create_app
from screwops_contracts.datasets import Bucket
from screwops_contracts.runs import EpochRecord
from screwops_errors import PermissionDeniedError
from screwops_gateway.config import GatewaySettings
from screwops_ingestion.config import IngestionSettings
from screwops_labeling.config import LabelingSettings
from screwops_registry.config import RegistrySettings

from tests.fakes import FakeObjects
from tests.unit.console.conftest import Console, log_in, settings_for
from tests.unit.console.fakes import Fakes, closed_port, png


def test_healthz_answers(console: TestClient) -> None:
    assert console.get("/healthz").json() == {"status": "ok", "service": "console"}


def test_the_overview_shows_each_services_health(make_console: Console) -> None:
    page = make_console().get("/").text
    assert page.count(">SERVING<") == 4
    page = make_console(registry_address=closed_port()).get("/").text
    assert page.count(">SERVING<") == 3
    assert ">UNAVAILABLE<" in page


def test_pages_forbid_other_origins_and_inline_scripts(console: TestClient) -> None:
    headers = console.get("/pipeline").headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"


def test_a_form_posted_from_another_site_is_refused(console: TestClient) -> None:
    answer = console.post(
        "/pipeline/rollback",
        data={"reason": "y"},
        headers={"Origin": "https://evil.example"},
    )
    assert answer.status_code == 403
    same = console.post(
        "/pipeline/rollback",
        data={"reason": "y"},
        headers={"Origin": "http://testserver"},
        follow_redirects=False,
    )
    assert same.status_code == 303


def test_static_assets_are_served_locally(console: TestClient) -> None:
    assert "reclassify" in console.get("/static/console.js").text
    assert console.get("/static/console.css").status_code == 200
    page = console.get("/inspection").text
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")


def test_default_addresses_are_each_services_own(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GATEWAY", "INGESTION", "LABELING", "REGISTRY", "CONSOLE"):
        for suffix in ("GRPC_HOST", "GRPC_PORT", "ADDRESS"):
            monkeypatch.delenv(f"SCREWOPS_{name}_{suffix}", raising=False)
    settings = ConsoleSettings()
    for address, service in (
        (settings.gateway_address, GatewaySettings),
        (settings.ingestion_address, IngestionSettings),
        (settings.labeling_address, LabelingSettings),
        (settings.registry_address, RegistrySettings),
    ):
        fields = service.model_fields
        assert address == f"{fields['grpc_host'].default}:{fields['grpc_port'].default}"
    assert (settings.metrics_port, settings.http_port) == (9109, 8080)


async def test_reports_are_read_from_the_datasets_bucket() -> None:
    objects = FakeObjects()
    body = json.dumps(
        {
            "dataset_id": "screws",
            "version": 2,
            "passed": False,
            "assertions": [{"name": "a", "passed": False, "message": "m", "observed": 1}],
            "split": {},  # the rest of the report is not read
        }
    ).encode()
    await objects.put_named(Bucket.DATASETS, "screws/v2/validation/report.json", body)
    await objects.put_named(Bucket.DATASETS, "screws/v2/validation/report.html", b"<html>")
    reports = MinioReports(objects)
    summary = await reports.summary("screws", 2)
    assert summary is not None
    assert not summary.passed
    assert [check.name for check in summary.failed] == ["a"]
    assert await reports.html("screws", 2) == b"<html>"
    assert await reports.summary("screws", 3) is None
    await objects.put_named(Bucket.DATASETS, "screws/v3/validation/report.json", b"{oops")
    assert await reports.summary("screws", 3) is None


async def test_gate_checks_are_read_from_the_evaluation_report_in_the_models_bucket() -> None:
    objects = FakeObjects()
    body = json.dumps(
        {
            "evaluation_id": "eval-4",
            "passed": False,
            "gate": {"min_accuracy": 0.95},
            "checks": [
                {"name": "accuracy", "passed": False, "observed": 0.9, "expected": "> 0.95"},
                {"name": "roc_auc", "passed": True, "observed": 0.97, "expected": ">= 0.9"},
            ],
            "images": [],  # the rest of the report is not read
        }
    ).encode()
    await objects.put_named(Bucket.MODELS, "evaluations/eval-4.json", body)
    reports = MinioReports(objects)
    gate = await reports.gate("evaluations/eval-4.json")
    assert gate is not None
    assert not gate.passed
    assert [(c.name, c.passed, c.expected) for c in gate.checks] == [
        ("accuracy", False, "> 0.95"),
        ("roc_auc", True, ">= 0.9"),
    ]
    assert await reports.gate("evaluations/eval-5.json") is None
    assert await reports.gate("") is None  # a version registered without a report
    await objects.put_named(Bucket.MODELS, "evaluations/eval-5.json", b"{oops")
    assert await reports.gate("evaluations/eval-5.json") is None


class DeniedObjects:
    """A MinIO whose user may not read the bucket asked for."""

    async def get_verified(self, bucket: str, key: str, *, sha256: str | None = None) -> bytes:
        raise PermissionDeniedError(f"MinIO denied access to {bucket}/{key}")


async def test_an_evaluation_report_the_console_may_not_read_leaves_the_metrics_ungated() -> None:
    assert await MinioReports(DeniedObjects()).gate("evaluations/eval-4.json") is None


@pytest.mark.parametrize(("dataset", "version"), [("..", 1), ("a/b", 1), ("", 1), ("ok", 0)])
def test_report_keys_stay_inside_their_version(dataset: str, version: int) -> None:
    with pytest.raises(ValueError, match="no dataset version"):
        report_key(dataset, version, "html")


def test_a_learning_curve_draws_each_series_it_has() -> None:
    ended = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    epochs = [EpochRecord(epoch=n, metrics={"loss": 1 / n}, ended_at=ended) for n in range(1, 4)]
    chart = learning_curve(epochs, ("loss", "val_loss"), title="loss", best_epoch=2)
    assert chart is not None
    assert chart.count("<polyline") == 1
    assert 'data-metric="loss"' in chart
    assert "best epoch" in chart
    assert chart == learning_curve(epochs, ("loss", "val_loss"), title="loss", best_epoch=2)
    assert learning_curve(epochs, ("accuracy",), title="accuracy") is None
    one = learning_curve(epochs[:1], ("loss",), title="<loss>")
    assert one is not None
    assert "<circle" in one
    assert "&lt;loss&gt;" in one


def test_thumbnails_and_data_uris_only_for_images() -> None:
    small = thumbnail(png(100, size=512))
    assert small is not None
    assert small.startswith("data:image/png;base64,")
    assert thumbnail(b"not an image") is None
    with Image.open(io.BytesIO(base64.b64decode(small.partition(",")[2]))) as image:
        assert max(image.size) <= THUMBNAIL_PX
    assert data_uri(png(1)) is not None
    assert data_uri(b"<svg/>") is None


def _encoded(image: Image.Image, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", **options)
    return out.getvalue()


@pytest.mark.parametrize(
    "data",
    [
        # 25 megapixels of one colour in about 25 KB: past the gateway's 4096x4096.
        _encoded(Image.new("L", (5000, 5000))),
        # An animated PNG: the gateway refuses it, so no first frame is shown for it either.
        _encoded(
            Image.new("L", (64, 64)),
            save_all=True,
            append_images=[Image.new("L", (64, 64), 255)],
        ),
    ],
    ids=["huge-in-a-small-file", "two-frames"],
)
def test_thumbnails_obey_the_gateways_decode_limits(data: bytes) -> None:
    assert thumbnail(data) is None


def test_a_browsers_cross_site_marker_is_refused_too(console: TestClient) -> None:
    answer = console.post(
        "/labeling/review",
        data={"inspection_id": "insp-7", "label": "good"},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert answer.status_code == 403


def test_requests_are_counted_by_route_and_status(fakes: Fakes, address: str) -> None:
    reader = InMemoryMetricReader()
    app = create_app(
        settings_for(address),
        fakes.runs,
        fakes.reports,
        meter_provider=MeterProvider(metric_readers=[reader]),
    )
    with TestClient(app) as client:
        log_in(client, "vic")
        client.get("/healthz")
        client.get("/reports/screws/v9")
    data = reader.get_metrics_data()
    assert data is not None
    counted = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != "screwops_console_requests":
                    continue
                for point in metric.data.data_points:
                    assert isinstance(point, NumberDataPoint)
                    labels = dict(point.attributes or {})
                    counted[(labels["route"], labels["status"])] = point.value
    assert counted == {
        ("/login", "200"): 1,
        ("/login", "303"): 1,
        ("/healthz", "200"): 1,
        ("/reports/{dataset_id}/v{version}", "404"): 1,
    }
