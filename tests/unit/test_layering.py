"""The import rules of STYLE.md: service never imports torch or export; only the HTTP layer
imports fastapi/starlette."""

from __future__ import annotations

import ast
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[2] / "service"
HTTP_LAYER = {SERVICE / "app.py"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_service_never_imports_torch_or_export() -> None:
    for path in SERVICE.rglob("*.py"):
        assert not imported_modules(path) & {"torch", "export", "onnx"}, path


def test_only_the_http_layer_imports_fastapi_or_starlette() -> None:
    for path in SERVICE.rglob("*.py"):
        if path in HTTP_LAYER or (SERVICE / "api") in path.parents:
            continue
        assert (
            not imported_modules(path) & {"fastapi", "starlette", "uvicorn"}
            or path.name == "cli.py"
        ), path
