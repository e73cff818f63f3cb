"""The router's layers hold: request path and APIs over fleet state, never the other way,
and no import cycles anywhere in the project (imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("services", "shared", "plugins", "streamlit_app")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    """Project modules `path` imports, wherever the import statement sits."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found.update(name for name in names if name in known)
    return found


GRAPH = {name: _imports(path, _modules()) for name, path in _modules().items()}


def _layer(module: str) -> str:
    for layer in ("api", "proxy", "fleet"):
        if module.startswith(f"services.router.{layer}"):
            return layer
    return ""


def test_fleet_state_never_imports_the_request_path_or_the_apis() -> None:
    wrong = sorted(
        (module, target) for module, targets in GRAPH.items() if _layer(module) == "fleet"
        for target in targets if _layer(target) in {"api", "proxy"}
    )
    assert wrong == []


def test_only_the_app_imports_api_modules() -> None:
    wrong = sorted(
        (module, target) for module, targets in GRAPH.items()
        if _layer(module) != "api" and module != "services.router.app"
        for target in targets if _layer(target) == "api"
    )
    assert wrong == []


def test_the_node_boundary_and_the_recorder_stand_alone() -> None:
    """nodes.py knows nothing of fleet state; the recorder service nothing of the router."""
    assert not any(t.startswith("services.router.") for t in GRAPH["services.router.nodes"]
                   if t != "services.router.nodeclient")
    # the node client's own errors are translated in nodes.py, its one user
    assert [m for m, targets in GRAPH.items() if "services.router.nodeclient" in targets] == [
        "services.router.nodes"]
    recorder = {m for m in GRAPH if m.startswith("services.recorder")}
    assert not any(t.startswith("services.router") for m in recorder for t in GRAPH[m])
    assert not any(t.startswith("services.router") for t in GRAPH["services.node.discovery"])


def test_shared_and_plugins_import_nothing_of_the_services() -> None:
    """shared/ and plugins/ are below every service: the services import them, never the
    other way round."""
    wrong = sorted(
        (module, target) for module, targets in GRAPH.items()
        if module.startswith(("shared", "plugins"))
        for target in targets if target.startswith("services")
    )
    assert wrong == []


def test_fleet_state_never_imports_the_context() -> None:
    """The context is built from the fleet's parts; a fleet module takes the parts it uses
    (a Protocol of them at most), never the context itself."""
    wrong = sorted(
        (module, target) for module, targets in GRAPH.items() if _layer(module) == "fleet"
        for target in targets if target == "services.router.context"
    )
    assert wrong == []


def test_the_dashboard_and_the_fleet_share_the_contract_not_the_router() -> None:
    """The dashboard reads the router over HTTP: it imports the response structs from
    shared/, never the router; the fleet layer builds the same structs."""
    dashboard = {m for m in GRAPH if m.startswith("streamlit_app")}
    assert not any(t.startswith("services.") for m in dashboard for t in GRAPH[m])
    assert "shared.schemas" in GRAPH["streamlit_app.data"]
    assert "shared.schemas" in GRAPH["services.router.fleet.reads"]


def _cycle() -> list[str]:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str]:
        state[module] = 1
        stack.append(module)
        for target in sorted(GRAPH.get(module, ())):
            if target == module or target.startswith(module + "."):
                continue  # a package importing its own modules
            if state.get(target) == 1:
                return [*stack[stack.index(target):], target]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[module] = 2
        return []

    for module in sorted(GRAPH):
        if module not in state and (found := visit(module)):
            return found
    return []


def test_no_import_cycles() -> None:
    assert _cycle() == []


def test_the_graph_is_read() -> None:
    """A guard for the tests above: the walker sees the imports that are known to exist."""
    assert "services.router.fleet.core" in GRAPH["services.router.context"]
    assert "services.router.context" in GRAPH["services.router.proxy.exchange"]
