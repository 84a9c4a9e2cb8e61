"""Failed inspections per model version, summed over every gateway replica, from Prometheus.

A failed inspection publishes no ``inspection.completed``, so the monitor cannot count failures
from the bus. Every gateway replica counts each score it asks of a version
(``screwops_gateway_model_calls_total``, by model name, version, role, path and outcome) and
Prometheus scrapes them all, so its HTTP API answers the sum over replicas; the rollout
controller asks it, every ``errors_interval_s``, for the calls that answered requests (path
``response``) of one version in one role since a step or a switch began.

``increase()`` extrapolates to the edges of its range, so counts come back fractional and are
rounded; a range shorter than two scrapes has no figure, and is reported as no calls.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger("screwops.monitor.errors")

__all__ = ["Calls", "ErrorCounts", "PrometheusErrorCounts", "calls_query"]

METRIC = "screwops_gateway_model_calls_total"
FAILED = "failed"


@dataclass(frozen=True)
class Calls:
    """Scores asked of one version in one role over a span, and how many failed."""

    total: int
    failed: int

    @property
    def rate(self) -> float:
        return self.failed / self.total if self.total else 0.0


class ErrorCounts(Protocol):
    """Where the controller reads failures from."""

    async def calls(self, model_name: str, version: int, role: str, seconds: float) -> Calls | None:
        """The calls answering requests that ``version`` of ``model_name`` in ``role`` had over
        the last ``seconds``, over every replica; None when unknown (Prometheus did not answer)."""
        ...


def calls_query(model_name: str, version: int, role: str, seconds: float) -> str:
    """The PromQL of :meth:`ErrorCounts.calls`: the increase by outcome."""
    selector = ",".join(
        f'{label}="{value}"'
        for label, value in (
            ("model_name", model_name),
            ("model_version", str(version)),
            ("role", role),
            ("path", "response"),
        )
    )
    return f"sum by (outcome) (increase({METRIC}{{{selector}}}[{max(1, math.ceil(seconds))}s]))"


class PrometheusErrorCounts:
    """:class:`ErrorCounts` from Prometheus's HTTP API at ``url`` (its instant queries)."""

    def __init__(self, url: str, *, timeout_s: float = 5.0) -> None:
        self._endpoint = url.rstrip("/") + "/api/v1/query"
        self._timeout_s = timeout_s

    async def calls(self, model_name: str, version: int, role: str, seconds: float) -> Calls | None:
        query = calls_query(model_name, version, role, seconds)
        try:
            answer = await asyncio.to_thread(self._get, query)
        except (OSError, ValueError) as failed:
            log.warning("Prometheus did not answer %s: %s", query, failed)
            return None
        if answer.get("status") != "success":
            log.warning("Prometheus refused %s: %s", query, answer.get("error"))
            return None
        by_outcome = {
            series["metric"].get("outcome", ""): float(series["value"][1])
            for series in answer["data"]["result"]
        }
        total = round(sum(by_outcome.values()))
        return Calls(total=total, failed=min(total, round(by_outcome.get(FAILED, 0.0))))

    def _get(self, query: str) -> dict[str, Any]:
        url = f"{self._endpoint}?{urllib.parse.urlencode({'query': query})}"
        with urllib.request.urlopen(url, timeout=self._timeout_s) as response:
            answer: dict[str, Any] = json.load(response)
        return answer
