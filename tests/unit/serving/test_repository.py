"""The Triton model repository on disk: config, layout, atomic installs, the model template."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest
from screwops_contracts.models import FRAMES_INPUT, PART_FOUND_OUTPUT, PROBABILITY_OUTPUT
from screwops_errors import InvalidInputError
from screwops_serving import (
    CONFIG_FILE,
    MODEL_FILE,
    SAVED_MODEL_DIR,
    config_frame_size,
    export_version,
    model_config,
    model_template,
    remove_version,
    restore_version,
    versions_present,
)

# The frame size every test but the contract's own exports at.
SIZE = 64


def saved_model(root: Path, content: bytes = b"graph") -> Path:
    """A directory shaped like a SavedModel (the bytes do not matter on disk)."""
    (root / "variables").mkdir(parents=True)
    (root / "saved_model.pb").write_bytes(content)
    (root / "variables" / "variables.index").write_bytes(b"index")
    return root


def hidden(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(".")]


def test_config_declares_the_model_contract() -> None:
    config = model_config(
        "screw-classifier", frame_size=1024, max_batch_size=16, queue_delay_us=500
    )

    assert 'name: "screw-classifier"' in config
    assert 'backend: "python"' in config
    assert "max_batch_size: 16" in config
    assert f'{{ name: "{FRAMES_INPUT}", data_type: TYPE_UINT8, dims: [ 1024, 1024, 1 ] }}' in config
    assert f'{{ name: "{PROBABILITY_OUTPUT}", data_type: TYPE_FP32, dims: [ 1 ] }}' in config
    assert f'{{ name: "{PART_FOUND_OUTPUT}", data_type: TYPE_FP32, dims: [ 1 ] }}' in config
    assert "dynamic_batching { max_queue_delay_microseconds: 500 }" in config
    assert "instance_group [ { kind: KIND_CPU, count: 1 } ]" in config
    assert "version_policy: { all: {} }" in config


@pytest.mark.parametrize("name", ["", "../etc", "a/b", "-x", "a..b", "x" * 200])
def test_names_that_could_leave_the_repository_are_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError):
        export_version(
            saved_model(tmp_path / "sm"), tmp_path / "repo", name=name, version=1, frame_size=SIZE
        )


def test_bad_settings_are_refused() -> None:
    with pytest.raises(InvalidInputError):
        model_config("m", frame_size=SIZE, max_batch_size=0)
    with pytest.raises(InvalidInputError):
        model_config("m", frame_size=SIZE, queue_delay_us=-1)


def test_a_model_from_before_frame_input_is_refused_saying_to_retrain(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="retrain"):
        model_config("m", frame_size=0)
    with pytest.raises(InvalidInputError, match="retrain"):
        export_version(
            saved_model(tmp_path / "sm"), tmp_path / "repo", name="m", version=1, frame_size=0
        )
    assert not (tmp_path / "repo").exists()


def test_export_lays_out_a_python_backend_version(tmp_path: Path) -> None:
    source = saved_model(tmp_path / "sm")
    repository = tmp_path / "repo"

    directory = export_version(
        source, repository, name="m", version=3, frame_size=SIZE, max_batch_size=8
    )

    assert directory == repository / "m" / "3"
    assert (directory / MODEL_FILE).read_text() == model_template()
    assert (directory / SAVED_MODEL_DIR / "saved_model.pb").read_bytes() == b"graph"
    assert (directory / SAVED_MODEL_DIR / "variables" / "variables.index").is_file()
    assert (repository / "m" / CONFIG_FILE).read_text() == model_config(
        "m", frame_size=SIZE, max_batch_size=8
    )
    assert (source / "saved_model.pb").is_file(), "the source is copied, not moved"
    assert hidden(repository / "m") == [], "no staging directory is left behind"
    assert versions_present(repository, name="m") == [3]


def test_export_without_a_saved_model_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError):
        export_version(tmp_path / "empty", tmp_path / "repo", name="m", version=1, frame_size=SIZE)
    assert not (tmp_path / "repo").exists()


def test_exporting_a_version_again_replaces_it(tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    export_version(
        saved_model(tmp_path / "a", b"old"), repository, name="m", version=1, frame_size=SIZE
    )
    export_version(
        saved_model(tmp_path / "b", b"new"), repository, name="m", version=1, frame_size=SIZE
    )

    model = repository / "m" / "1" / SAVED_MODEL_DIR / "saved_model.pb"
    assert model.read_bytes() == b"new"
    assert hidden(repository / "m") == []


def test_a_failed_export_leaves_the_served_version_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repository = tmp_path / "repo"
    export_version(
        saved_model(tmp_path / "a", b"old"), repository, name="m", version=1, frame_size=SIZE
    )

    def broken_copy(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "copytree", broken_copy)
    with pytest.raises(OSError, match="disk full"):
        export_version(
            saved_model(tmp_path / "b", b"new"), repository, name="m", version=1, frame_size=SIZE
        )
    with pytest.raises(OSError, match="disk full"):
        export_version(
            saved_model(tmp_path / "c", b"new"), repository, name="m", version=2, frame_size=SIZE
        )

    assert (repository / "m" / "1" / SAVED_MODEL_DIR / "saved_model.pb").read_bytes() == b"old"
    assert versions_present(repository, name="m") == [1]
    assert hidden(repository / "m") == [], "the half-built staging directory is removed"


def test_the_config_is_rewritten_only_when_it_changes(tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    export_version(saved_model(tmp_path / "a"), repository, name="m", version=1, frame_size=SIZE)
    config = repository / "m" / CONFIG_FILE
    before = config.stat().st_mtime_ns

    export_version(saved_model(tmp_path / "b"), repository, name="m", version=2, frame_size=SIZE)
    assert config.stat().st_mtime_ns == before, "Triton would reload every version"

    export_version(
        saved_model(tmp_path / "c"),
        repository,
        name="m",
        version=3,
        frame_size=SIZE,
        queue_delay_us=9,
    )
    assert "max_queue_delay_microseconds: 9" in config.read_text()


def test_the_config_says_the_frame_size_every_version_is_served_with(tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    assert config_frame_size(repository, name="m") is None, "no config yet"
    export_version(saved_model(tmp_path / "sm"), repository, name="m", version=1, frame_size=SIZE)
    assert config_frame_size(repository, name="m") == SIZE
    (repository / "m" / CONFIG_FILE).write_text('name: "m"\nbackend: "python"\n')
    assert config_frame_size(repository, name="m") is None, "not a frames config"


def test_versions_present_ignores_what_triton_ignores(tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    for version in (2, 10, 1):
        export_version(
            saved_model(tmp_path / f"sm{version}"),
            repository,
            name="m",
            version=version,
            frame_size=SIZE,
        )
    for stray in ("01", ".staging-4-x", "latest"):
        (repository / "m" / stray).mkdir()

    assert versions_present(repository, name="m") == [1, 2, 10]
    assert versions_present(repository, name="unknown") == []


def test_remove_version(tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    export_version(saved_model(tmp_path / "a"), repository, name="m", version=1, frame_size=SIZE)
    export_version(saved_model(tmp_path / "b"), repository, name="m", version=2, frame_size=SIZE)

    assert remove_version(repository, name="m", version=1)
    assert not remove_version(repository, name="m", version=1)
    assert versions_present(repository, name="m") == [2]
    assert hidden(repository / "m") == []


def test_restore_puts_an_exported_version_back_unchanged(tmp_path: Path) -> None:
    first = tmp_path / "first"
    exported = export_version(
        saved_model(tmp_path / "sm", b"graph"), first, name="m", version=4, frame_size=SIZE
    )
    (exported / MODEL_FILE).write_text("# the model.py of its time\n")

    restored = restore_version(exported, tmp_path / "repo", name="m", version=4, frame_size=SIZE)

    assert (restored / MODEL_FILE).read_text() == "# the model.py of its time\n"
    assert (restored / SAVED_MODEL_DIR / "saved_model.pb").read_bytes() == b"graph"
    assert (tmp_path / "repo" / "m" / CONFIG_FILE).is_file()
    with pytest.raises(InvalidInputError):
        restore_version(tmp_path / "sm", tmp_path / "repo", name="m", version=5, frame_size=SIZE)


def test_the_model_template_imports_nothing_from_screwops() -> None:
    """model.py runs inside Triton's Python stub, where no screwops package is installed."""
    tree = ast.parse(model_template())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }

    assert not {name for name in imported if name.startswith("screwops")}
    assert imported <= {
        "__future__",
        "json",
        "os",
        "typing",
        "numpy",
        "tensorflow",
        "triton_python_backend_utils",
    }
    classes = [node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    assert classes == ["TritonPythonModel"]
