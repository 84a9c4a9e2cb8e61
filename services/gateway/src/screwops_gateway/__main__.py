"""The gateway's entry point: ``python -m screwops_gateway``. Wiring only."""

from __future__ import annotations

import asyncio

from screwops_rpc import bearer_auth
from screwops_runtime import Runtime
from screwops_serving import TritonModels

from screwops_gateway import grpc_api, handlers
from screwops_gateway.config import GatewaySettings
from screwops_gateway.metrics import GatewayMetrics
from screwops_gateway.prediction_log import PredictionLog
from screwops_gateway.service import GatewayService
from screwops_gateway.store import MongoServingStateStore


def main() -> None:
    settings = GatewaySettings()
    runtime = Runtime.create(settings, instrument_grpc=True)
    rules = settings.rules()
    metrics = GatewayMetrics(runtime.telemetry.meter_provider, lines=rules.lines)
    prediction_log = PredictionLog(runtime.bus.publish, runtime.objects, metrics, rules.log)
    service = GatewayService(
        TritonModels(settings.stack.triton.grpc_url),
        MongoServingStateStore(runtime.db),
        prediction_log,
        metrics,
        rules,
        tracer_provider=runtime.telemetry.tracer_provider,
    )
    handlers.register(runtime.bus, service)
    api = grpc_api.server(
        service,
        host=settings.grpc_host,
        port=settings.grpc_port,
        tls=settings.stack.grpc,
        require_client_cert=settings.require_client_cert,
        interceptors=bearer_auth(settings.auth_tokens, grpc_api.ROLES, metrics.refused),
        # Images up to twice the limit still arrive, to be refused with their reason.
        max_message_bytes=2 * settings.max_image_bytes + 64 * 1024,
        max_concurrent_rpcs=settings.max_concurrent_rpcs,
        max_concurrent_streams=settings.max_concurrent_streams,
        max_connection_age_s=settings.max_connection_age_s,
    )

    # The gateway counts every inspection by status itself (GatewayMetrics), refusals included,
    # so its hot path carries no second count.
    asyncio.run(
        runtime.serve(
            api=api,
            count_calls=False,
            on_start=[prediction_log.prepare],
            background=[service],
        )
    )


if __name__ == "__main__":
    main()
