"""``screwops ingest`` against a fake ingestion servicer: the label map reaches the request, and a
label map that names an unknown label stops the command before anything is sent."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from screwops.v1 import ingestion_pb2, ingestion_pb2_grpc

from tests.unit.cli.support import screwops, serving


@dataclass
class FakeIngestion(ingestion_pb2_grpc.IngestionServiceServicer):
    imports: list[Any] = field(default_factory=list)

    def Import(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.imports.append(request)
        return ingestion_pb2.ImportResult(
            dataset_id=request.dataset_id, dataset_version=1, accepted_count=2, created=True
        )

    def Upload(self, request_iterator: Any, context: Any) -> Any:  # noqa: N802
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not used by ingest")

    def GetDataset(self, request: Any, context: Any) -> Any:  # noqa: N802
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not used by ingest")

    def ListDatasets(self, request: Any, context: Any) -> Any:  # noqa: N802
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not used by ingest")


def test_the_label_map_reaches_the_import_request(tmp_path: Path) -> None:
    fake = FakeIngestion()
    with serving(ingestion_pb2_grpc.add_IngestionServiceServicer_to_server, fake) as address:
        result = screwops(
            "ingest",
            str(tmp_path),
            "--label-map",
            "Defective=bad, fine=ok",
            "--address",
            address,
        )
    assert result.exit_code == 0, result.output
    [request] = fake.imports
    assert dict(request.label_map) == {
        "defective": ingestion_pb2.LABEL_BAD,
        "fine": ingestion_pb2.LABEL_GOOD,
    }


def test_a_label_map_naming_an_unknown_label_exits_2_and_imports_nothing(tmp_path: Path) -> None:
    fake = FakeIngestion()
    with serving(ingestion_pb2_grpc.add_IngestionServiceServicer_to_server, fake) as address:
        result = screwops(
            "ingest", str(tmp_path), "--label-map", "defective=broken", "--address", address
        )
    assert result.exit_code == 2
    assert "--label-map: label map entry 'defective=broken': unknown label 'broken'" in (
        result.output
    )
    assert fake.imports == []
