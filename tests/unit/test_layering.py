"""The import rules of STYLE.md, read from the source: layers only import downwards, nothing
forms a cycle, the service never imports torch or export, only the edges import the web stack."""

from __future__ import annotations

import ast
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[2] / "service"
# top to bottom; a module may import its own layer and any layer below it, never above
LAYERS = ("app", "edges", "engine", "operations", "core")
SHARED = {"errors", "metrics", "settings", "logs"}  # plain leaf modules every layer may use
WEB_STACK = {"fastapi", "starlette", "uvicorn"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SERVICE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # `from service import errors` imports the module service.errors
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def service_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in SERVICE.rglob("*.py")}
    packages = {name for name, path in modules.items() if path.name == "__init__.py"}
    return {
        name: {i for i in imports_of(path) if i in modules and i != name and i not in packages}
        for name, path in modules.items()
    }


def layer_of(module: str) -> str | None:
    part = module.split(".")[1] if "." in module else ""
    if part in SHARED:
        return None
    return part if part in LAYERS else "app"


def test_service_never_imports_torch_or_export() -> None:
    for path in SERVICE.rglob("*.py"):
        roots = {name.split(".")[0] for name in imports_of(path)}
        assert not roots & {"torch", "export", "onnx"}, path


def test_only_the_edges_and_the_app_import_the_web_stack() -> None:
    for path in SERVICE.rglob("*.py"):
        layer = layer_of(module_name(path))
        if layer in ("edges", "app"):
            continue
        roots = {name.split(".")[0] for name in imports_of(path)}
        assert not roots & WEB_STACK, path


def test_layers_import_only_downwards() -> None:
    for module, deps in service_graph().items():
        layer = layer_of(module)
        if layer is None:
            assert all(layer_of(d) is None for d in deps), (module, deps)
            continue
        for dep in deps:
            dep_layer = layer_of(dep)
            if dep_layer is None:
                continue
            assert LAYERS.index(dep_layer) >= LAYERS.index(layer), f"{module} imports {dep}"


def test_the_import_graph_has_no_cycles() -> None:
    graph = service_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep] if dep in path else [module, dep]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if dep not in state:
                visit(dep, [*path, dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
