"""The console's pages, one router each; ``create_app`` includes them in this order."""

from __future__ import annotations

from fastapi import APIRouter

from screwops_console.routes import inspection, labeling, overview, pipeline, reports

ROUTERS: tuple[APIRouter, ...] = (
    overview.router,
    inspection.router,
    labeling.router,
    pipeline.router,
    reports.router,
)

__all__ = ["ROUTERS"]
