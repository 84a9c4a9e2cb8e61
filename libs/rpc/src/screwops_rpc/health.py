"""Whether a gRPC API answers its health check, over TLS like every other call: the stack's
``services status``, the Dockerfiles' HEALTHCHECK and the k8s probes all ask through here
(Kubernetes' own gRPC probe speaks plaintext only)::

    python -m screwops_rpc.health 127.0.0.1:50051   # exit 0 when SERVING, 1 otherwise
"""

from __future__ import annotations

import sys
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from screwops_rpc.auth import open_channel


def problem(address: str, timeout: float = 2.0) -> str:
    """Empty when the API at ``address`` reports SERVING; else what went wrong."""
    with open_channel(address) as channel:
        try:
            stub: Any = health_pb2_grpc.HealthStub(channel)  # its stubs omit the methods
            answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError as exc:
            return f"gRPC health: {exc.code().name}"
    serving = answer.status == health_pb2.HealthCheckResponse.SERVING
    return "" if serving else "gRPC health: not serving"


def main(argv: list[str] | None = None) -> int:
    (address,) = argv if argv is not None else sys.argv[1:]
    found = problem(address, timeout=4.0)
    if found:
        print(found, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
