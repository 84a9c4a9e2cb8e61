"""Libs sit below services: a lib that imports a service drags the service (and whatever it
imports, TensorFlow included) into every lib user, and hides a contract in a service's module.
What services share goes in a lib (``screwops_contracts`` for the records they exchange).

Every service has the same shape (docs/adding-a-service.md), so knowing one means knowing all,
and no function grows past a screen, so each can be read and tested as one piece. What deviates
today is listed here with its reason, exactly: a list entry that is no longer needed fails too."""

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
REFLECTIVE: set[str] = set()

MODULES = ("__main__", "config", "service", "store")
"""The modules of every service; one that consumes events has ``handlers`` too."""

# (service, module) pairs missing today, each with why the service may lack it.
MISSING_MODULES = {
    # A web app over the other services' APIs: its pages (routes/) stand where service.py
    # would, and it owns no collection or bucket (records.py only reads what the trainer and
    # validation publish).
    ("console", "service"),
    ("console", "store"),
}

INSTRUMENTS = frozenset(
    {
        "create_counter",
        "create_histogram",
        "create_up_down_counter",
        "create_gauge",
        "create_observable_counter",
        "create_observable_gauge",
        "create_observable_up_down_counter",
    }
)
"""The meter's calls that create an instrument: in a service, only its ``metrics`` module makes
them, so every metric name, unit and description is declared in one place per service."""

MAX_FUNCTION_LINES = 80

# Functions and methods longer than that today, each with which change will split it.
LONG_FUNCTIONS: set[str] = set()


def sources(pattern: str, root: Path = ROOT) -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(root.glob(pattern)):
        yield path.relative_to(root).as_posix(), ast.parse(path.read_text(), filename=str(path))


def lib_sources() -> Iterator[tuple[str, ast.Module]]:
    return sources("libs/*/src/**/*.py")


def written_sources() -> Iterator[tuple[str, ast.Module]]:
    """Lib and service sources, without the code generated from the protos."""
    for name, tree in [*lib_sources(), *sources("services/*/src/**/*.py")]:
        if not name.startswith("libs/protos/"):
            yield name, tree


def imported_modules(tree: ast.Module) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def called_names(tree: ast.Module) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name is not None:
                yield name


def calls_import_module(tree: ast.Module) -> bool:
    return "import_module" in called_names(tree)


def consumes_events(tree: ast.Module) -> bool:
    """Whether the module registers a consumer: ``@bus.consumer(...)``, or a broker's own
    ``subscriber(...)`` for a service that went around the bus."""
    return not {"consumer", "subscriber"}.isdisjoint(called_names(tree))


def missing_modules(package: Path) -> set[str]:
    """The house modules ``package`` lacks; a module is a ``.py`` file or a subpackage."""
    trees = [tree for _, tree in sources("**/*.py", package)]
    required = {*MODULES, "handlers"} if any(map(consumes_events, trees)) else set(MODULES)
    present = {path.stem for path in package.glob("*.py")}
    present |= {path.parent.name for path in package.glob("*/__init__.py")}
    return required - present


def is_metrics_module(name: str) -> bool:
    """Whether ``name`` is ``services/<service>/src/screwops_<service>/metrics.py``."""
    parts = Path(name).parts
    return len(parts) == 5 and parts[3] == f"screwops_{parts[1]}" and parts[4] == "metrics.py"


def functions(node: ast.AST, prefix: str = "") -> Iterator[tuple[str, int]]:
    """Every function and method under ``node``, nested ones too, by qualified name (``Class.
    method``, ``outer.inner``) with its length in lines, decorators excluded."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            name = prefix + child.name
            yield name, (child.end_lineno or child.lineno) - child.lineno + 1
            yield from functions(child, f"{name}.")
        elif isinstance(child, ast.ClassDef):
            yield from functions(child, f"{prefix}{child.name}.")
        else:
            yield from functions(child, prefix)


def test_there_are_services_and_libs_to_check() -> None:
    assert {"trainer", "console", "gateway"} <= set(SERVICES)
    assert any(name.startswith("libs/cli/") for name, _ in lib_sources())
    assert any(name.startswith("services/trainer/") for name, _ in written_sources())
    assert not any(name.startswith("libs/protos/") for name, _ in written_sources())


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


def test_every_service_has_the_house_modules() -> None:
    missing = {
        (service, module)
        for service in SERVICES
        for module in missing_modules(ROOT / "services" / service / "src" / f"screwops_{service}")
    }
    assert missing == MISSING_MODULES


def defines_rules(tree: ast.Module) -> bool:
    """Whether a class in ``tree`` has a ``rules`` method (a service's settings building its
    rules)."""
    return any(
        isinstance(node, ast.FunctionDef) and node.name == "rules"
        for cls in ast.walk(tree)
        if isinstance(cls, ast.ClassDef)
        for node in cls.body
    )


def calls_settings_rules(tree: ast.Module) -> bool:
    """Whether ``tree`` calls ``settings.rules()``."""
    return any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "rules"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "settings"
        for node in ast.walk(tree)
    )


def test_every_main_takes_the_rules_from_the_settings() -> None:
    """A service whose settings build rules has its ``__main__`` hand the parts
    ``settings.rules()`` (or pieces of it), so what the service's logic takes reaches it in one
    place (docs/adding-a-service.md, Settings)."""
    found = set()
    for service in SERVICES:
        package = ROOT / "services" / service / "src" / f"screwops_{service}"
        config = ast.parse((package / "config.py").read_text())
        main = ast.parse((package / "__main__.py").read_text())
        if defines_rules(config) and not calls_settings_rules(main):
            found.add(service)
    assert found == set()


def test_rules_are_found_where_a_settings_class_builds_them() -> None:
    assert defines_rules(ast.parse("class S:\n    def rules(self): ...\n"))
    assert not defines_rules(ast.parse("def rules(): ...\n"))
    assert calls_settings_rules(ast.parse("x = f(rules=settings.rules())\n"))
    assert not calls_settings_rules(ast.parse("x = f(gate=settings.gate())\n"))


def test_a_service_that_consumes_events_needs_handlers(tmp_path: Path) -> None:
    for module in MODULES:
        (tmp_path / f"{module}.py").write_text('"""A module."""\n')
    assert missing_modules(tmp_path) == set()
    (tmp_path / "wiring.py").write_text("@bus.consumer(DatasetLabeled)\nasync def on(e): ...\n")
    assert missing_modules(tmp_path) == {"handlers"}
    (tmp_path / "handlers").mkdir()
    (tmp_path / "handlers" / "__init__.py").write_text("")
    (tmp_path / "store.py").unlink()
    assert missing_modules(tmp_path) == {"store"}


def test_only_a_services_metrics_module_creates_instruments() -> None:
    found = {
        name
        for name, tree in sources("services/*/src/**/*.py")
        if not is_metrics_module(name) and not INSTRUMENTS.isdisjoint(called_names(tree))
    }
    assert found == set()


def test_only_the_top_metrics_module_counts_as_one() -> None:
    assert is_metrics_module("services/gateway/src/screwops_gateway/metrics.py")
    assert not is_metrics_module("services/console/src/screwops_console/routes/metrics.py")
    assert not is_metrics_module("services/gateway/src/screwops_gateway/service.py")


def test_no_function_is_longer_than_the_limit() -> None:
    found = {
        f"{name}::{function}"
        for name, tree in written_sources()
        for function, lines in functions(tree)
        if lines > MAX_FUNCTION_LINES
    }
    assert found == LONG_FUNCTIONS


def test_functions_are_measured_by_qualified_name() -> None:
    head = "class Outer:\n    @property\n    async def method(self):\n"
    body = "        x = 1\n" * (MAX_FUNCTION_LINES - 1) + "        def inner(): ...\n"
    assert dict(functions(ast.parse(head + body))) == {
        "Outer.method": MAX_FUNCTION_LINES + 1,
        "Outer.method.inner": 1,
    }
