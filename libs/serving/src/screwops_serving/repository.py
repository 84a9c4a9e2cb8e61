"""The Triton model repository on disk: one directory per model, one subdirectory per version.

::

    <repository>/<name>/config.pbtxt                 backend "python", every version served
    <repository>/<name>/<version>/model.py           the template in ``triton_model.py``
    <repository>/<name>/<version>/model.savedmodel/  the TensorFlow SavedModel

Triton reads these files only when it is asked to load the model (explicit model control), and
it may be asked at any moment by another process, so every change here is atomic: a version is
assembled in a hidden staging directory beside its final place and renamed into it, a removed
version is renamed away before it is deleted, and ``config.pbtxt`` is replaced, never rewritten in
place. Triton ignores directories whose names are not version numbers, so the staging and trash
directories are invisible to it.

The config serves every version present (``version_policy: { all: {} }``), so a request can pin
a version and rolling back is a matter of which version is asked for, not of loading anything.
"""

from __future__ import annotations

import importlib.resources
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from screwops_contracts.models import (
    FRAMES_INPUT,
    PART_FOUND_OUTPUT,
    PROBABILITY_OUTPUT,
    frame_size_problem,
)
from screwops_errors import InvalidInputError

__all__ = [
    "CONFIG_FILE",
    "MODEL_FILE",
    "SAVED_MODEL_DIR",
    "config_frame_size",
    "export_version",
    "model_config",
    "model_template",
    "remove_version",
    "restore_version",
    "versions_present",
]

CONFIG_FILE = "config.pbtxt"
MODEL_FILE = "model.py"
SAVED_MODEL_DIR = "model.savedmodel"
_TEMPLATE = "triton_model.py"
_SAVED_MODEL_PROTO = "saved_model.pb"
# Triton's model names become directory names: nothing that could climb out of the repository.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
# Triton serves integer-named version directories without a leading zero and ignores the rest.
_VERSION_DIR = re.compile(r"[1-9][0-9]*")
# The frames input's dims in a config model_config wrote: [ S, S, 1 ].
_FRAMES_DIMS = re.compile(
    rf'name: "{re.escape(FRAMES_INPUT)}", data_type: TYPE_UINT8, dims: \[ (\d+), \1, 1 \]'
)
# Fills a staging directory with one version's files.
_Build = Callable[[Path], None]


def model_config(
    name: str, *, frame_size: int, max_batch_size: int = 32, queue_delay_us: int = 2000
) -> str:
    """The ``config.pbtxt`` of a ScrewOps model: the tensor contract of ``screwops_contracts``
    for frames of ``frame_size`` pixels square.

    Dynamic batching lets Triton merge requests from several cameras that arrive within
    ``queue_delay_us`` into one model call; one CPU instance keeps the shared machine usable.
    The config is the model's, not a version's: every version of a name is served with the
    frame size of the latest one placed, so versions of one name must share it (the registry
    refuses a version that would change it under others: :func:`config_frame_size`).
    """
    _check_name(name)
    _check_frame_size(frame_size)
    if max_batch_size < 1:
        raise InvalidInputError(f"max_batch_size must be at least 1, not {max_batch_size}")
    if queue_delay_us < 0:
        raise InvalidInputError(f"queue_delay_us must not be negative, not {queue_delay_us}")
    size = frame_size
    return f"""# Written by screwops_serving; the registry rewrites it, do not edit.
name: "{name}"
backend: "python"
max_batch_size: {max_batch_size}
input [
  {{ name: "{FRAMES_INPUT}", data_type: TYPE_UINT8, dims: [ {size}, {size}, 1 ] }}
]
output [
  {{ name: "{PROBABILITY_OUTPUT}", data_type: TYPE_FP32, dims: [ 1 ] }},
  {{ name: "{PART_FOUND_OUTPUT}", data_type: TYPE_FP32, dims: [ 1 ] }}
]
dynamic_batching {{ max_queue_delay_microseconds: {queue_delay_us} }}
instance_group [ {{ kind: KIND_CPU, count: 1 }} ]
version_policy: {{ all: {{}} }}
"""


def model_template() -> str:
    """The ``model.py`` every version directory gets (see ``triton_model.py``)."""
    return importlib.resources.files("screwops_serving").joinpath(_TEMPLATE).read_text()


def export_version(
    saved_model_dir: Path,
    repository: Path,
    *,
    name: str,
    version: int,
    frame_size: int,
    max_batch_size: int = 32,
    queue_delay_us: int = 2000,
) -> Path:
    """Place a SavedModel in the repository as ``version`` of model ``name``; return its directory.

    An existing directory of that version is replaced, so exporting again after a crash or a
    redelivered event is safe. The SavedModel is copied, not moved: the caller's directory is
    left as it was.

    Raises:
        InvalidInputError: a bad name, version or frame size (0: a model from before frame
            input), or ``saved_model_dir`` holds no SavedModel.
    """
    _check_name(name)
    _check_version(version)
    _check_frame_size(frame_size)
    if not (saved_model_dir / _SAVED_MODEL_PROTO).is_file():
        raise InvalidInputError(f"{saved_model_dir} holds no {_SAVED_MODEL_PROTO}")

    def build(staging: Path) -> None:
        (staging / MODEL_FILE).write_text(model_template())
        shutil.copytree(saved_model_dir, staging / SAVED_MODEL_DIR, symlinks=False)

    config = model_config(
        name, frame_size=frame_size, max_batch_size=max_batch_size, queue_delay_us=queue_delay_us
    )
    return _install(repository, name, version, build, config)


def restore_version(
    version_dir: Path,
    repository: Path,
    *,
    name: str,
    version: int,
    frame_size: int,
    max_batch_size: int = 32,
    queue_delay_us: int = 2000,
) -> Path:
    """Place a version directory exported earlier (``model.py`` + SavedModel) back as it was.

    This is how a version evicted from the repository, or lost with it, comes back from its copy
    in object storage: the files that were checked when it was first deployed, unchanged.

    Raises:
        InvalidInputError: a bad name, version or frame size, or ``version_dir`` is not an
            exported version.
    """
    _check_name(name)
    _check_version(version)
    _check_frame_size(frame_size)
    if (
        not (version_dir / MODEL_FILE).is_file()
        or not (version_dir / SAVED_MODEL_DIR / _SAVED_MODEL_PROTO).is_file()
    ):
        raise InvalidInputError(f"{version_dir} is not an exported Triton model version")

    def build(staging: Path) -> None:
        shutil.copytree(version_dir, staging, symlinks=False, dirs_exist_ok=True)

    config = model_config(
        name, frame_size=frame_size, max_batch_size=max_batch_size, queue_delay_us=queue_delay_us
    )
    return _install(repository, name, version, build, config)


def remove_version(repository: Path, *, name: str, version: int) -> bool:
    """Take a version out of the repository; False when it was not there.

    Triton keeps serving a loaded version until the model is loaded again, so callers reload the
    model afterwards for the removal to take effect.
    """
    _check_name(name)
    _check_version(version)
    target = repository / name / str(version)
    if not target.is_dir():
        return False
    trash = target.with_name(f".trash-{version}-{uuid.uuid4().hex}")
    target.rename(trash)
    shutil.rmtree(trash)
    return True


def config_frame_size(repository: Path, *, name: str) -> int | None:
    """The frame size the config of ``name`` in the repository declares, the one every version
    of it is served with; None when it has no config, or one not written by :func:`model_config`
    (from before frame input)."""
    _check_name(name)
    path = repository / name / CONFIG_FILE
    if not path.is_file():
        return None
    found = _FRAMES_DIMS.search(path.read_text())
    return int(found.group(1)) if found else None


def versions_present(repository: Path, *, name: str) -> list[int]:
    """The versions of ``name`` in the repository (what Triton serves once loaded), ascending."""
    _check_name(name)
    directory = repository / name
    if not directory.is_dir():
        return []
    return sorted(
        int(entry.name)
        for entry in directory.iterdir()
        if entry.is_dir() and _VERSION_DIR.fullmatch(entry.name)
    )


def _install(repository: Path, name: str, version: int, build: _Build, config: str) -> Path:
    model_dir = repository / name
    model_dir.mkdir(parents=True, exist_ok=True)
    target = model_dir / str(version)
    staging = Path(tempfile.mkdtemp(dir=model_dir, prefix=f".staging-{version}-"))
    try:
        build(staging)
        staging.chmod(0o755)
        if target.exists():
            # A directory cannot be renamed over a non-empty one; the old copy steps aside first.
            trash = model_dir / f".trash-{version}-{uuid.uuid4().hex}"
            target.rename(trash)
            staging.rename(target)
            shutil.rmtree(trash)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _write_config(model_dir / CONFIG_FILE, config)
    return target


def _write_config(path: Path, config: str) -> None:
    """Replace config.pbtxt only when it changes: Triton reloads every version on a new config."""
    if path.is_file() and path.read_text() == config:
        return
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(config)
        os.chmod(temporary, 0o644)
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _check_name(name: str) -> None:
    if not _MODEL_NAME.fullmatch(name) or ".." in name:
        raise InvalidInputError(f"{name!r} is not a valid Triton model name")


def _check_version(version: int) -> None:
    if version < 1:
        raise InvalidInputError(f"model versions start at 1, not {version}")


def _check_frame_size(frame_size: int) -> None:
    problem = frame_size_problem(frame_size)
    if problem is not None:
        raise InvalidInputError(f"frame size {frame_size}: {problem}")
