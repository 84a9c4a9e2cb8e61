"""The controller's registry client against a fake registry servicer on a real in-process gRPC
server (TLS, the unit tests' own CA): what each call sends, with the monitor as the actor, and a
failed call raised as the typed error of its status."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from screwops.v1 import registry_pb2, registry_pb2_grpc
from screwops_errors import FailedPreconditionError, PermissionDeniedError, UnavailableError
from screwops_monitor.registry import GrpcRegistry
from screwops_rpc import server_credentials


class FakeRegistry(registry_pb2_grpc.RegistryServiceServicer):
    """Records each request; answers ``status`` instead when one is set."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, Any]] = []
        self.status: grpc.StatusCode | None = None

    def _answer(self, method: str, request: Any, context: Any, answer: Any) -> Any:
        self.requests.append((method, request))
        if self.status is not None:
            context.abort(self.status, "rollout v2-5 of screw-classifier is at step 1, not 0")
        return answer

    def AdvanceRollout(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC's name
        return self._answer("advance", request, context, registry_pb2.RolloutChangeResponse())

    def AbortRollout(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC's name
        return self._answer("abort", request, context, registry_pb2.RolloutChangeResponse())

    def Rollback(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC's name
        return self._answer("rollback", request, context, registry_pb2.AliasChange())


@pytest.fixture
def fake() -> Iterator[tuple[FakeRegistry, GrpcRegistry]]:
    servicer = FakeRegistry()  # type: ignore[abstract]  # only the calls the controller makes
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    registry_pb2_grpc.add_RegistryServiceServicer_to_server(servicer, server)
    port = server.add_secure_port("127.0.0.1:0", server_credentials())
    server.start()
    try:
        yield servicer, GrpcRegistry(f"127.0.0.1:{port}", None, actor="monitor", timeout_s=5.0)
    finally:
        server.stop(None)


async def test_each_call_sends_the_decision_as_the_monitor(
    fake: tuple[FakeRegistry, GrpcRegistry],
) -> None:
    servicer, registry = fake
    await registry.advance_rollout(
        "screw-classifier", rollout_id="v2-5", step=0, reason="passed", request_id="r1"
    )
    await registry.abort_rollout(
        "screw-classifier", rollout_id="v2-5", reason="bad", request_id="r2"
    )
    await registry.rollback("screw-classifier", expect_version=2, reason="slo", request_id="r3")

    (_, advance), (_, abort), (_, rollback) = servicer.requests
    assert [m for m, _ in servicer.requests] == ["advance", "abort", "rollback"]
    assert (advance.model_name, advance.rollout_id, advance.expect_step) == (
        "screw-classifier",
        "v2-5",
        0,
    )
    assert advance.HasField("expect_step"), "step 0 is sent, not left unset"
    assert (advance.actor, advance.reason, advance.request_id) == ("monitor", "passed", "r1")
    assert (abort.rollout_id, abort.HasField("expect_step"), abort.request_id) == (
        "v2-5",
        False,
        "r2",
    )
    assert (rollback.expect_version, rollback.actor, rollback.request_id) == (2, "monitor", "r3")


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (grpc.StatusCode.FAILED_PRECONDITION, FailedPreconditionError),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDeniedError),
        (grpc.StatusCode.UNAVAILABLE, UnavailableError),
        (grpc.StatusCode.INTERNAL, UnavailableError),
    ],
)
async def test_a_failed_call_is_the_typed_error_of_its_status(
    fake: tuple[FakeRegistry, GrpcRegistry], status: grpc.StatusCode, error: type[Exception]
) -> None:
    servicer, registry = fake
    servicer.status = status
    with pytest.raises(error, match=f"registry: {status.name}: rollout v2-5"):
        await registry.advance_rollout(
            "screw-classifier", rollout_id="v2-5", step=0, reason="passed", request_id="r1"
        )
