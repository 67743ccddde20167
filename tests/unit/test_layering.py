"""The packages' imports run one way (api -> agents only in the composition root; agents -> flux;
api -> flux), and no module is part of an import cycle (imports under TYPE_CHECKING count too)."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import flux

ROOT = Path(flux.__file__).parent.parent
PACKAGES = ("flux", "agents", "api")
COMPOSITION_ROOTS = {"api.server", "api.workers.process"}  # the reducer process, an HTTP process


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    """The dotted names ``node`` may import: modules, and ``module.name`` for names that may be submodules."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join([*anchor, base] if base else anchor)
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of Flux's packages it imports, wherever in the module the import statement is."""
    paths = {_module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for target in _imported(node, package):
                while target and target not in paths:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def _imports_of(graph: dict[str, set[str]], importer: str, imported: str) -> dict[str, set[str]]:
    """The modules of package ``importer`` that import modules of package ``imported``, with those."""
    found = {name: {t for t in targets if t.split(".")[0] == imported} for name, targets in graph.items()}
    return {name: targets for name, targets in found.items() if name.split(".")[0] == importer and targets}


def test_the_core_imports_neither_agents_nor_api() -> None:
    graph = import_graph()
    assert _imports_of(graph, "flux", "agents") == {}
    assert _imports_of(graph, "flux", "api") == {}


def test_agents_know_no_http() -> None:
    assert _imports_of(import_graph(), "agents", "api") == {}


def test_only_the_composition_roots_import_agents_from_api() -> None:
    assert set(_imports_of(import_graph(), "api", "agents")) == COMPOSITION_ROOTS


def test_no_module_is_part_of_an_import_cycle() -> None:
    graph = import_graph()
    assert "flux.config" in graph and "agents.table.store" in graph and "api.deps" in graph
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None


IO_MODULES = {"asyncio", "socket", "subprocess", "threading", "http", "urllib", "aiokafka", "faust", "mode"}
IO_MODULES |= {"rocksdict", "httpx", "fastapi", "starlette", "uvicorn", "flux.kafka", "flux.localkafka"}
PURE_EXCEPTIONS = {"aiokafka.partitioner"}  # Kafka's murmur2 partitioner: a function of the key's bytes


def test_the_model_does_no_io() -> None:
    """``flux/model/`` (the envelope, the reducer, the encodings, the ports) imports nothing that does I/O."""
    found = []
    for path in (ROOT / "flux" / "model").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for name in _imported(node, "flux.model"):
                    if name in PURE_EXCEPTIONS or any(name.startswith(f"{m}.") for m in PURE_EXCEPTIONS):
                        continue
                    if any(name == m or name.startswith(f"{m}.") for m in IO_MODULES):
                        found.append(f"{path.name}: {name}")
    assert not found, found
