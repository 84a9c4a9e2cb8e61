"""Each service's Dockerfile: up to date with the one recipe, and keeping its promises.

No Docker engine is needed. ``services/<name>/Dockerfile`` is rendered by
``screwops_stack.dockerfiles`` from the service's settings; the first test fails when a file is
stale (or missing, for a new service). The others read each file as Docker would (instructions,
stages) and check what it must do whoever wrote it: install the locked dependencies in a layer of
their own before any source is copied, run as a non-root user, bind and expose exactly the
service's ports, and start the service's module.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from screwops_settings.services import Service
from screwops_stack.dockerfiles import (
    CONTAINER_HOME,
    GENERATOR,
    STACK_DOCKERFILE,
    TRITON_DOCKERFILE,
    TRITON_PINS,
    UID,
    dockerfile_path,
    locked_versions,
    main,
    pin_triton,
    render,
    render_stack,
)
from screwops_stack.supervisor import available

ROOT = Path(__file__).resolve().parents[2]
SPECS = available()


@dataclass
class Stage:
    """One ``FROM`` stage: its name and its instructions in order, as (INSTRUCTION, arguments)."""

    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]

    def index(self, instruction: str, pattern: str) -> int:
        """Position of the first ``instruction`` whose arguments match ``pattern``."""
        for i, (name, args) in enumerate(self.instructions):
            if name == instruction and re.search(pattern, args):
                return i
        raise AssertionError(f"no {instruction} matching {pattern!r} in stage {self.name}")


def parse(text: str) -> list[Stage]:
    """The stages of a Dockerfile: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n", " ", text)
    stages: list[Stage] = [Stage(None)]  # instructions before the first FROM (ARG, syntax)
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        args = " ".join(args.split())
        if instruction == "FROM":
            match = re.search(r"\bAS\s+(\S+)", args, re.I)
            stages.append(Stage(match.group(1) if match else None))
        stages[-1].instructions.append((instruction, args))
    return stages[1:]


def _stages(spec: Service) -> list[Stage]:
    return parse(dockerfile_path(spec.name).read_text())


def _env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        for item in args.split():
            name, _, value = item.partition("=")
            env[name] = value
    return env


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_dockerfile_is_rendered_from_the_recipe(spec: Service) -> None:
    path = dockerfile_path(spec.name)
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing: run `{GENERATOR}`"
    assert path.read_text() == render(spec), f"{path.relative_to(ROOT)} is stale: run `{GENERATOR}`"


def test_the_stack_image_is_rendered_from_the_recipe() -> None:
    # docker-compose's one-shot jobs: screwops-stack as a non-root user, no port, no health check.
    path = STACK_DOCKERFILE
    assert path.read_text() == render_stack(), (
        f"{path.relative_to(ROOT)} is stale: run `{GENERATOR}`"
    )
    runtime = parse(path.read_text())[-1]
    assert runtime.all("USER")[-1] == str(UID)
    assert not runtime.all("EXPOSE")
    assert not runtime.all("HEALTHCHECK")
    assert json.loads(runtime.all("CMD")[-1]) == ["python", "-m", "screwops_stack.compose"]


def test_tritons_tensorflow_and_numpy_are_the_locked_ones() -> None:
    # The trainer saves with the locked TensorFlow; Triton's stub must load with the same.
    text = TRITON_DOCKERFILE.read_text()
    locked = locked_versions(ROOT / "uv.lock")
    assert text == pin_triton(text, locked), (
        f"{TRITON_DOCKERFILE.relative_to(ROOT)}'s versions are not uv.lock's: run `{GENERATOR}`"
    )
    runtime = parse(text)[-1]
    # Each pinned ARG is declared before FROM (its default) and again inside the stage (to use it),
    # and pip installs exactly the pinned packages at those arguments.
    args = dict(a.partition("=")[::2] for a in runtime.all("ARG"))
    assert set(args) == set(TRITON_PINS)
    pip = " ".join(runtime.all("RUN"))
    for arg, package in TRITON_PINS.items():
        assert re.search(rf"^ARG {arg}={re.escape(locked[package])}$", text, re.M)
        assert f'"{package}==${{{arg}}}"' in pip


def test_a_lock_moving_on_makes_tritons_dockerfile_stale(tmp_path: Path) -> None:
    root = tmp_path
    (root / TRITON_DOCKERFILE.relative_to(ROOT)).parent.mkdir(parents=True)
    (root / TRITON_DOCKERFILE.relative_to(ROOT)).write_text(TRITON_DOCKERFILE.read_text())
    lock = (ROOT / "uv.lock").read_text()
    newer = re.sub(r'(name = "tensorflow-cpu"\nversion = )"[^"]+"', r'\1"2.99.0"', lock, count=1)
    assert newer != lock
    (root / "uv.lock").write_text(newer)
    for spec in SPECS:
        dockerfile_path(spec.name, root).parent.mkdir(parents=True)
        dockerfile_path(spec.name, root).write_text(render(spec))
    (root / STACK_DOCKERFILE.relative_to(ROOT)).parent.mkdir(parents=True)
    (root / STACK_DOCKERFILE.relative_to(ROOT)).write_text(render_stack())
    assert main(["--check", "--root", str(root)]) == 1
    assert main(["--root", str(root)]) == 0
    written = (root / TRITON_DOCKERFILE.relative_to(ROOT)).read_text()
    assert "ARG TENSORFLOW_VERSION=2.99.0\n" in written
    assert main(["--check", "--root", str(root)]) == 0


def test_a_package_locked_at_several_versions_cannot_be_pinned() -> None:
    with pytest.raises(ValueError, match="tensorflow-cpu"):
        pin_triton(TRITON_DOCKERFILE.read_text(), {"numpy": "1.26.4"})


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_the_user_owns_the_stack_homes_secrets(spec: Service) -> None:
    # Compose mounts the service's Kafka password there; a parent Docker made would be root's
    # and the console could not write its own secrets beside it.
    runtime = _stages(spec)[-1]
    made = runtime.index("RUN", rf"mkdir -p .*{CONTAINER_HOME / 'secrets' / 'kafka'}$")
    assert runtime.index("USER", ".") < made


def test_every_service_package_has_a_dockerfile() -> None:
    for name in sorted(p.parent.name for p in ROOT.glob("services/*/pyproject.toml")):
        assert dockerfile_path(name).is_file(), f"services/{name}/Dockerfile: run `{GENERATOR}`"


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_dependencies_are_installed_before_any_source_is_copied(spec: Service) -> None:
    stages = {stage.name: stage for stage in _stages(spec)}
    manifests, build = stages["manifests"], stages["build"]
    # The manifests stage hands on only the lock and the pyproject.toml files.
    assert any("uv.lock pyproject.toml /out/" in run for run in manifests.all("RUN"))
    assert any("-name pyproject.toml" in run for run in manifests.all("RUN"))
    dependencies = build.index("RUN", rf"uv sync --frozen .*--no-install-workspace .*{spec.name}")
    sources = build.index("COPY", r"^(libs|services)\b")
    assert dependencies < sources
    copied_before = [a for n, a in build.instructions[:dependencies] if n in ("COPY", "ADD")]
    assert all(a.startswith("--from=") for a in copied_before), copied_before
    assert any(a.startswith("--from=manifests") for a in copied_before)
    # The package installed is the service's own, from the lock, as the workspace member names it.
    project = (ROOT / "services" / spec.name / "pyproject.toml").read_text()
    assert f'name = "screwops-{spec.name}"' in project
    for run in build.all("RUN"):
        if "uv sync" in run:
            assert "--frozen" in run
            assert f"--package screwops-{spec.name}" in run


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_the_runtime_runs_as_a_non_root_user(spec: Service) -> None:
    runtime = _stages(spec)[-1]
    users = runtime.all("USER")
    assert users, "the runtime stage never leaves root"
    # Numeric, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
    assert users[-1] == str(UID) != "0"
    assert runtime.index("USER", ".") < runtime.index("CMD", ".")


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_the_runtime_starts_the_services_module(spec: Service) -> None:
    runtime = _stages(spec)[-1]
    assert json.loads(runtime.all("CMD")[-1]) == ["python", "-m", spec.module]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_the_runtime_exposes_and_binds_exactly_the_settings_ports(spec: Service) -> None:
    runtime = _stages(spec)[-1]
    exposed = {int(port) for args in runtime.all("EXPOSE") for port in args.split()}
    assert exposed == spec.ports
    env = _env(runtime)
    prefix = f"SCREWOPS_{spec.name.upper()}_"
    hosts = {name for name, value in env.items() if name.startswith(prefix) and value == "0.0.0.0"}
    expected = {f"{prefix}METRICS_HOST"}
    expected |= {f"{prefix}GRPC_HOST"} if spec.grpc_port else set()
    expected |= {f"{prefix}HTTP_HOST"} if spec.http_port else set()
    assert hosts == expected


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_the_health_check_asks_the_service_on_its_port(spec: Service) -> None:
    runtime = _stages(spec)[-1]
    (check,) = runtime.all("HEALTHCHECK")
    prefix = f"SCREWOPS_{spec.name.upper()}_"
    if spec.grpc_port:
        assert f"${{{prefix}GRPC_PORT:-{spec.grpc_port}}}" in check
        assert "screwops_rpc.health" in check
    elif spec.http_port:
        assert f"${{{prefix}HTTP_PORT:-{spec.http_port}}}/healthz" in check
    else:
        assert f"${{{prefix}METRICS_PORT:-{spec.metrics_port}}}/metrics" in check


def test_the_build_context_leaves_out_local_state_but_not_the_sources() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "**/__pycache__"} <= ignored
    assert not ignored & {"libs", "services", "uv.lock", "pyproject.toml", "*"}
