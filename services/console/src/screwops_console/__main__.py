"""Console's entry point: ``python -m screwops_console``. Wiring only."""

from __future__ import annotations

import asyncio
import logging

import uvicorn
from screwops_storage import ObjectStore, database
from screwops_telemetry import setup_telemetry

from screwops_console.config import ConsoleSettings
from screwops_console.records import MinioReports, MongoRuns
from screwops_console.web import create_app

log = logging.getLogger("screwops.console")


def main() -> None:
    settings = ConsoleSettings()
    telemetry = setup_telemetry(
        settings.service_name,
        settings.stack,
        metrics_port=settings.metrics_port,
        metrics_host=settings.metrics_host,
        instrument_grpc=True,
        log_level=settings.log_level,
    )
    db = database(settings.stack.mongo, appname=settings.service_name)
    app = create_app(
        settings,
        MongoRuns(db),
        MinioReports(ObjectStore.from_settings(settings.stack.minio)),
        meter_provider=telemetry.meter_provider,
    )
    # uvicorn stops on SIGTERM/SIGINT after in-flight requests finish; log_config=None keeps the
    # trace-stamped logging that setup_telemetry installed.
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.http_host,
            port=settings.http_port,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=30,
        )
    )
    log.info("console serving http://%s:%d", settings.http_host, settings.http_port)
    try:
        asyncio.run(server.serve())
    finally:
        db.client.close()
        telemetry.shutdown()


if __name__ == "__main__":
    main()
