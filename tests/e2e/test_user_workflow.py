"""The workflow a new user follows, through the `rnnserve` console command: export a tutorial
module, verify it (parity included), serve it and predict."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from tests.export.fixtures.tutorial import TutorialRNN
from tests.support.servers import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RNNSERVE = shutil.which("rnnserve", path=str(ROOT / ".venv" / "bin")) or "rnnserve"


def rnnserve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RNNSERVE, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_export_verify_serve_a_tutorial_module(tmp_path: Path, server_factory: Any) -> None:
    torch.manual_seed(3)
    module = TutorialRNN(hidden_size=6).eval()
    checkpoint = tmp_path / "tutorial.pt"
    torch.save(module.state_dict(), checkpoint)
    repository = tmp_path / "models"
    source = [
        "--module",
        "tests/export/fixtures/tutorial.py:TutorialRNN",
        "--checkpoint",
        str(checkpoint),
    ]
    kwargs = ["--init-kwargs", '{"hidden_size": 6}']

    exported = rnnserve(
        "export", *source, *kwargs, "--name", "tutorial", "--repository", str(repository)
    )
    assert exported.returncode == 0, exported.stderr
    card = json.loads((repository / "tutorial" / "1" / "model.json").read_text())
    assert card["parity"]["max_abs_error"] <= 1e-4

    verified = rnnserve("verify", str(repository / "tutorial" / "1"), *source, *kwargs)
    assert verified.returncode == 0, verified.stderr
    assert '"ok": true' in verified.stdout and "parity" in verified.stdout

    server = server_factory(repository)
    features = card["input_size"]
    x = torch.randn(1, 5, features)
    answer = httpx.post(
        f"{server.base_url}/v1/models/tutorial/predict",
        json={"inputs": x[0].tolist(), "output": "last"},
    )
    assert answer.status_code == 400, "inputs is a list of sequences, not one sequence"
    answer = httpx.post(
        f"{server.base_url}/v1/models/tutorial/predict", json={"inputs": x.tolist()}
    )
    assert answer.status_code == 200, answer.text
    with torch.no_grad():
        expected = module(
            x.transpose(0, 1)
        )  # the tutorial module is seq-major; we serve batch-first
    got = torch.tensor(answer.json()["outputs"], dtype=torch.float32)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5)
