"""Instant queries to Prometheus's HTTP API, for figures only the gateways' metrics hold.

A rollout's comparison (how often the candidate agreed with production, how each side answered
and how fast) is counted by every gateway replica in its own metrics; Prometheus scrapes them
all, so a sum there is the figure of the whole line, where one replica's ``/metrics`` would be
its share only and would start again from zero when it restarts. The console reaches Prometheus
where every service does (``SCREWOPS_TELEMETRY__PROMETHEUS_URL``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx2
from screwops_errors import UnavailableError


@dataclass(frozen=True)
class Sample:
    """One series of an instant vector: its labels and its value at the query's time."""

    labels: dict[str, str]
    value: float


class Prometheus:
    """An HTTP client of one Prometheus server; a failure is an :class:`UnavailableError` naming
    it, which a page section shows as it is."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self._url = url.rstrip("/")
        self._http = httpx2.AsyncClient(base_url=self._url, timeout=timeout_s)

    async def vector(self, expr: str, at: datetime) -> list[Sample]:
        """The instant vector ``expr`` evaluates to at ``at``."""
        try:
            response = await self._http.get(
                "/api/v1/query", params={"query": expr, "time": f"{at.timestamp():.3f}"}
            )
            body: dict[str, Any] = response.json()
        except (httpx2.HTTPError, ValueError) as exc:
            raise UnavailableError(f"prometheus at {self._url}: {exc}") from exc
        if body.get("status") != "success":
            raise UnavailableError(f"prometheus at {self._url}: {body.get('error', body)}")
        data = body["data"]
        if data.get("resultType") != "vector":
            raise UnavailableError(f"prometheus answered a {data.get('resultType')}, not a vector")
        return [
            Sample(labels=dict(series["metric"]), value=float(series["value"][1]))
            for series in data["result"]
        ]

    async def close(self) -> None:
        await self._http.aclose()


def label(value: str) -> str:
    """``value`` as a PromQL string literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
