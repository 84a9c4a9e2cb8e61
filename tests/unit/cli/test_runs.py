"""``screwops runs`` over an in-memory stand-in for the trainer's records: lists, one run, and
following a run's epochs until it finishes or fails."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from screwops_cli import runs
from screwops_contracts.runs import EpochRecord, RunRecord, RunStatus
from screwops_errors import UnavailableError

from tests.unit.cli.support import screwops

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def epoch(n: int) -> EpochRecord:
    return EpochRecord(
        epoch=n,
        metrics={"loss": 1 / n, "accuracy": 0.5 + n / 100, "val_loss": 1.1 / n},
        ended_at=T0 + timedelta(seconds=n),
    )


def record(
    run_id: str = "run-aaaaaaaaaaaa",
    *,
    status: RunStatus = "running",
    epochs: int = 0,
    planned: int = 5,
    dataset: str = "screws",
    attempts: int = 1,
) -> RunRecord:
    done = status != "running"
    return RunRecord(
        run_id=run_id,
        model_name="screw-classifier",
        status=status,
        params={"epochs": planned, "batch_size": 16},
        seed=7,
        git_sha="abc123",
        packages={"tensorflow": "2.18"},
        dataset_id=dataset,
        dataset_version=2,
        dataset_digest="d" * 64,
        split_key="screws/v2/split.json",
        split_counts={"train": 140, "validation": 30},
        cause_event_id="e" * 8,
        correlation_id="corr-1",
        attempts=attempts,
        epochs=[epoch(n) for n in range(1, epochs + 1)],
        metrics={"accuracy": 0.91} if status == "finished" else {},
        best_epoch=epochs if status == "finished" else None,
        training_seconds=12.5 if done else None,
        artifact_key=f"runs/{run_id}/saved_model",
        history_key=f"runs/{run_id}/history.json",
        record_key=f"runs/{run_id}/run.json",
        error="TensorFlow ran out of memory" if status == "failed" else None,
        started_at=T0,
        finished_at=T0 + timedelta(minutes=1) if done else None,
    )


@dataclass
class FakeStore:
    """Runs by id; a run may be given a sequence of records, read one after the other."""

    runs: dict[str, list[RunRecord | Exception]] = field(default_factory=dict)
    reads: int = 0
    listed: list[dict[str, Any]] = field(default_factory=list)

    async def run(self, run: str) -> RunRecord | None:
        self.reads += 1
        states = self.runs.get(run)
        if not states:
            return None
        state = states.pop(0) if len(states) > 1 else states[0]
        if isinstance(state, Exception):
            raise state
        return state

    async def list_runs(
        self, *, limit: int = 50, dataset_id: str | None = None, status: RunStatus | None = None
    ) -> list[RunRecord]:
        self.listed.append({"limit": limit, "dataset_id": dataset_id, "status": status})
        latest = [s for states in self.runs.values() for s in states[-1:]]
        return [
            r
            for r in latest
            if isinstance(r, RunRecord)
            and dataset_id in (None, r.dataset_id)
            and status in (None, r.status)
        ][:limit]


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> FakeStore:
    fake = FakeStore()

    @asynccontextmanager
    async def opened() -> AsyncIterator[FakeStore]:
        yield fake

    monkeypatch.setattr(runs, "open_store", opened)
    return fake


def test_list_shows_the_latest_runs_and_passes_the_filters(store: FakeStore) -> None:
    store.runs["run-aaaaaaaaaaaa"] = [record(status="finished", epochs=5)]
    store.runs["run-bbbbbbbbbbbb"] = [record("run-bbbbbbbbbbbb", epochs=2, dataset="bolts")]

    table = screwops("runs", "list")
    filtered = screwops("runs", "list", "--dataset", "bolts", "--status", "running", "--json")

    assert table.exit_code == 0, table.output
    assert "run-aaaaaaaaaaaa" in table.stdout
    assert "finished" in table.stdout
    assert "5/5" in table.stdout
    assert "2/5" in table.stdout
    assert filtered.exit_code == 0, filtered.output
    assert [r["run_id"] for r in json.loads(filtered.stdout)] == ["run-bbbbbbbbbbbb"]
    assert store.listed[-1] == {"limit": 20, "dataset_id": "bolts", "status": "running"}


def test_list_refuses_an_unknown_status(store: FakeStore) -> None:
    result = screwops("runs", "list", "--status", "paused")
    assert result.exit_code == 2
    assert store.listed == []


def test_show_prints_the_run_and_its_epochs(store: FakeStore) -> None:
    store.runs["run-aaaaaaaaaaaa"] = [record(status="finished", epochs=3, planned=10)]

    result = screwops("runs", "show", "run-aaaaaaaaaaaa")
    as_json = screwops("runs", "show", "run-aaaaaaaaaaaa", "--json")

    assert result.exit_code == 0, result.output
    for shown in ("finished", "screws v2", "3/10", "epochs=10", "runs/run-aaaaaaaaaaaa"):
        assert shown in result.stdout
    assert "0.3333" in result.stdout  # epoch 3's loss
    data = json.loads(as_json.stdout)
    assert (data["status"], len(data["epochs"])) == ("finished", 3)


def test_an_unknown_run_exits_4(store: FakeStore) -> None:
    result = screwops("runs", "show", "run-nope")
    assert result.exit_code == 4
    assert "no run 'run-nope'" in result.stderr
    followed = screwops("runs", "show", "run-nope", "--follow")
    assert followed.exit_code == 4


def test_follow_reads_until_the_run_finishes(store: FakeStore) -> None:
    store.runs["run-aaaaaaaaaaaa"] = [
        record(epochs=0),
        record(epochs=1),
        UnavailableError("MongoDB did not answer"),  # a blip: the last record stays shown
        record(epochs=3),
        record(status="finished", epochs=4),
    ]

    result = screwops("runs", "show", "run-aaaaaaaaaaaa", "--follow", "--interval", "0.1")

    assert result.exit_code == 0, result.output
    assert store.reads == 5
    assert "run-aaaaaaaaaaaa (finished, attempt 1)" in result.stdout
    assert "4/5" in result.stdout
    assert "finished" in result.stdout


def test_follow_exits_1_when_the_run_fails(store: FakeStore) -> None:
    store.runs["run-aaaaaaaaaaaa"] = [record(epochs=1), record(status="failed", epochs=1)]

    result = screwops("runs", "show", "run-aaaaaaaaaaaa", "-f", "--interval", "0.1")

    assert result.exit_code == 1
    assert "TensorFlow ran out of memory" in result.stdout


def test_follow_json_waits_quietly_and_prints_the_final_record(store: FakeStore) -> None:
    store.runs["run-aaaaaaaaaaaa"] = [
        record(epochs=1),
        record(epochs=2),
        record(status="finished", epochs=2),
    ]

    result = screwops("runs", "show", "run-aaaaaaaaaaaa", "-f", "--interval", "0.1", "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "finished"


def test_follow_of_a_finished_run_returns_at_once(store: FakeStore) -> None:
    store.runs["run-aaaaaaaaaaaa"] = [record(status="finished", epochs=4)]
    result = screwops("runs", "show", "run-aaaaaaaaaaaa", "--follow")
    assert result.exit_code == 0, result.output
    assert store.reads == 1


def test_an_unreachable_database_exits_3(store: FakeStore) -> None:
    store.runs["run-aaaaaaaaaaaa"] = [UnavailableError("MongoDB did not answer")]
    result = screwops("runs", "show", "run-aaaaaaaaaaaa")
    assert result.exit_code == 3
    assert "UNAVAILABLE: MongoDB did not answer" in result.stderr


def test_the_runs_commands_load_neither_the_trainer_nor_tensorflow() -> None:
    import subprocess
    import sys

    probe = (
        "import sys, screwops_cli.main, screwops_cli.runs; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('screwops_trainer', 'tensorflow')))"
    )
    found = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert found.stdout.strip() == "[]"
