"""Libs sit below services: a lib that imports a service drags the service (and whatever it
imports, TensorFlow included) into every lib user, and hides a contract in a service's module.
What services share goes in a lib (``screwops_contracts`` for the records they exchange)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SERVICES = sorted(
    path.name
    for path in (ROOT / "services").iterdir()
    if (path / "src" / f"screwops_{path.name}").is_dir()
)

# Lib modules that reach services by name through importlib, each with why it still may.
REFLECTIVE = {
    # issue 23 item 3: one table of services. The supervisor reads each service's config module
    # for its ports and the CLI for its gRPC address, until one table in a lib says both.
    "libs/stack/src/screwops_stack/supervisor.py",
    "libs/cli/src/screwops_cli/common.py",
}


def lib_sources() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(ROOT.glob("libs/*/src/**/*.py")):
        yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(), filename=str(path))


def imported_modules(tree: ast.Module) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def calls_import_module(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name == "import_module":
                return True
    return False


def test_there_are_services_and_libs_to_check() -> None:
    assert {"trainer", "console", "gateway"} <= set(SERVICES)
    assert any(name.startswith("libs/cli/") for name, _ in lib_sources())


def test_no_lib_imports_a_service() -> None:
    packages = {f"screwops_{service}" for service in SERVICES}
    found = [
        f"{name}:{line} imports {module}"
        for name, tree in lib_sources()
        for line, module in imported_modules(tree)
        if module.split(".")[0] in packages
    ]
    assert found == []


def test_only_the_listed_lib_modules_import_by_name() -> None:
    reflective = {name for name, tree in lib_sources() if calls_import_module(tree)}
    assert reflective == REFLECTIVE
