"""The Grafana dashboards are well-formed provisioning JSON: unique uids, every panel on the
provisioned Prometheus datasource with a query, laid out on Grafana's 24-column grid, and the
folder Grafana loads them from is the one docker-compose mounts them at. Their queries are run
against the real Prometheus in tests/e2e/test_zz_dashboards.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
COMPOSE = GRAFANA.parents[1] / "docker-compose.yml"


def load(path: Path) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(path.read_text())
    return board


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for top in board["panels"] for p in (top, *top.get("panels", []))]


def datasource_uid() -> str:
    provisioned = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    [source] = provisioned["datasources"]
    assert source["type"] == "prometheus"
    return str(source["uid"])


def test_the_expected_dashboards_exist_with_unique_uids() -> None:
    uids = [load(path)["uid"] for path in DASHBOARDS]
    assert len(uids) == len(set(uids))
    assert {"screwops-pipeline", "screwops-serving", "screwops-model-quality"} <= set(uids)
    for path in DASHBOARDS:
        assert path.stem == load(path)["uid"], "file name and uid differ"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_panel_queries_the_provisioned_prometheus(path: Path) -> None:
    board = load(path)
    uid = datasource_uid()
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels(board):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel.get("description"), f"{panel['title']}: say what the panel shows"
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == uid, panel["title"]


def test_grafana_loads_the_dashboards_from_where_compose_mounts_them() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/screwops.yml").read_text())
    [files] = provider["providers"]
    grafana = yaml.safe_load(COMPOSE.read_text())["services"]["grafana"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"]}
    assert mounts["./deploy/grafana/dashboards"] == files["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
