"""How every stack starts Triton with its model-control API closed (deploy/triton/restricted.sh),
checked without Triton: the flags the script adds, the key file ``make up`` makes for it, and
that a Triton started before the key is restarted by the next ``make up``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from screwops_contracts.models import MODEL_CONTROL_HEADER
from screwops_settings import StackSettings, triton_model_control_key_file
from screwops_stack.servers import (
    TRITON_RESTRICTED_START,
    TRITON_RESTRICTIONS,
    ensure_triton_key,
    servers,
)

pytestmark = pytest.mark.usefixtures("clean_environment")


def _start(key_file: Path) -> subprocess.CompletedProcess[str]:
    """The script, with printf standing in for tritonserver: it prints the arguments it got."""
    return subprocess.run(
        ["/bin/sh", str(TRITON_RESTRICTED_START), str(key_file), "printf", "%s\\n", "--a=1"],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_script_restricts_model_control_over_grpc_and_http_to_the_key(tmp_path: Path) -> None:
    key_file = ensure_triton_key(tmp_path)
    key = key_file.read_text().strip()
    started = _start(key_file)
    assert started.returncode == 0, started.stderr
    restriction = f"model-repository:{MODEL_CONTROL_HEADER}={key}"
    assert started.stdout.splitlines() == [
        "--a=1",
        *(f"{flag}={restriction}" for flag in TRITON_RESTRICTIONS),
    ]


@pytest.mark.parametrize("content", [None, "", "\n"])
def test_the_script_refuses_to_start_triton_open_without_a_key(
    tmp_path: Path, content: str | None
) -> None:
    key_file = tmp_path / "model-control"
    if content is not None:
        key_file.write_text(content)
    started = _start(key_file)
    assert started.returncode != 0
    assert "--a=1" not in started.stdout


def test_the_key_is_made_once_owner_only(tmp_path: Path) -> None:
    key_file = ensure_triton_key(tmp_path)
    assert key_file == triton_model_control_key_file(tmp_path)
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = key_file.read_text()
    assert len(key) >= 32
    assert ensure_triton_key(tmp_path).read_text() == key


def test_the_native_triton_starts_through_the_script_with_the_homes_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCREWOPS_HOME", str(tmp_path))
    (triton,) = [s for s in servers(StackSettings()) if s.name == "triton"]
    assert triton.argv[1:3] == [
        str(TRITON_RESTRICTED_START),
        str(triton_model_control_key_file(tmp_path)),
    ]
    assert triton.argv[3].endswith("/tritonserver")
    # Building the server writes nothing: the key is made when Triton is about to start.
    assert not triton_model_control_key_file(tmp_path).exists()
    # A Triton running with model control open (from before the key) is restarted by `up`.
    running_open = triton.argv[3:]
    assert triton.outdated(running_open)
    restricted = [
        f"{flag}=model-repository:{MODEL_CONTROL_HEADER}=k" for flag in TRITON_RESTRICTIONS
    ]
    assert triton.outdated([*running_open, *restricted]) == ""
