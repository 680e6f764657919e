"""What a newcomer runs from the README and examples/ works as written (issue 15's defects)."""

from __future__ import annotations

import ast
import fnmatch
import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
import torch

from tests.support.servers import ROOT

README = (ROOT / "README.md").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_readme_model_snippet_runs_as_written() -> None:
    block = re.search(r"```python\n# scratch/my_model\.py\n(.*?)```", README, re.S)
    assert block is not None, "README has no scratch/my_model.py snippet"
    namespace: dict[str, object] = {"__name__": "my_model"}
    exec(compile(block.group(1), "scratch/my_model.py", "exec"), namespace)
    model = namespace["SensorRNN"]()  # type: ignore[operator]
    logits, h_n = model(torch.zeros(3, 5, 6))
    assert tuple(logits.shape) == (3, 4) and tuple(h_n.shape) == (2, 3, 32)
    # every command the README runs on the user's files uses the scratch folder
    for command in re.findall(r"rnnserve export --module (\S+)", README):
        assert command.startswith("scratch/"), command


def test_user_files_in_scratch_stay_out_of_lint_and_git() -> None:
    (ROOT / "scratch").mkdir(exist_ok=True)
    path = ROOT / "scratch" / f"lint_probe_{os.getpid()}.py"
    path.write_text("import os\nx=1\n")  # an unused import: ruff's F401
    try:
        ruff = [sys.executable, "-m", "ruff", "check", "--quiet"]
        linted = subprocess.run([*ruff, str(path)], cwd=ROOT, capture_output=True, text=True)
        assert linted.returncode == 1, "the probe must be a file ruff rejects"
        excluded = subprocess.run(
            [*ruff, "--force-exclude", str(path)], cwd=ROOT, capture_output=True, text=True
        )
        assert excluded.returncode == 0, excluded.stdout
        ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT)
        assert ignored.returncode == 0, "scratch/ must be git-ignored"
    finally:
        path.unlink()


def test_examples_import_only_what_the_examples_extra_and_the_client_install() -> None:
    declared = {
        re.split(r"[\[<>=]", d)[0].lower()
        for d in PYPROJECT["project"]["optional-dependencies"]["examples"]
    }
    provided = {
        "httpx": "httpx",
        "websockets": "websockets",
        "numpy": "numpy",
        "tritonclient": "tritonclient",
    }
    for script in sorted((ROOT / "examples").glob("*.py")):
        tree = ast.parse(script.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if (
                    top in sys.stdlib_module_names
                    or top == "__future__"
                    or top == "rnnserve_client"
                    or (ROOT / "examples" / f"{top}.py").exists()  # a sibling example
                ):
                    continue
                assert provided.get(top) in declared, f"{script.name} imports {top}"


def test_stream_forecast_reads_a_csv_with_a_header_and_labels_rows_from_it(
    tmp_path: Path,
) -> None:
    example = load_example("stream_forecast")
    with_header = tmp_path / "co2.csv"
    with_header.write_text("month,ppm\n1992-01,355.9\n1992-02,356.68\n\n")
    series = example.read_series(str(with_header), "ppm", "month")
    assert (series.values, series.labels) == ([355.9, 356.68], ["1992-01", "1992-02"])
    by_index = example.read_series(str(with_header), "1", None)
    assert (by_index.values, by_index.labels) == ([355.9, 356.68], ["#1", "#2"])
    bare = tmp_path / "bare.csv"
    bare.write_text("1.5\n2.5\n")
    assert example.read_series(str(bare), None, None).values == [1.5, 2.5]
    broken = tmp_path / "broken.csv"
    broken.write_text("ppm\n1.0\nn/a\n")
    with pytest.raises(SystemExit, match=r"broken\.csv:3"):
        example.read_series(str(broken), None, None)


def test_the_v2_guide_runs_on_models_that_ship_in_the_repository() -> None:
    guide = (ROOT / "docs" / "v2.md").read_text()
    shipped = {path.name for path in (ROOT / "models").iterdir() if path.is_dir()}
    named = set(re.findall(r"/v2/models/([A-Za-z0-9_.-]+)/", guide))
    named |= set(re.findall(r'MODEL = "([^"]+)"', guide))
    assert named, "the guide names no model"
    assert named <= shipped, f"{named - shipped} are not in models/"


def test_the_wheel_ships_every_file_of_the_page() -> None:
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["service.ui"]
    static = ROOT / "service" / "ui"
    files = [p.relative_to(static).as_posix() for p in static.rglob("*") if p.is_file()]
    files = [f for f in files if not f.endswith((".py", ".pyc")) and "__pycache__" not in f]
    assert "static/index.html" in files
    missing = [f for f in files if not any(fnmatch.fnmatch(f, p) for p in patterns)]
    assert missing == []
