"""A fuzz run against a running gateway: hostile images by the thousand, every answer a documented
status, no crash, and the gateway's event loop never held past 20 ms at p99.9.

Needs a gateway serving (the stack: ``make up``, or any gateway whose gRPC and metrics ports are
reachable); run it as ``make bench-fuzz`` or ``uv run python benchmarks/fuzz_gateway.py``
(``--requests 200`` for a smoke check). It:

1. builds a pool of payloads of each kind in :data:`KINDS` (``--variants`` of each, seeded):
   plain PNG and JPEG screws, decompression-heavy PNGs (16 megapixels of one colour in 16 KB,
   decoded in full: they are within the limits), huge dimensions in a small file (a header
   declaring 100,000 x 100,000, or 8,000 x 8,000 of one colour), 16-bit PNG and TIFF, 12-bit
   TIFF, float TIFF, multi-frame PNG and TIFF, truncated and bit-flipped images and random
   bytes;
2. reads the gateway's Prometheus endpoint: the event-loop lag histogram
   (``screwops_event_loop_lag_seconds``, the ticker every service runs) and the process start
   time;
3. sends ``--requests`` unary ``Inspect`` calls (10,000 by default) drawn from the pool in a
   seeded order, ``--concurrency`` at a time, each with a deadline, and counts each answer's
   status by kind;
4. reads the endpoint again and prints the statuses, the lag's p99.9 over the run (the upper
   bound of its histogram bucket, from the buckets' growth during the run) and whether the
   gateway restarted, marking the issue's bounds PASS/FAIL: no crash (the process start time
   unchanged, gRPC health still SERVING, no INTERNAL or undocumented status) and lag p99.9
   <= 20 ms. It exits 1 when one fails.

The model answering is whatever the gateway serves (``--model-version`` pins one); with nothing
deployed the valid images are answered FAILED_PRECONDITION, which is documented too: the point is
the decoding path, which runs before the model is chosen.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import os
import platform
import random
import struct
import sys
import time
import urllib.request
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image
from screwops.v1 import inspection_pb2, inspection_pb2_grpc
from screwops_rpc import open_aio_channel
from screwops_settings.services import GATEWAY

DOCUMENTED = frozenset(
    {
        "OK",
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "UNAUTHENTICATED",
        "FAILED_PRECONDITION",
        "UNAVAILABLE",
        "RESOURCE_EXHAUSTED",
        "DEADLINE_EXCEEDED",
    }
)
"""The statuses the gateway's proto documents; any other answer (INTERNAL above all) fails."""
LAG_METRIC = "screwops_event_loop_lag_seconds"
START_METRIC = "process_start_time_seconds"
LAG_LIMIT_S = 0.02
LAG_QUANTILE = 0.999


def _png(image: Image.Image, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", **options)
    return out.getvalue()


def _encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def _noise(rng: random.Random, side: int) -> Image.Image:
    """Gray noise from ``rng`` (Pillow's own effect_noise ignores every seed)."""
    pixels = np.random.default_rng(rng.randrange(2**32)).normal(
        128, 20 + rng.random() * 60, (side, side)
    )
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_header(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` and whose data is one short row: a
    decoder that trusted the header before checking it would allocate the whole image."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(bytes(64)))
        + _chunk(b"IEND", b"")
    )


def _valid_png(rng: random.Random) -> bytes:
    return _png(_noise(rng, rng.choice([64, 256, 512])))


def _valid_jpeg(rng: random.Random) -> bytes:
    return _encoded(_noise(rng, 256).convert("RGB"), "JPEG", quality=rng.randint(50, 95))


def _bomb_png(rng: random.Random) -> bytes:
    """16 megapixels of one colour (the most the gateway takes): about 16 KB to send, the full
    inflate and preprocessing to do."""
    return _png(Image.new("L", (4096, 4096), rng.randint(0, 255)), compress_level=9)


def _huge_dimensions(rng: random.Random) -> bytes:
    if rng.random() < 0.5:
        return huge_header(rng.choice([100_000, 65_535, 20_000]), rng.choice([100_000, 40]))
    return _png(Image.new("L", (8000, 8000)), compress_level=9)


def _sixteen_bit(rng: random.Random) -> bytes:
    values = np.asarray(_noise(rng, 256), dtype=np.uint16) * 257
    image = Image.fromarray(values)
    return _encoded(image, rng.choice(["PNG", "TIFF"]))


def _float_tiff(rng: random.Random) -> bytes:
    values = np.asarray(_noise(rng, 128), dtype=np.float32) / 255
    return _encoded(Image.fromarray(values, mode="F"), "TIFF")


def _multi_frame(rng: random.Random) -> bytes:
    frames = [_noise(rng, 128) for _ in range(rng.randint(2, 5))]
    fmt = rng.choice(["PNG", "TIFF"])
    return _encoded(frames[0], fmt, save_all=True, append_images=frames[1:])


def _truncated(rng: random.Random) -> bytes:
    data = _valid_png(rng)
    return data[: rng.randint(8, len(data) - 1)]


def _bit_flipped(rng: random.Random) -> bytes:
    data = bytearray(_valid_png(rng) if rng.random() < 0.5 else _valid_jpeg(rng))
    for _ in range(rng.randint(1, 16)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return bytes(data)


def _random_bytes(rng: random.Random) -> bytes:
    return rng.randbytes(rng.randint(0, 4096))


KINDS = {
    "valid_png": _valid_png,
    "valid_jpeg": _valid_jpeg,
    "bomb_png": _bomb_png,
    "huge_dimensions": _huge_dimensions,
    "sixteen_bit": _sixteen_bit,
    "float_tiff": _float_tiff,
    "multi_frame": _multi_frame,
    "truncated": _truncated,
    "bit_flipped": _bit_flipped,
    "random_bytes": _random_bytes,
}
"""Each kind of payload, made from a seeded random source."""


def payloads(variants: int, seed: int) -> dict[str, list[bytes]]:
    """``variants`` payloads of every kind, the same for the same seed."""
    rng = random.Random(seed)
    return {kind: [make(rng) for _ in range(variants)] for kind, make in KINDS.items()}


def requests(
    pool: Mapping[str, list[bytes]], count: int, seed: int, model_version: int | None = None
) -> Iterator[tuple[str, inspection_pb2.InspectRequest]]:
    """``count`` requests, kinds taken in turn (so every kind comes ``count / len(kinds)``
    times, however small ``count``), payloads and ids drawn from ``seed``."""
    rng = random.Random(seed)
    kinds = sorted(pool)
    for number in range(count):
        kind = kinds[number % len(kinds)]
        request = inspection_pb2.InspectRequest(
            image=rng.choice(pool[kind]),
            line_id=f"fuzz-{rng.randrange(4)}",
            camera_id=f"cam-{rng.randrange(8)}",
            request_id=f"fuzz-{seed}-{number}",
            frame_id=str(number),
        )
        if model_version is not None:
            request.model_version = model_version
        yield kind, request


@dataclass
class Scrape:
    """What the fuzz run reads from the gateway's metrics endpoint."""

    lag_buckets: dict[float, float] = field(default_factory=dict)
    """Cumulative count of ticks per upper bound (``le``), summed over label sets."""
    started: float | None = None


def parse_metrics(text: str) -> Scrape:
    """The loop-lag buckets and the process start time from Prometheus' text format."""
    scrape = Scrape()
    for line in text.splitlines():
        if line.startswith(f"{LAG_METRIC}_bucket"):
            labels, _, value = line.rpartition(" ")
            le = labels.split('le="', 1)[1].split('"', 1)[0]
            bound = math.inf if le == "+Inf" else float(le)
            scrape.lag_buckets[bound] = scrape.lag_buckets.get(bound, 0.0) + float(value)
        elif line.startswith(START_METRIC):
            scrape.started = float(line.rpartition(" ")[2])
    return scrape


def lag_quantile(before: Scrape, after: Scrape, quantile: float = LAG_QUANTILE) -> float | None:
    """The upper bound of the bucket holding ``quantile`` of the ticks made between the two
    scrapes (a histogram knows no finer); None when none was made."""
    grown = {
        le: after.lag_buckets[le] - before.lag_buckets.get(le, 0.0) for le in after.lag_buckets
    }
    total = grown.get(math.inf, 0.0)
    if total <= 0:
        return None
    return next(le for le in sorted(grown) if grown[le] >= quantile * total)


def scrape(url: str) -> Scrape:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return parse_metrics(answer.read().decode())


async def _send(
    stub: inspection_pb2_grpc.InspectionServiceAsyncStub,
    work: Iterator[tuple[str, inspection_pb2.InspectRequest]],
    statuses: Counter[tuple[str, str]],
    metadata: tuple[tuple[str, str], ...],
    deadline_s: float,
) -> None:
    for kind, request in work:
        try:
            await stub.Inspect(request, timeout=deadline_s, metadata=metadata)
            status = "OK"
        except grpc.aio.AioRpcError as error:
            status = error.code().name
        statuses[(kind, status)] += 1


async def fuzz(args: argparse.Namespace) -> bool:
    """Run the fuzz (see the module docstring); True when every bound holds."""
    began = time.perf_counter()
    pool = payloads(args.variants, args.seed)
    print(f"built {sum(map(len, pool.values()))} payloads in {time.perf_counter() - began:.1f}s")
    token = args.token or os.environ.get("SCREWOPS_GATEWAY_TOKEN")
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    before = scrape(args.metrics_url)
    statuses: Counter[tuple[str, str]] = Counter()
    work = requests(pool, args.requests, args.seed, args.model_version)
    options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
    async with open_aio_channel(args.address, options=options) as channel:
        stub: inspection_pb2_grpc.InspectionServiceAsyncStub
        stub = inspection_pb2_grpc.InspectionServiceStub(channel)
        sent = time.perf_counter()
        await asyncio.gather(
            *(_send(stub, work, statuses, metadata, args.deadline) for _ in range(args.concurrency))
        )
        seconds = time.perf_counter() - sent
        checker: Any = health_pb2_grpc.HealthStub(channel)  # its stubs omit the methods
        health = await checker.Check(health_pb2.HealthCheckRequest(), timeout=10)
    after = scrape(args.metrics_url)
    return report(statuses, before, after, seconds, health.status, args)


def report(
    statuses: Counter[tuple[str, str]],
    before: Scrape,
    after: Scrape,
    seconds: float,
    health: int,
    args: argparse.Namespace,
) -> bool:
    """Print the outcome and the bounds; True when every bound holds."""
    total = sum(statuses.values())
    print(
        f"\n{total} requests in {seconds:.1f}s ({total / seconds:.0f}/s), "
        f"concurrency {args.concurrency}, deadline {args.deadline}s"
    )
    print(f"{'kind':<16} {'status':<20} {'count':>7}")
    for (kind, status), count in sorted(statuses.items()):
        print(f"{kind:<16} {status:<20} {count:>7}")
    by_status = Counter[str]()
    for (_, status), count in statuses.items():
        by_status[status] += count
    print("by status:", dict(sorted(by_status.items())))
    undocumented = {s: n for s, n in by_status.items() if s not in DOCUMENTED}
    restarted = before.started != after.started
    serving = health == health_pb2.HealthCheckResponse.SERVING
    lag = lag_quantile(before, after)
    lag_text = "no ticks recorded" if lag is None else f"<= {lag * 1000:g} ms"
    checks = [
        (
            f"answers: only documented statuses (undocumented: {undocumented or 'none'})",
            not undocumented,
        ),
        (
            f"crashes: 0 (restarted: {restarted}, health SERVING after: {serving})",
            not restarted and serving,
        ),
        (
            f"event-loop lag p99.9 {lag_text} (limit {LAG_LIMIT_S * 1000:g} ms)",
            lag is not None and lag <= LAG_LIMIT_S,
        ),
    ]
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    print(f"command: {' '.join(sys.argv)}\nmachine: {platform.platform()}, {os.cpu_count()} CPUs")
    return all(ok for _, ok in checks)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", default=f"127.0.0.1:{GATEWAY.grpc_port}")
    parser.add_argument("--metrics-url", default=f"http://127.0.0.1:{GATEWAY.metrics_port}/metrics")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--deadline", type=float, default=10.0, help="seconds per call")
    parser.add_argument("--variants", type=int, default=4, help="payloads of each kind")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--model-version", type=int, default=None)
    parser.add_argument(
        "--token", default=None, help="bearer token (default: $SCREWOPS_GATEWAY_TOKEN)"
    )
    return parser.parse_args(argv)


def main() -> None:
    sys.exit(0 if asyncio.run(fuzz(parse_args())) else 1)


if __name__ == "__main__":
    main()
