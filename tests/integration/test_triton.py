"""Triton is a real inference server: a Python-backend model is loaded through the repository
API (with the model-control key, as the registry loads), answers an inference, is unloaded;
Prometheus scrapes Triton's count of that inference."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest
import tritonclient.grpc.aio as triton
from screwops_serving.client import MODEL_CONTROL_GRPC_HEADER
from screwops_settings import StackSettings, triton_model_control_key, triton_model_repository

from tests.support import eventually, unique

CONFIG = """
name: "{name}"
backend: "python"
max_batch_size: 8
input [{{ name: "INPUT", data_type: TYPE_FP32, dims: [ 4 ] }}]
output [{{ name: "OUTPUT", data_type: TYPE_FP32, dims: [ 4 ] }}]
instance_group [{{ kind: KIND_CPU, count: 1 }}]
"""

MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
            out = pb_utils.Tensor("OUTPUT", (x * 2).astype(np.float32))
            responses.append(pb_utils.InferenceResponse([out]))
        return responses
"""


def model_control(settings: StackSettings) -> dict[str, str]:
    """The header the registry sends with the stack's key: Triton refuses model control without."""
    key = triton_model_control_key(settings)
    assert key, "the stack home has no Triton model-control key: run make up"
    return {MODEL_CONTROL_GRPC_HEADER: key}


@pytest.fixture(scope="module")
async def model(settings: StackSettings) -> AsyncIterator[str]:
    """A doubling model placed in Triton's repository and loaded through the repository API."""
    name = unique("doubler").replace("-", "_")
    directory = triton_model_repository(settings.home) / name
    (directory / "1").mkdir(parents=True)
    (directory / "config.pbtxt").write_text(CONFIG.format(name=name))
    (directory / "1" / "model.py").write_text(MODEL)
    client = triton.InferenceServerClient(settings.triton.grpc_url)
    try:
        await client.load_model(name, headers=model_control(settings))
        yield name
        await client.unload_model(name, headers=model_control(settings))
    finally:
        await client.close()
        shutil.rmtree(directory)


async def infer(settings: StackSettings, model: str, values: list[float]) -> list[float]:
    client = triton.InferenceServerClient(settings.triton.grpc_url)
    try:
        tensor = triton.InferInput("INPUT", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.array([values], dtype=np.float32))
        result = await client.infer(model, [tensor], client_timeout=10)
        output: list[float] = result.as_numpy("OUTPUT")[0].tolist()
        return output
    finally:
        await client.close()


async def test_loaded_model_is_ready_and_answers(settings: StackSettings, model: str) -> None:
    client = triton.InferenceServerClient(settings.triton.grpc_url)
    try:
        assert await client.is_model_ready(model)
    finally:
        await client.close()
    assert await infer(settings, model, [1.0, 2.0, 3.0, 4.5]) == [2.0, 4.0, 6.0, 9.0]


async def test_unloaded_model_is_no_longer_ready(settings: StackSettings) -> None:
    name = unique("short_lived").replace("-", "_")
    directory = triton_model_repository(settings.home) / name
    (directory / "1").mkdir(parents=True)
    (directory / "config.pbtxt").write_text(CONFIG.format(name=name))
    (directory / "1" / "model.py").write_text(MODEL)
    client = triton.InferenceServerClient(settings.triton.grpc_url)
    try:
        await client.load_model(name, headers=model_control(settings))
        assert await client.is_model_ready(name)
        await client.unload_model(name, headers=model_control(settings))
        assert not await client.is_model_ready(name)
    finally:
        await client.close()
        shutil.rmtree(directory)


async def test_prometheus_scrapes_the_inference_count(settings: StackSettings, model: str) -> None:
    await infer(settings, model, [0.0, 0.0, 0.0, 1.0])
    query = f'nv_inference_count{{model="{model}"}}'

    async def count() -> float | None:
        async with httpx.AsyncClient(base_url=settings.telemetry.prometheus_url) as http:
            response = await http.get("/api/v1/query", params={"query": query})
        response.raise_for_status()
        series = response.json()["data"]["result"]
        return float(series[0]["value"][1]) if series and float(series[0]["value"][1]) else None

    assert await eventually(count, within=30, what=f"Prometheus to return {query}") >= 1
