"""``screwops inspect`` against a fake gateway: one row per file, a refused file does not stop
the others, a token travels as bearer metadata, and a call-wide error stops the command."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from screwops.v1 import inspection_pb2, inspection_pb2_grpc

from tests.unit.cli.support import closed_port, screwops, serving

TOKEN = "a-token-of-sixteen-chars"


@dataclass
class FakeGateway(inspection_pb2_grpc.InspectionServiceServicer):
    token: str | None = None
    requests: list[Any] = field(default_factory=list)

    def InspectStream(self, request_iterator: Any, context: Any) -> Any:  # noqa: N802
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not used by the CLI")

    def Inspect(self, request: Any, context: Any) -> Any:  # noqa: N802
        if self.token is not None:
            metadata = dict(context.invocation_metadata())
            if metadata.get("authorization") != f"Bearer {self.token}":
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token")
        self.requests.append(request)
        if not request.image.startswith(b"\x89PNG"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "not an image")
        pinned = request.model_version if request.HasField("model_version") else 7
        if pinned == 99:
            context.abort(grpc.StatusCode.NOT_FOUND, "version 99 is not loaded")
        defect = b"defect" in request.image
        return inspection_pb2.InspectResponse(
            verdict=inspection_pb2.VERDICT_DEFECT if defect else inspection_pb2.VERDICT_GOOD,
            defect_probability=0.9 if defect else 0.1,
            threshold=0.5,
            model_name="screw-classifier",
            model_version=pinned,
            request_id=request.request_id,
            timings=inspection_pb2.Timings(total_ms=3.5),
            inspection_id="insp-1",
        )


@pytest.fixture
def gateway() -> Iterator[tuple[FakeGateway, str]]:
    fake = FakeGateway()
    with serving(inspection_pb2_grpc.add_InspectionServiceServicer_to_server, fake) as address:
        yield fake, address


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    files = {
        "good": b"\x89PNG good screw",
        "defect": b"\x89PNG defect screw",
        "text": b"hello",
    }
    for name, data in files.items():
        (tmp_path / f"{name}.png").write_bytes(data)
    return {name: tmp_path / f"{name}.png" for name in files}


def test_every_file_gets_its_verdict_and_a_refused_one_does_not_stop_the_rest(
    gateway: tuple[FakeGateway, str], images: dict[str, Path], tmp_path: Path
) -> None:
    fake, address = gateway
    missing = tmp_path / "missing.png"
    result = screwops(
        "inspect",
        str(images["good"]),
        str(images["text"]),
        str(missing),
        str(images["defect"]),
        "--address",
        address,
        "--json",
    )

    assert result.exit_code == 1
    rows = json.loads(result.stdout)
    assert [(r["file"], r["ok"], r["verdict"]) for r in rows] == [
        (str(images["good"]), True, "GOOD"),
        (str(images["text"]), False, ""),
        (str(missing), False, ""),
        (str(images["defect"]), True, "DEFECT"),
    ]
    assert rows[1]["error"] == "INVALID_ARGUMENT: not an image"
    assert rows[2]["error"].startswith("cannot read")
    assert rows[3]["defect_probability"] == pytest.approx(0.9)
    assert rows[3]["model_version"] == 7
    assert rows[3]["gateway_ms"] == pytest.approx(3.5)
    assert rows[3]["latency_ms"] > 0
    assert "2 of 4 images failed" in result.stderr
    assert len(fake.requests) == 3


def test_the_table_and_the_line_and_camera_sent(
    gateway: tuple[FakeGateway, str], images: dict[str, Path]
) -> None:
    fake, address = gateway
    result = screwops(
        "inspect",
        str(images["good"]),
        "--line",
        "line-3",
        "--camera",
        "cam-b",
        "--address",
        address,
    )
    assert result.exit_code == 0, result.output
    assert "GOOD" in result.stdout
    assert "screw-classifier v7" in result.stdout
    assert (fake.requests[0].line_id, fake.requests[0].camera_id) == ("line-3", "cam-b")
    assert not fake.requests[0].HasField("model_version")


def test_a_pinned_version_is_sent_and_one_not_loaded_stops_with_4(
    gateway: tuple[FakeGateway, str], images: dict[str, Path]
) -> None:
    fake, address = gateway
    pinned = screwops(
        "inspect", str(images["good"]), "--version", "3", "--address", address, "--json"
    )
    assert pinned.exit_code == 0, pinned.output
    assert json.loads(pinned.stdout)[0]["model_version"] == 3

    missing = screwops(
        "inspect",
        str(images["good"]),
        str(images["defect"]),
        "--version",
        "99",
        "--address",
        address,
    )
    assert missing.exit_code == 4
    assert "gateway: NOT_FOUND: version 99 is not loaded" in missing.stderr
    assert len(fake.requests) == 2  # the first file stopped the command


def test_the_token_travels_as_bearer_metadata(
    gateway: tuple[FakeGateway, str], images: dict[str, Path]
) -> None:
    fake, address = gateway
    fake.token = TOKEN

    by_option = screwops("inspect", str(images["good"]), "--token", TOKEN, "--address", address)
    by_env = screwops(
        "inspect", str(images["good"]), "--address", address, env={"SCREWOPS_GATEWAY_TOKEN": TOKEN}
    )
    wrong = screwops(
        "inspect",
        str(images["good"]),
        str(images["defect"]),
        "--token",
        "nope",
        "--address",
        address,
    )

    assert by_option.exit_code == 0, by_option.output
    assert by_env.exit_code == 0, by_env.output
    assert wrong.exit_code == 6
    assert "UNAUTHENTICATED: invalid bearer token" in wrong.stderr


def test_an_unreachable_gateway_exits_3(images: dict[str, Path]) -> None:
    result = screwops("inspect", str(images["good"]), "--address", closed_port())
    assert result.exit_code == 3
    assert "gateway: UNAVAILABLE" in result.stderr


def test_round_robin_spreads_the_images_over_every_gateway_address(
    images: dict[str, Path],
) -> None:
    first, second = FakeGateway(), FakeGateway()
    add = inspection_pb2_grpc.add_InspectionServiceServicer_to_server
    with serving(add, first) as one, serving(add, second) as other:
        both = f"ipv4:{one},{other}"
        files = [str(images["good"])] * 6
        by_default = screwops("inspect", *files, "--address", both)
        assert by_default.exit_code == 0, by_default.output
        assert sorted([len(first.requests), len(second.requests)]) == [0, 6]
        for asked in (["--balancing", "round_robin"], []):
            first.requests.clear()
            second.requests.clear()
            result = screwops(
                "inspect",
                *files,
                "--address",
                both,
                *asked,
                env={} if asked else {"SCREWOPS_GATEWAY_BALANCING": "round_robin"},
            )
            assert result.exit_code == 0, result.output
            assert first.requests
            assert second.requests
