"""What a run records about the code that produced it, so a model can be traced to its source.

Both are read once at start-up: neither changes while the process runs, and ``git`` is a
subprocess one should not start per event.
"""

from __future__ import annotations

import importlib.metadata
import logging
import subprocess
from pathlib import Path

__all__ = ["PACKAGES", "UNKNOWN", "git_sha", "package_versions"]

log = logging.getLogger("screwops.trainer")

UNKNOWN = "unknown"

PACKAGES: dict[str, tuple[str, ...]] = {
    "tensorflow": ("tensorflow", "tensorflow-cpu"),
    "keras": ("keras",),
    "numpy": ("numpy",),
    "screwops-trainer": ("screwops-trainer",),
}
"""Recorded name -> the distributions that provide it (TensorFlow ships under two names)."""


def git_sha(configured: str | None = None, *, cwd: Path | None = None) -> str:
    """``configured`` if set, else the checkout's HEAD, else :data:`UNKNOWN` (an image has no
    ``.git``); a missing commit never stops training, it is only recorded as unknown."""
    if configured:
        return configured
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd or Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as error:
        log.info("no git commit to record (%s): runs record %r", error, UNKNOWN)
        return UNKNOWN
    return done.stdout.strip() or UNKNOWN


def package_versions() -> dict[str, str]:
    """The versions of what decides a trained model's numbers, :data:`UNKNOWN` where absent."""
    versions: dict[str, str] = {}
    for name, distributions in PACKAGES.items():
        versions[name] = UNKNOWN
        for distribution in distributions:
            try:
                versions[name] = importlib.metadata.version(distribution)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return versions
