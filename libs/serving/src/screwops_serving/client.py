"""Triton over gRPC for ScrewOps: load and unload models, ask what serves, run inferences.

The registry (deployments), the evaluator (infra validation under ``STAGING_MODEL_NAME``) and the
gateway (every inspection) talk to Triton through :class:`TritonModels`, so each sees Triton's
failures as the same typed errors of ``screwops_errors``:

========================================================  ==============================
Triton / the channel                                      raised
========================================================  ==============================
server unreachable, overloaded, request cancelled         :class:`UnavailableError`
unknown model, unknown version, model not loaded          :class:`NotFoundError`
batch of the wrong shape or type, batch too large         :class:`InvalidInputError`
the call's deadline passed                                :class:`DeadlineExceededError`
a model that cannot load or fails while answering         :class:`FailedPreconditionError`
========================================================  ==============================

Seen on Triton 2.51: an unknown model or version and a model with no loaded version all answer
``NOT_FOUND``; a version that fails to load answers ``INVALID_ARGUMENT`` to the load request while
the model's other versions keep serving.

Every ScrewOps stack starts Triton with its model-control API (load, unload, the repository index)
restricted to callers sending the stack's model-control key in ``MODEL_CONTROL_HEADER``; only the
registry and the evaluator hold it. Triton refuses anyone else with ``UNAVAILABLE: This protocol is
restricted``, which is no outage to retry: it is raised as :class:`PermissionDeniedError`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import tritonclient.grpc.aio as grpcclient
from screwops_contracts.models import (
    FRAMES_INPUT,
    MODEL_CONTROL_HEADER,
    PART_FOUND_MIN,
    PART_FOUND_OUTPUT,
    PROBABILITY_OUTPUT,
)
from screwops_errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    ScrewOpsError,
    UnavailableError,
)
from tritonclient.utils import InferenceServerException

__all__ = ["MODEL_CONTROL_GRPC_HEADER", "Scores", "TritonModels", "frame_shape"]

T = TypeVar("T")

MODEL_CONTROL_GRPC_HEADER = f"triton-grpc-protocol-{MODEL_CONTROL_HEADER}"
"""Where Triton reads the model-control key from over gRPC: the header under Triton's prefix for
a restricted gRPC protocol (over HTTP it is ``MODEL_CONTROL_HEADER`` itself)."""


def frame_shape(frame_size: int) -> tuple[int, int, int]:
    """One frame as a model of ``frame_size`` takes it (``screwops_imaging.fit_frame``); a batch
    adds a first axis."""
    return (frame_size, frame_size, 1)


@dataclass(frozen=True)
class Scores:
    """A model's answer for a batch of frames, one entry per frame.

    ``probability`` is the defect probability in [0, 1]; ``found`` is 1.0 where the model found a
    screw in the frame and 0.0 where it found none, where the probability was computed on
    background and must not be used (see :attr:`part_found`).
    """

    probability: npt.NDArray[np.float32]
    found: npt.NDArray[np.float32]

    @property
    def part_found(self) -> npt.NDArray[np.bool_]:
        """Whether each frame held a screw, the probability of which may then be used."""
        return self.found >= PART_FOUND_MIN


_READY = "READY"
_UNAVAILABLE = "UNAVAILABLE"
_UNLOADING = "UNLOADING"
_UNLOADED = "unloaded"
_NOT_FOUND = "StatusCode.NOT_FOUND"
_INVALID = "StatusCode.INVALID_ARGUMENT"
_DEADLINE = "StatusCode.DEADLINE_EXCEEDED"
_RESTRICTED = "This protocol is restricted"
_TRANSIENT = frozenset(
    {
        "StatusCode.UNAVAILABLE",
        "StatusCode.RESOURCE_EXHAUSTED",
        "StatusCode.ABORTED",
    }
)


class TritonModels:
    """An async client for one Triton server, with typed errors (see the module docstring).

    The gRPC channel is opened on first use, inside the event loop that uses it (a grpc.aio
    channel is bound to the loop it was created in), and closed by :meth:`close`.

    Args:
        url: Triton's gRPC address, ``host:port``.
        load_timeout_s: how long a load or unload may take unless the call says otherwise;
            loading a TensorFlow version takes seconds to tens of seconds on a busy CPU.
        call_timeout_s: how long the cheap calls (readiness, the repository index) may take.
        model_control_key: the stack's model-control key, for the clients that load and unload
            models (``screwops_settings.triton_model_control_key``); None for one that only
            infers and asks about readiness (the gateway), which Triton refuses model control.
    """

    def __init__(
        self,
        url: str,
        *,
        load_timeout_s: float = 300.0,
        call_timeout_s: float = 10.0,
        model_control_key: str | None = None,
    ) -> None:
        self.url = url
        self._load_timeout_s = load_timeout_s
        self._call_timeout_s = call_timeout_s
        # Sent with model-control calls only; never in a message, a repr or a log.
        self._control_headers = (
            {MODEL_CONTROL_GRPC_HEADER: model_control_key} if model_control_key else None
        )
        self._client: grpcclient.InferenceServerClient | None = None

    @property
    def controls_models(self) -> bool:
        """Whether this client holds the model-control key (may load, unload, read the index)."""
        return self._control_headers is not None

    async def __aenter__(self) -> TritonModels:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel; a later call opens a new one."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    async def load(self, name: str, *, timeout_s: float | None = None) -> None:
        """Load (or reload) every version of ``name`` present in the repository, within
        ``timeout_s`` (unset: the client's ``load_timeout_s``).

        Versions already loaded and unchanged keep serving throughout; versions removed from
        the repository are unloaded; added ones are loaded. Returns once Triton has finished.

        Raises:
            FailedPreconditionError: Triton could not load a version (a broken artifact, a bad
                config); the versions that did load keep serving.
            PermissionDeniedError: Triton refused: this client has no, or the wrong,
                model-control key.
            UnavailableError, DeadlineExceededError: Triton did not answer in time.
        """
        timeout = self._load_timeout_s if timeout_s is None else timeout_s
        with _triton_errors(f"loading {name}", load=True):
            await self._call(
                lambda c: c.load_model(name, headers=self._control_headers, client_timeout=timeout)
            )

    async def unload(self, name: str, *, timeout_s: float | None = None) -> None:
        """Stop serving every version of ``name`` (its files stay in the repository), within
        ``timeout_s`` (unset: the client's ``load_timeout_s``); PermissionDeniedError as for
        :meth:`load`."""
        timeout = self._load_timeout_s if timeout_s is None else timeout_s
        with _triton_errors(f"unloading {name}"):
            await self._call(
                lambda c: c.unload_model(
                    name, headers=self._control_headers, client_timeout=timeout
                )
            )

    async def ready(self, name: str, version: int | None = None) -> bool:
        """Whether ``version`` of ``name`` (any version when None) can answer now."""
        with _triton_errors(f"asking whether {_label(name, version)} is ready"):
            ready = await self._call(
                lambda c: c.is_model_ready(
                    name, _version(version), client_timeout=self._call_timeout_s
                )
            )
        return bool(ready)

    async def wait_ready(
        self, name: str, version: int | None, *, timeout_s: float, interval_s: float = 0.25
    ) -> None:
        """Wait until ``version`` of ``name`` is ready, for a load started elsewhere.

        Raises:
            DeadlineExceededError: it was not ready within ``timeout_s``.
            UnavailableError: Triton did not answer.
        """
        deadline = time.monotonic() + timeout_s
        while not await self.ready(name, version):
            if time.monotonic() >= deadline:
                raise DeadlineExceededError(
                    f"{_label(name, version)} was not ready within {timeout_s:g} s"
                )
            await asyncio.sleep(interval_s)

    async def loaded_versions(self, name: str) -> list[int]:
        """The versions of ``name`` Triton serves now (ready in its repository index), ascending.

        The index keeps entries for versions that failed to load or were removed, so only
        ``READY`` ones are counted.
        """
        return (await self.served()).get(name, [])

    async def unloaded(self, name: str, version: int) -> bool:
        """Whether this Triton is unloading ``version`` of ``name``, or has unloaded it, on
        purpose (its index says ``UNLOADING``, then ``UNAVAILABLE: unloaded``): it will not come
        back by waiting, unlike a version that is still loading or that a restarted Triton has
        not loaded yet.

        The index is model control: a client without the key (the gateway) cannot tell, and
        answers False without asking, so its caller waits for the version as for one loading.
        """
        if not self.controls_models:
            return False
        return any(
            entry.get("name") == name
            and entry.get("version") == str(version)
            and (
                entry.get("state") == _UNLOADING
                or (entry.get("state") == _UNAVAILABLE and entry.get("reason") == _UNLOADED)
            )
            for entry in await self._index()
        )

    async def served(self) -> dict[str, list[int]]:
        """Every model Triton serves now, with its ready versions ascending (see
        :meth:`loaded_versions`); a model with no ready version is left out."""
        served: dict[str, list[int]] = {}
        for entry in await self._index():
            if entry.get("state") == _READY and entry.get("version"):
                served.setdefault(str(entry["name"]), []).append(int(entry["version"]))
        return {name: sorted(versions) for name, versions in served.items()}

    async def frame_size(self, name: str) -> int:
        """The frame size ``name`` takes, from the config Triton serves it with (one for all its
        versions: the config is the model's).

        Raises:
            NotFoundError: Triton knows no such model.
            FailedPreconditionError: its config is not the frames contract.
            UnavailableError, DeadlineExceededError: Triton did not answer in time.
        """
        with _triton_errors(f"reading the config of {name}"):
            answer: dict[str, Any] = await self._call(
                lambda c: c.get_model_config(
                    name, as_json=True, client_timeout=self._call_timeout_s
                )
            )
        inputs = answer.get("config", {}).get("input", [])
        dims = [int(d) for d in inputs[0].get("dims", [])] if len(inputs) == 1 else []
        if inputs and inputs[0].get("name") == FRAMES_INPUT and len(dims) == 3 and dims[0] > 0:
            return dims[0]
        raise FailedPreconditionError(f"{name}'s config takes {inputs}, not {FRAMES_INPUT}")

    async def _index(self) -> list[dict[str, Any]]:
        """The repository index: one entry per model version Triton knows of, with its state."""
        with _triton_errors("reading the repository index"):
            index: dict[str, Any] = await self._call(
                lambda c: c.get_model_repository_index(
                    headers=self._control_headers,
                    as_json=True,
                    client_timeout=self._call_timeout_s,
                )
            )
        return list(index.get("models", []))

    async def infer(
        self,
        name: str,
        version: int | None,
        frames: npt.NDArray[np.uint8],
        *,
        timeout_s: float,
    ) -> Scores:
        """The model's scores for a batch of frames.

        ``frames`` is uint8 ``[n, S, S, 1]``, S the version's frame size
        (``screwops_imaging.fit_frame``); Triton refuses another size. ``version`` pins the
        version that answers; None lets Triton choose (the highest loaded), which callers that
        must report the version avoid.

        Raises:
            InvalidInputError: the batch has the wrong shape or type (here, or the model's frame
                size, in Triton), or is larger than the model's max_batch_size.
            NotFoundError: no such model or version is loaded.
            DeadlineExceededError: no answer within ``timeout_s``.
            UnavailableError: Triton did not answer or is overloaded.
            FailedPreconditionError: the model failed while answering, or answered outputs of
                the wrong shape.
        """
        _check_batch(frames)
        tensor = grpcclient.InferInput(FRAMES_INPUT, list(frames.shape), "UINT8")
        tensor.set_data_from_numpy(frames)
        requested = [
            grpcclient.InferRequestedOutput(PROBABILITY_OUTPUT),
            grpcclient.InferRequestedOutput(PART_FOUND_OUTPUT),
        ]
        with _triton_errors(f"inference on {_label(name, version)}"):
            result = await self._call(
                lambda c: c.infer(
                    name,
                    [tensor],
                    model_version=_version(version),
                    outputs=requested,
                    client_timeout=timeout_s,
                )
            )
        probability, found = (
            _output(result.as_numpy(output), len(frames), _label(name, version), output)
            for output in (PROBABILITY_OUTPUT, PART_FOUND_OUTPUT)
        )
        return Scores(probability=probability, found=found)

    async def check(self, name: str, version: int, *, frame_size: int, timeout_s: float) -> Scores:
        """Prove a loaded version answers: one inference on a blank frame of ``frame_size``.

        Readiness only says Triton loaded the version; a real request through the whole path
        (config, tensor names, the model's signature) is what deserves the traffic. A blank frame
        holds no screw, so its ``found`` is expected to be 0; only the outputs' ranges are
        checked.

        Raises:
            FailedPreconditionError: the version is not ready, fails, takes frames of another
                size, or answers something that is not a probability and a found flag.
            UnavailableError, DeadlineExceededError: Triton did not answer in time.
        """
        label = _label(name, version)
        if not await self.ready(name, version):
            raise FailedPreconditionError(f"{label} is not ready in Triton")
        blank = np.zeros((1, *frame_shape(frame_size)), dtype=np.uint8)
        try:
            scores = await self.infer(name, version, blank, timeout_s=timeout_s)
        except (NotFoundError, InvalidInputError) as error:
            raise FailedPreconditionError(f"{label} did not answer: {error.message}") from error
        probability, found = float(scores.probability[0]), float(scores.found[0])
        if not 0.0 <= probability <= 1.0:
            raise FailedPreconditionError(f"{label} answered {probability}, not a probability")
        if not 0.0 <= found <= 1.0:
            raise FailedPreconditionError(f"{label} answered part_found {found}, not 0 or 1")
        return scores

    async def _call(self, call: Callable[[grpcclient.InferenceServerClient], Awaitable[T]]) -> T:
        if self._client is None:
            self._client = grpcclient.InferenceServerClient(self.url)
        return await call(self._client)


def _check_batch(frames: npt.NDArray[Any]) -> None:
    if frames.dtype != np.uint8:
        raise InvalidInputError(f"frames are uint8, not {frames.dtype}")
    if (
        frames.ndim != 4
        or frames.shape[0] < 1
        or frames.shape[1] != frames.shape[2]
        or frames.shape[3] != 1
        or frames.shape[1] < 1
    ):
        raise InvalidInputError(f"a batch of frames is [n >= 1, S, S, 1], not {list(frames.shape)}")


def _output(
    output: npt.NDArray[Any] | None, count: int, label: str, name: str
) -> npt.NDArray[np.float32]:
    """One of the model's outputs as float32 ``[count]``, or why it is not one."""
    if output is None or output.shape != (count, 1):
        raise FailedPreconditionError(
            f"{label} answered {name} {None if output is None else output.shape}, "
            f"expected ({count}, 1)"
        )
    values: npt.NDArray[np.float32] = output.reshape(-1).astype(np.float32)
    return values


def _version(version: int | None) -> str:
    return "" if version is None else str(version)


def _label(name: str, version: int | None) -> str:
    return name if version is None else f"{name} version {version}"


@contextmanager
def _triton_errors(doing: str, *, load: bool = False) -> Iterator[None]:
    """Turn tritonclient's and the channel's errors into typed ones (module docstring)."""
    try:
        yield
    except InferenceServerException as error:
        raise _translate(error, doing, load=load) from error


def _translate(error: InferenceServerException, doing: str, *, load: bool) -> ScrewOpsError:
    status = error.status()
    message = f"{doing}: {error.message()}"
    if _RESTRICTED in (error.message() or ""):
        return PermissionDeniedError(
            f"{doing}: Triton refused model control: this client has no, or the wrong, "
            f"model-control key ({MODEL_CONTROL_HEADER})"
        )
    if status == _DEADLINE:
        return DeadlineExceededError(message)
    if status in _TRANSIENT:
        return UnavailableError(message)
    if status == _NOT_FOUND and not load:
        return NotFoundError(message)
    if status == _INVALID and not load:
        return InvalidInputError(message)
    return FailedPreconditionError(message)
