"""Every error ScrewOps raises on purpose, each with the one gRPC status it maps to.

Services raise these from their transport-free core; the gRPC adapters turn them into statuses
with :func:`grpc_status`, and the bus decides from :class:`TransientError` whether a failed event
is retried or sent to its dead-letter topic. Nothing here raises a bare ``Exception``.
"""

from __future__ import annotations

import grpc

__all__ = [
    "AlreadyExistsError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "IntegrityError",
    "InvalidInputError",
    "NotFoundError",
    "PermanentError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "ScrewOpsError",
    "TransientError",
    "UnauthenticatedError",
    "UnavailableError",
    "grpc_status",
]


class ScrewOpsError(Exception):
    """Base of the typed errors. ``status`` is the gRPC code a client sees for it."""

    status: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PermanentError(ScrewOpsError):
    """Retrying cannot help: the input or the state is wrong. An event goes to its DLQ at once."""


class TransientError(ScrewOpsError):
    """A dependency is briefly unavailable; the same work may succeed if retried with backoff."""

    status = grpc.StatusCode.UNAVAILABLE


class InvalidInputError(PermanentError):
    """The request or event is malformed: empty, corrupt, wrong size, over a limit, bad schema."""

    status = grpc.StatusCode.INVALID_ARGUMENT


class NotFoundError(PermanentError):
    """A named thing (model version, dataset, image) does not exist."""

    status = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(PermanentError):
    """Creating something whose identity is taken by a different thing."""

    status = grpc.StatusCode.ALREADY_EXISTS


class FailedPreconditionError(PermanentError):
    """The system is not in a state that allows the operation (e.g. rollback with no history)."""

    status = grpc.StatusCode.FAILED_PRECONDITION


class IntegrityError(PermanentError):
    """Stored bytes do not match their recorded digest: data was lost or corrupted."""

    status = grpc.StatusCode.DATA_LOSS


class UnauthenticatedError(PermanentError):
    """No valid credentials were presented."""

    status = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(PermanentError):
    """Credentials were valid but do not allow the operation."""

    status = grpc.StatusCode.PERMISSION_DENIED


class UnavailableError(TransientError):
    """A server the operation needs (Triton, MinIO, MongoDB, Kafka) did not answer."""


class ResourceExhaustedError(TransientError):
    """Too much is in progress to take this on now (a queue is full); retry later, backing off."""

    status = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceededError(TransientError):
    """The caller's deadline passed before the work finished."""

    status = grpc.StatusCode.DEADLINE_EXCEEDED


def grpc_status(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status and detail a gRPC adapter returns for ``error``.

    Unexpected exceptions become ``INTERNAL`` with a generic detail, so internals never leak to
    a client.
    """
    if isinstance(error, ScrewOpsError):
        return error.status, error.message
    return grpc.StatusCode.INTERNAL, "internal error"
