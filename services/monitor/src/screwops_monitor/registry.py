"""The rollout controller's calls to the registry's gRPC API, as the monitor's own principal.

The registry records the principal its token names (or, without tokens, the ``actor`` sent) with
every change, so the audit trail says the monitor decided. A failed call becomes the typed error of
its status, which is what :class:`screwops_monitor.rollouts.Registry` promises.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypedDict, TypeVar

import grpc
from screwops.v1 import registry_pb2, registry_pb2_grpc
from screwops_errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    ScrewOpsError,
    UnauthenticatedError,
    UnavailableError,
)
from screwops_rpc import open_aio_channel
from screwops_settings import GrpcTlsSettings

__all__ = ["GrpcRegistry"]

T = TypeVar("T")

ERRORS: dict[grpc.StatusCode, type[ScrewOpsError]] = {
    error.status: error
    for error in (
        FailedPreconditionError,
        NotFoundError,
        InvalidInputError,
        PermissionDeniedError,
        UnauthenticatedError,
        ResourceExhaustedError,
        DeadlineExceededError,
    )
}


class _Audit(TypedDict):
    actor: str
    reason: str
    request_id: str


class GrpcRegistry:
    """:class:`screwops_monitor.rollouts.Registry` over a TLS channel to the registry at
    ``address`` (checked with ``tls``, the stack's settings when None), presenting ``token`` when
    set.

    The channel opens on the first call, inside the event loop that serves the monitor (an aio
    channel is bound to the loop it was made in), so the monitor starts without the registry.
    """

    def __init__(
        self,
        address: str,
        token: str | None,
        *,
        actor: str,
        tls: GrpcTlsSettings | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self._address = address
        self._token = token
        self._tls = tls
        self._actor = actor
        self._timeout_s = timeout_s
        self._opened: registry_pb2_grpc.RegistryServiceAsyncStub | None = None

    @property
    def _stub(self) -> registry_pb2_grpc.RegistryServiceAsyncStub:
        if self._opened is None:
            channel = open_aio_channel(self._address, self._token, tls=self._tls)
            self._opened = registry_pb2_grpc.RegistryServiceStub(channel)
        return self._opened

    async def advance_rollout(
        self, model_name: str, *, rollout_id: str, step: int, reason: str, request_id: str
    ) -> None:
        request = registry_pb2.ChangeRolloutRequest(
            model_name=model_name,
            rollout_id=rollout_id,
            expect_step=step,
            **self._audit(reason, request_id),
        )
        await _call(self._stub.AdvanceRollout(request, timeout=self._timeout_s))

    async def abort_rollout(
        self, model_name: str, *, rollout_id: str, reason: str, request_id: str
    ) -> None:
        request = registry_pb2.ChangeRolloutRequest(
            model_name=model_name, rollout_id=rollout_id, **self._audit(reason, request_id)
        )
        await _call(self._stub.AbortRollout(request, timeout=self._timeout_s))

    async def rollback(
        self, model_name: str, *, expect_version: int, reason: str, request_id: str
    ) -> None:
        request = registry_pb2.RollbackRequest(
            model_name=model_name, expect_version=expect_version, **self._audit(reason, request_id)
        )
        await _call(self._stub.Rollback(request, timeout=self._timeout_s))

    def _audit(self, reason: str, request_id: str) -> _Audit:
        """The fields every change carries: the monitor as its actor, why, and the id a retry
        reuses."""
        return {"actor": self._actor, "reason": reason, "request_id": request_id}


async def _call(pending: Awaitable[T]) -> T:
    """Await one call, its failure turned into the typed error of its status (UNAVAILABLE and
    any status without one of its own: :class:`UnavailableError`, worth asking again)."""
    try:
        return await pending
    except grpc.aio.AioRpcError as failed:
        error = ERRORS.get(failed.code(), UnavailableError)
        raise error(f"registry: {failed.code().name}: {failed.details() or ''}") from failed
