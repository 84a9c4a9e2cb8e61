"""Ingestion throughput through the gRPC upload path, beside MinIO's raw put rate for the same
files.

Needs the stack and the ingestion service: ``make up && uv run python -m screwops_stack services
up ingestion``, then ``uv run python benchmarks/bench_ingest.py``. It renders COUNT synthetic
256x256 PNGs, puts them straight into MinIO (the floor any ingestion path pays), then uploads the
same images (with a different seed, so nothing is a duplicate) through one client-streaming
``Upload`` call, which decodes, checks, hashes, stores and records every image and cuts a version.
"""

from __future__ import annotations

import io
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from screwops.v1 import ingestion_pb2, ingestion_pb2_grpc
from screwops_rpc import open_channel
from screwops_settings import StackSettings
from screwops_stack import minio_security
from screwops_storage import minio_client
from screwops_synth import DEFECT_TYPES, image_rng, render_screw

COUNT = 600
SIZE = 256
CONCURRENCY = 8
REQUIRED = 200.0
COMMAND = "uv run python benchmarks/bench_ingest.py"
ADDRESS = "127.0.0.1:50052"


def images(seed: int) -> list[bytes]:
    classes = [None, *DEFECT_TYPES]
    encoded = []
    for index in range(COUNT):
        picture = render_screw(
            image_rng(seed, "bench", index), size=SIZE, defect=classes[index % 6]
        )
        out = io.BytesIO()
        picture.save(out, format="PNG", compress_level=1)
        encoded.append(out.getvalue())
    return encoded


def raw_put_rate(settings: StackSettings, files: list[bytes]) -> float:
    # The root: the bench makes (and removes) a bucket of its own, which no MinIO user may.
    s3 = minio_client(minio_security.root_settings(settings.minio, settings.home))
    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    s3.make_bucket(bucket)
    try:
        began = time.perf_counter()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            list(
                pool.map(
                    lambda item: s3.put_object(
                        bucket, f"{item[0]}.png", io.BytesIO(item[1]), len(item[1])
                    ),
                    enumerate(files),
                )
            )
        return len(files) / (time.perf_counter() - began)
    finally:
        for obj in s3.list_objects(bucket, recursive=True):
            s3.remove_object(bucket, obj.object_name or "")
        s3.remove_bucket(bucket)


def upload_rate(files: list[bytes]) -> tuple[float, ingestion_pb2.ImportResult]:
    dataset = f"bench-{uuid.uuid4().hex[:8]}"
    requests = [
        ingestion_pb2.UploadRequest(header=ingestion_pb2.UploadHeader(dataset_id=dataset)),
        *(
            ingestion_pb2.UploadRequest(
                file=ingestion_pb2.UploadFile(filename=f"{i}.png", content=data)
            )
            for i, data in enumerate(files)
        ),
    ]
    with open_channel(ADDRESS) as channel:
        stub = ingestion_pb2_grpc.IngestionServiceStub(channel)
        began = time.perf_counter()
        result = stub.Upload(iter(requests), timeout=600)
        return len(files) / (time.perf_counter() - began), result


def main() -> int:
    settings = StackSettings()
    raw = raw_put_rate(settings, images(seed=1))
    rate, result = upload_rate(images(seed=2))
    if result.accepted_count != COUNT:
        print(f"expected {COUNT} accepted images, got {result.accepted_count}", file=sys.stderr)
        return 1
    print(f"ingestion benchmark: {COUNT} PNG images of {SIZE}x{SIZE}")
    print(f"  raw MinIO put ({CONCURRENCY} threads): {raw:8.1f} images/s")
    print(f"  gRPC Upload (decode, check, store, record, version): {rate:8.1f} images/s")
    print(f"  upload / raw put: {rate / raw:.2f}; floor {REQUIRED:.0f} images/s")
    print(f"  command: {COMMAND}")
    return 0 if rate >= REQUIRED else 1


if __name__ == "__main__":
    sys.exit(main())
