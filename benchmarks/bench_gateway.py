"""The gateway's throughput and latency beside direct Triton calls for the same images, and ghz's
figures for the gateway beside the script's own.

Needs the stack (``make up``); run it as ``make bench-gateway`` or ``uv run python
benchmarks/bench_gateway.py`` (``--duration`` and ``--warmup`` set each cell's seconds). In one
run it:

1. renders ``--images`` screws at 256 px (good and each defect type in turn), fits the trainer's
   network (``screwops_trainer.model.fit``, one epoch) on the first :data:`TRAIN_IMAGES` of them
   and saves it as the trainer does: a real export of the frames contract, taking 256 px frames
   and finding the screw and cutting its strip inside its graph. It goes into Triton's repository
   as version 1 of a uniquely named model, which is loaded;
2. starts the real gateway, ``python -m screwops_gateway``, as a subprocess in front of that
   model, on free ports (a supervised gateway on 50051/9107 is left alone), with a bearer token
   as production requires, and waits for gRPC health SERVING; requests pin ``model_version=1``,
   so no deployment event is needed (the gateway takes that version's frame size from Triton's
   config);
3. sends the same PNGs both ways;
4. at concurrency 1, 8 and 32 measures requests/s and p50/p99 latency of

   * ``gateway``: unary ``Inspect`` over gRPC (decode, fit to the frame, Triton, verdict, event);
   * ``direct+prep``: ``screwops_imaging.decode`` + ``fit_frame`` in the client, then
     ``tritonclient.grpc.aio`` infer of that uint8 frame. The floors compare against this one:
     the gateway does the same decoding and fitting and sends Triton the same frame, so only what
     it adds on top is measured;
   * ``direct``: the infer call alone on frames fitted beforehand (Triton's own floor);

   each cell runs ``--warmup`` seconds unmeasured, then ``--duration`` seconds in a closed loop
   (every worker sends its next request when the last one is answered); all workers share one
   channel per path (one HTTP/2 connection, as a camera client or ghz holds), since a grpc.aio
   client runs every call on one event loop anyway;
5. runs ghz (``deploy/local/install.sh tools`` builds it) against the gateway at concurrency 8
   for ``--duration`` seconds over one connection, with the same requests in a count-delimited
   binary file, and reads its JSON report (ghz reads ``protos/``: it asks server reflection for
   the method's symbol, which Python's reflection server does not resolve);
6. accounts, for each measured cell, the CPU time every process spent per request (this script,
   the gateway, Triton with its backend stubs, Kafka, Jaeger and the rest of the stack, from
   their recorded pids) and Triton's mean batch (its inference and execution counts): on a
   machine where they all share the cores, that is where a throughput gap comes from;
7. prints the tables, issue 21's floors (gateway >= 1.0x direct+prep requests/s at
   concurrencies 8 and 32; CPU per inspection of every process measured <= 1.2x direct+prep's;
   the gateway adds <= 1 ms to p50 at concurrency 1, where no queue hides it) and the transport
   marked PASS/FAIL, the command and the machine; then removes the model and stops the gateway.

The bench gateway publishes its ``inspection.completed`` events to Kafka like any gateway, but
stores no images (``image_sample_rate=0``, ``low_confidence_band=0``): a network trained one
epoch answers near 0.5, so every image would count as low-confidence, be stored and be queued for
review by the labeling service. It runs as service ``gateway-bench`` so it never joins the real
gateway's consumer group.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import psutil
import tritonclient.grpc.aio as tritongrpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console
from rich.table import Table
from screwops.v1 import inspection_pb2, inspection_pb2_grpc
from screwops_contracts.models import FRAMES_INPUT, PART_FOUND_OUTPUT, PROBABILITY_OUTPUT
from screwops_imaging import decode, fit_frame
from screwops_rpc import open_aio_channel
from screwops_serving import TritonModels, export_version
from screwops_settings import (
    StackSettings,
    kafka_password_file,
    triton_model_control_key,
    triton_model_repository,
)
from screwops_stack import processes
from screwops_stack.servers import Layout, servers
from screwops_synth import DEFECT_TYPES, image_rng, render_screw
from tritonclient.utils import InferenceServerException

COMMAND = "uv run python benchmarks/bench_gateway.py"
PROTOS = Path(__file__).resolve().parents[1] / "protos"
SIZE = 256
# The model's frame: the renders' own side, as the trainer picks the training images' most common
# side, so fit_frame passes every image through.
FRAME_SIZE = SIZE
TRAIN_IMAGES = 16
CLASSES = (None, *DEFECT_TYPES)
VERSION = 1
CONCURRENCIES = (1, 8, 32)
GHZ_CONCURRENCY = 8
# Issue 21's floors: batching makes the hop pay for itself.
FLOOR_RATIO = 1.0  # gateway req/s >= direct+prep req/s at concurrencies 8 and 32
FLOOR_CPU_RATIO = 1.2  # whole-system CPU per inspection <= 1.2x direct+prep's, at concurrency 8
FLOOR_ADDED_P50_MS = 1.0  # gateway p50 - direct+prep p50 at concurrency 1
FLOORED_CONCURRENCIES = (8, 32)
TRANSPORT = (
    "gRPC without TLS on loopback for both paths (client-gateway, gateway-Triton, client-Triton)"
)
TOKEN = f"bench-{uuid.uuid4().hex}"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
CALL_TIMEOUT_S = 10.0
Floats = npt.NDArray[np.float32]
Frames = npt.NDArray[np.uint8]
Call = Callable[[int], Awaitable[None]]


@dataclass(frozen=True)
class Cell:
    """One path at one concurrency."""

    path: str
    concurrency: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    cpu_ms: dict[str, float] = field(default_factory=dict)
    batch: float = float("nan")

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


@dataclass(frozen=True)
class Usage:
    """What the processes and Triton had done by one moment of a cell."""

    cpu_s: dict[str, float]
    inferences: int
    executions: int


class Meter:
    """Reads the CPU time of each process of the bench and Triton's counts for the model.

    A server's children count with it: Triton runs the model in its Python-backend stubs. This
    script counts alone, without the gateway it started.
    """

    def __init__(self, triton: Any, model: str, gateway_pid: int, settings: StackSettings) -> None:
        self._triton = triton
        self._model = model
        layout = Layout(settings.home)
        self._own = psutil.Process()
        self._servers: dict[str, psutil.Process] = {"gateway": psutil.Process(gateway_pid)}
        for server in servers(settings):
            found = processes.find(layout.pidfile(server.name))
            if found is not None:
                self._servers[server.name] = found

    async def read(self) -> Usage:
        stats = await self._triton.get_inference_statistics(self._model, as_json=True)
        (model,) = stats["model_stats"]
        own = self._own.cpu_times()
        cpu_s = {"client": own.user + own.system}
        for name, process in self._servers.items():
            cpu_s[name] = _tree_cpu_s(process)
        return Usage(cpu_s, int(model["inference_count"]), int(model["execution_count"]))


def _tree_cpu_s(process: psutil.Process) -> float:
    total = 0.0
    for member in processes.tree(process):
        try:
            times = member.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


# --- setup -----------------------------------------------------------------------------------


def render(count: int) -> list[bytes]:
    """``count`` screw PNGs at 256 px, good and each defect type in turn (CLASSES)."""
    encoded = []
    for index in range(count):
        picture = render_screw(
            image_rng(7, "bench-gateway", index), size=SIZE, defect=CLASSES[index % len(CLASSES)]
        )
        out = io.BytesIO()
        picture.save(out, format="PNG")
        encoded.append(out.getvalue())
    return encoded


def export_classifier(images: list[bytes], directory: Path) -> Path:
    """The trainer's network fitted for one epoch on the first TRAIN_IMAGES of ``images`` (good
    or defective as :func:`render` drew them) and saved as the trainer saves it. Its accuracy is
    beside the point: what is measured is the served graph, which is the trainer's whatever the
    weights.

    TensorFlow is imported here, so ``--help`` stays fast; one thread each, since the fit is all
    it does in this process.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from screwops_trainer.model import TrainingParams, configure_tensorflow, fit

    configure_tensorflow(intra_op_threads=1, inter_op_threads=1)
    chosen = images[:TRAIN_IMAGES]
    frames = np.stack([fit_frame(decode(image).image, FRAME_SIZE) for image in chosen])
    targets = np.array(
        [float(CLASSES[i % len(CLASSES)] is not None) for i in range(len(chosen))], np.float32
    )
    fitted = fit(TrainingParams(epochs=1), (frames, targets), (frames, targets))
    return fitted.save(directory)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def gateway_process(
    model: str, grpc_port: int, log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m screwops_gateway`` in front of ``model``; SIGTERM and wait on the way out."""
    env = dict(os.environ)
    env.update(
        {
            "SCREWOPS_GATEWAY_SERVICE_NAME": "gateway-bench",
            # Kafka knows no principal gateway-bench: it publishes as the gateway does.
            "SCREWOPS_KAFKA__USERNAME": "gateway",
            "SCREWOPS_KAFKA__PASSWORD": kafka_password_file(StackSettings().home, "gateway")
            .read_text()
            .strip(),
            "SCREWOPS_GATEWAY_MODEL_NAME": model,
            "SCREWOPS_GATEWAY_GRPC_PORT": str(grpc_port),
            "SCREWOPS_GATEWAY_METRICS_PORT": str(free_port()),
            "SCREWOPS_GATEWAY_AUTH_TOKENS": json.dumps(
                [{"principal": "bench", "role": "line", "token": TOKEN}]
            ),
            "SCREWOPS_GATEWAY_IMAGE_SAMPLE_RATE": "0",
            "SCREWOPS_GATEWAY_LOW_CONFIDENCE_BAND": "0",
        }
    )
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "screwops_gateway"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def wait_serving(
    address: str, process: subprocess.Popen[bytes], *, within: float = 120.0
) -> None:
    """Until the gateway's gRPC health check answers SERVING (or it exits, or time runs out)."""
    deadline = time.monotonic() + within
    async with open_aio_channel(address) as channel:
        health: Any = health_pb2_grpc.HealthStub(channel)  # its stubs omit the methods
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the gateway exited with code {process.returncode}")
            try:
                answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the gateway was not SERVING within {within:.0f} s")
            await asyncio.sleep(0.5)


# --- measuring -------------------------------------------------------------------------------


async def measure(
    path: str, call: Call, concurrency: int, warmup: float, duration: float, meter: Meter
) -> Cell:
    """``concurrency`` closed-loop workers: ``warmup`` s unmeasured, then ``duration`` s timed.

    Requests/s counts every request begun within ``duration`` over the time until the last one
    was answered; the CPU per request and Triton's batch cover the timed part.
    """
    counter = itertools.count()
    latencies: list[float] = []
    errors = 0

    async def worker(stop_at: float, record: bool) -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            began = time.perf_counter()
            try:
                await call(next(counter))
            except (grpc.aio.AioRpcError, InferenceServerException):
                if record:
                    errors += 1
                continue
            if record:
                latencies.append(time.perf_counter() - began)

    stop_at = time.perf_counter() + warmup
    await asyncio.gather(*(worker(stop_at, False) for _ in range(concurrency)))
    before = await meter.read()
    began = time.perf_counter()
    await asyncio.gather(*(worker(began + duration, True) for _ in range(concurrency)))
    seconds = time.perf_counter() - began
    after = await meter.read()
    p50, p99 = np.percentile(np.asarray(latencies) * 1000, [50, 99]) if latencies else (0, 0)
    answered = max(len(latencies), 1)
    cpu_ms = {k: (after.cpu_s[k] - before.cpu_s[k]) * 1000 / answered for k in after.cpu_s}
    executions = after.executions - before.executions
    batch = (after.inferences - before.inferences) / executions if executions else float("nan")
    return Cell(
        path, concurrency, len(latencies), errors, seconds, float(p50), float(p99), cpu_ms, batch
    )


def inspect_requests(images: list[bytes]) -> list[inspection_pb2.InspectRequest]:
    return [
        inspection_pb2.InspectRequest(
            image=image,
            line_id="line-bench",
            camera_id=f"cam-{index % 4}",
            request_id=f"bench-{index}",
            model_version=VERSION,
        )
        for index, image in enumerate(images)
    ]


def triton_input(frames: Frames) -> Any:
    tensor = tritongrpc.InferInput(FRAMES_INPUT, list(frames.shape), "UINT8")
    tensor.set_data_from_numpy(frames)
    return tensor


def fitted(image: bytes) -> Frames:
    """The batch of one frame the gateway sends Triton for ``image``."""
    frame: Frames = fit_frame(decode(image).image, FRAME_SIZE)[np.newaxis]
    return frame


class Paths:
    """The three ways one image is judged (see the module docstring)."""

    def __init__(
        self, gateway: inspection_pb2_grpc.InspectionServiceAsyncStub, triton: Any, model: str
    ) -> None:
        self._gateway = gateway
        self._triton = triton
        self._model = model
        # Both outputs, as the gateway asks for them.
        self._outputs = [
            tritongrpc.InferRequestedOutput(PROBABILITY_OUTPUT),
            tritongrpc.InferRequestedOutput(PART_FOUND_OUTPUT),
        ]
        self.timings: list[inspection_pb2.Timings] = []

    def gateway(self, requests: list[inspection_pb2.InspectRequest], *, keep: bool = False) -> Call:
        async def call(index: int) -> None:
            answer = await self._gateway.Inspect(
                requests[index % len(requests)], metadata=AUTH, timeout=CALL_TIMEOUT_S
            )
            if keep:
                self.timings.append(answer.timings)

        return call

    def direct_with_fitting(self, images: list[bytes]) -> Call:
        async def call(index: int) -> None:
            await self._infer(fitted(images[index % len(images)]))

        return call

    def direct(self, batches: list[Frames]) -> Call:
        async def call(index: int) -> None:
            await self._infer(batches[index % len(batches)])

        return call

    async def _infer(self, batch: Frames) -> Floats:
        result = await self._triton.infer(
            self._model,
            [triton_input(batch)],
            model_version=str(VERSION),
            outputs=self._outputs,
            client_timeout=CALL_TIMEOUT_S,
        )
        answer: Floats = result.as_numpy(PROBABILITY_OUTPUT).reshape(-1)
        return answer

    async def agree(self, request: inspection_pb2.InspectRequest) -> tuple[float, float]:
        """Both paths' probability for one image: the gateway's and Triton's own."""
        answer = await self._gateway.Inspect(request, metadata=AUTH, timeout=CALL_TIMEOUT_S)
        direct = await self._infer(fitted(request.image))
        return answer.defect_probability, float(direct[0])


# --- ghz -------------------------------------------------------------------------------------


def ghz_binary(settings: StackSettings) -> Path | None:
    cached = Layout(settings.home).opt / "bin" / "ghz"
    if cached.is_file():
        return cached
    found = shutil.which("ghz")
    return Path(found) if found else None


def delimited(requests: list[inspection_pb2.InspectRequest]) -> bytes:
    """The requests as ghz's count-delimited binary data (varint length, message; repeated)."""
    out = bytearray()
    for request in requests:
        body = request.SerializeToString()
        size = len(body)
        while True:
            byte, size = size & 0x7F, size >> 7
            out.append(byte | (0x80 if size else 0))
            if not size:
                break
        out += body
    return bytes(out)


def run_ghz(
    ghz: Path,
    address: str,
    requests: list[inspection_pb2.InspectRequest],
    scratch: Path,
    duration: float,
) -> Cell | str:
    """ghz at GHZ_CONCURRENCY over one connection for ``duration`` s; its figures, or why not."""
    data, report = scratch / "requests.bin", scratch / "ghz.json"
    data.write_bytes(delimited(requests))
    ca_file = StackSettings().grpc.ca_file
    command = [
        str(ghz),
        # Over TLS, as every client reaches the gateway, checked against the stack's CA.
        f"--cacert={ca_file}",
        # Python's reflection server resolves services but not method names, which is what
        # ghz asks it for, so ghz reads the proto instead.
        "--proto",
        str(PROTOS / "screwops" / "v1" / "inspection.proto"),
        "--import-paths",
        str(PROTOS),
        "--call",
        "screwops.v1.InspectionService/Inspect",
        "--binary-file",
        str(data),
        "--metadata",
        json.dumps({"authorization": f"Bearer {TOKEN}"}),
        "--concurrency",
        str(GHZ_CONCURRENCY),
        "--connections",
        "1",
        "--duration",
        f"{duration:g}s",
        "--duration-stop",
        "wait",
        "--timeout",
        f"{CALL_TIMEOUT_S:g}s",
        "--format",
        "json",
        "--output",
        str(report),
        address,
    ]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=duration + 120)
    if finished.returncode != 0 or not report.is_file():
        return f"ghz failed ({finished.returncode}): {finished.stderr.strip()[-500:]}"
    result = json.loads(report.read_text())
    percentiles = {d["percentage"]: d["latency"] for d in result.get("latencyDistribution") or []}
    statuses: dict[str, int] = result.get("statusCodeDistribution") or {}
    ok = statuses.get("OK", 0)
    return Cell(
        path="gateway (ghz)",
        concurrency=GHZ_CONCURRENCY,
        requests=ok,
        errors=sum(statuses.values()) - ok,
        seconds=ok / result["rps"] if result.get("rps") else float("nan"),
        p50_ms=percentiles.get(50, float("nan")) / 1e6,
        p99_ms=percentiles.get(99, float("nan")) / 1e6,
    )


# --- report ----------------------------------------------------------------------------------


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{usable} cores usable ({os.cpu_count()} online), {model}, {platform.system()}"


def cpu_table(cells: list[Cell]) -> Table:
    """CPU milliseconds each process spent per answered request, and Triton's mean batch."""
    names = list(dict.fromkeys(name for cell in cells for name in cell.cpu_ms))
    table = Table(
        title="CPU ms per request by process (children included), Triton's mean batch",
        title_justify="left",
    )
    table.add_column("conc.", justify="right")
    table.add_column("path")
    for name in [*names, "total", "cores busy", "Triton batch"]:
        table.add_column(name, justify="right")
    for cell in cells:
        total = sum(cell.cpu_ms.values())
        table.add_row(
            str(cell.concurrency),
            cell.path,
            *(f"{cell.cpu_ms.get(name, float('nan')):.2f}" for name in names),
            f"{total:.2f}",
            f"{total * cell.rate / 1000:.2f}",
            f"{cell.batch:.2f}",
            end_section=cell.path == "direct" and cell.concurrency != CONCURRENCIES[-1],
        )
    return table


def report(
    console: Console,
    cells: list[Cell],
    ghz: Cell | str,
    args: argparse.Namespace,
    timings: list[inspection_pb2.Timings],
    load: tuple[tuple[float, float, float], tuple[float, float, float]],
) -> None:
    by = {(c.path, c.concurrency): c for c in cells}
    table = Table(
        title=f"gateway vs direct Triton: {args.images} screw PNGs of {SIZE}x{SIZE}, "
        f"{args.warmup:g} s warm-up + {args.duration:g} s per cell",
        title_justify="left",
    )
    for column in ("conc.", "path", "req/s", "p50 ms", "p99 ms", "requests", "errors"):
        table.add_column(column, justify="left" if column == "path" else "right")
    table.add_column("gateway / direct+prep req/s", justify="right")
    table.add_column("gateway-added p50 ms", justify="right")
    rows = [*cells, *([ghz] if isinstance(ghz, Cell) else [])]
    rows.sort(key=lambda c: (c.concurrency, c.path != "gateway", c.path != "gateway (ghz)"))
    for cell in rows:
        versus = gained = ""
        base = by.get(("direct+prep", cell.concurrency))
        if cell.path.startswith("gateway") and base is not None:
            versus = f"{cell.rate / base.rate:.2f}"
            gained = f"{cell.p50_ms - base.p50_ms:+.2f}"
        table.add_row(
            str(cell.concurrency),
            cell.path,
            f"{cell.rate:.1f}",
            f"{cell.p50_ms:.2f}",
            f"{cell.p99_ms:.2f}",
            str(cell.requests),
            str(cell.errors),
            versus,
            gained,
            end_section=cell.path == "direct" and cell.concurrency != CONCURRENCIES[-1],
        )
    console.print(table)

    floors = Table(title="the issue's floors (against direct+prep)", title_justify="left")
    for column in ("floor", "measured", "verdict"):
        floors.add_column(column)
    added = by[("gateway", 1)].p50_ms - by[("direct+prep", 1)].p50_ms
    ratios = {
        c: by[("gateway", c)].rate / by[("direct+prep", c)].rate for c in FLOORED_CONCURRENCIES
    }
    cpu = sum(by[("gateway", 8)].cpu_ms.values()) / sum(by[("direct+prep", 8)].cpu_ms.values())
    checks = [
        (
            f"gateway req/s >= {FLOOR_RATIO:g}x direct+prep at concurrency {c}",
            f"{ratio:.2f}x",
            ratio >= FLOOR_RATIO,
        )
        for c, ratio in ratios.items()
    ]
    checks += [
        (
            f"CPU per inspection, every process measured, <= {FLOOR_CPU_RATIO:g}x direct+prep's "
            "at concurrency 8",
            f"{cpu:.2f}x",
            cpu <= FLOOR_CPU_RATIO,
        ),
        (
            f"gateway-added p50 <= {FLOOR_ADDED_P50_MS:g} ms at concurrency 1",
            f"{added:+.2f} ms",
            added <= FLOOR_ADDED_P50_MS,
        ),
    ]
    for floor, measured, passed in checks:
        floors.add_row(floor, measured, "[green]PASS[/]" if passed else "[red]FAIL[/]")
    console.print(floors)
    console.print(f"transport: {TRANSPORT}")
    console.print(cpu_table(cells))

    if timings:
        mean = {
            name: float(np.mean([getattr(t, name) for t in timings]))
            for name in ("decode_ms", "preprocess_ms", "inference_ms", "total_ms")
        }
        console.print(
            "gateway's own timings at concurrency 1 (means): "
            + ", ".join(f"{name.removesuffix('_ms')} {ms:.2f} ms" for name, ms in mean.items())
        )
    if isinstance(ghz, str):
        console.print(f"ghz: {ghz}")
    console.print(
        "paths: gateway = Inspect over gRPC (one shared channel); direct+prep = decode + "
        "fit_frame in the client, then tritonclient.grpc.aio infer (one shared client); "
        "direct = the infer alone on frames fitted beforehand; gateway (ghz) = ghz "
        f"{GHZ_CONCURRENCY} workers over one connection, same requests"
    )
    console.print(
        f"machine: {machine()}; load average {load[0][0]:.2f} before, {load[1][0]:.2f} after "
        "(client, gateway and Triton share these cores)"
    )
    extra = " ".join(sys.argv[1:])
    console.print(f"command: {COMMAND}{' ' + extra if extra else ''}  (make bench-gateway)")


# --- main ------------------------------------------------------------------------------------


async def bench(args: argparse.Namespace, console: Console) -> int:
    settings = StackSettings()
    repository = triton_model_repository(settings.home)
    model = f"bench-gateway-{uuid.uuid4().hex[:12]}"
    grpc_port = free_port()
    address = f"127.0.0.1:{grpc_port}"
    load_before = os.getloadavg()
    scratch = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    # It loads and unloads its own model as the registry does, with the stack's model-control key.
    models = TritonModels(
        settings.triton.grpc_url, model_control_key=triton_model_control_key(settings)
    )
    triton = tritongrpc.InferenceServerClient(settings.triton.grpc_url)
    try:
        images = render(args.images)
        console.print(f"training and exporting the classifier as {model} version {VERSION} ...")
        export_version(
            export_classifier(images, scratch / "saved_model"),
            repository,
            name=model,
            version=VERSION,
            frame_size=FRAME_SIZE,
        )
        await models.load(model)
        await models.wait_ready(model, VERSION, timeout_s=120)
        batches = [fitted(image) for image in images]
        requests = inspect_requests(images)
        console.print(f"starting the gateway on {address} (log: {scratch / 'gateway.log'}) ...")
        with gateway_process(model, grpc_port, scratch / "gateway.log") as process:
            try:
                await wait_serving(address, process)
            except RuntimeError as error:
                log = (scratch / "gateway.log").read_text(errors="replace")
                console.print(f"{error}; its log ends:\n{log[-3000:]}")
                return 1
            async with open_aio_channel(address) as channel:
                stub: inspection_pb2_grpc.InspectionServiceAsyncStub
                stub = inspection_pb2_grpc.InspectionServiceStub(channel)
                paths = Paths(stub, triton, model)
                meter = Meter(triton, model, process.pid, settings)
                through_gateway, straight = await paths.agree(requests[0])
                if abs(through_gateway - straight) > 1e-4:
                    console.print(f"the paths disagree: {through_gateway} vs {straight}")
                    return 1
                cells = []
                for concurrency in CONCURRENCIES:
                    for path, call in (
                        ("gateway", paths.gateway(requests, keep=concurrency == 1)),
                        ("direct+prep", paths.direct_with_fitting(images)),
                        ("direct", paths.direct(batches)),
                    ):
                        cell = await measure(
                            path, call, concurrency, args.warmup, args.duration, meter
                        )
                        console.print(
                            f"  c={concurrency:<2} {path:<12} {cell.rate:7.1f} req/s  "
                            f"p50 {cell.p50_ms:7.2f} ms  p99 {cell.p99_ms:7.2f} ms"
                        )
                        cells.append(cell)
            ghz_path = ghz_binary(settings)
            if ghz_path is None:
                ghz: Cell | str = "not installed (deploy/local/install.sh tools builds it)"
            else:
                console.print(f"ghz at concurrency {GHZ_CONCURRENCY} ...")
                ghz = await asyncio.to_thread(
                    run_ghz, ghz_path, address, requests, scratch, args.duration
                )
        report(console, cells, ghz, args, paths.timings, (load_before, os.getloadavg()))
        return 0
    finally:
        with contextlib.suppress(Exception):
            await models.unload(model)
        await models.close()
        await triton.close()
        shutil.rmtree(repository / model, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--images", type=int, default=64, help="distinct screw PNGs (64)")
    parser.add_argument("--duration", type=float, default=10.0, help="measured s per cell (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured s per cell (2)")
    args = parser.parse_args()
    return asyncio.run(bench(args, Console(width=160)))


if __name__ == "__main__":
    sys.exit(main())
