"""`python -m export`: export, parity recheck, the train hand-over, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from export.cli import main
from service.core.card import ModelCard
from tests.export.fixtures.layers import PackedClassifier
from tests.export.fixtures.refused import FeedForward
from tests.export.fixtures.tutorial import TutorialRNN

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = "tests/export/fixtures/tutorial.py:TutorialRNN"


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "tutorial.pt"
    torch.save(TutorialRNN(hidden_size=5).state_dict(), path)
    return path


def _export_args(checkpoint: Path, repository: Path, *extra: str) -> list[str]:
    return [
        "export",
        "--module",
        TUTORIAL,
        "--checkpoint",
        str(checkpoint),
        "--init-kwargs",
        '{"hidden_size": 5}',
        "--name",
        "tutorial",
        "--repository",
        str(repository),
        *extra,
    ]


@pytest.mark.slow
def test_python_m_export_writes_a_version_then_refuses_to_overwrite_it(
    checkpoint: Path, tmp_path: Path
) -> None:
    repository = tmp_path / "models"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "export", *_export_args(checkpoint, repository, *extra)]
        return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)

    first = run("--version", "1", "--labels", "a,b,c")
    assert first.returncode == 0, first.stderr
    assert f"wrote {repository / 'tutorial' / '1'}" in first.stdout
    assert "parity: max abs error" in first.stdout
    card = ModelCard.model_validate_json((repository / "tutorial/1/model.json").read_text())
    assert card.head == "last_step" and card.labels == ["a", "b", "c"]

    second = run("--version", "1")
    assert second.returncode == 1
    assert second.stderr.startswith("error: ") and "already exists" in second.stderr
    assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr


def test_force_replaces_a_version(checkpoint: Path, tmp_path: Path) -> None:
    assert main(_export_args(checkpoint, tmp_path, "--version", "1")) == 0
    assert main(_export_args(checkpoint, tmp_path, "--version", "1")) == 1
    assert main(_export_args(checkpoint, tmp_path, "--version", "1", "--force")) == 0


def test_explicit_head_is_written_to_the_card(checkpoint: Path, tmp_path: Path) -> None:
    assert main(_export_args(checkpoint, tmp_path, "--head", "per_step")) == 0
    card = json.loads((tmp_path / "tutorial" / "1" / "model.json").read_text())
    assert card["head"] == "per_step"


def test_parity_rechecks_an_existing_entry(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_export_args(checkpoint, tmp_path)) == 0
    capsys.readouterr()
    argv = ["parity", str(tmp_path / "tutorial" / "1"), "--module", TUTORIAL]
    argv += ["--checkpoint", str(checkpoint), "--init-kwargs", '{"hidden_size": 5}']
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("parity: max abs error ")


def test_parity_refuses_a_checkpoint_of_another_shape(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_export_args(checkpoint, tmp_path)) == 0
    other = tmp_path / "other.pt"
    torch.save(TutorialRNN(hidden_size=4).state_dict(), other)
    argv = ["parity", str(tmp_path / "tutorial" / "1"), "--module", TUTORIAL]
    assert main([*argv, "--checkpoint", str(other), "--init-kwargs", '{"hidden_size": 4}']) == 1
    assert "layers[0].hidden_size 4 vs card 5" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("init_kwargs", "message"),
    [("{hidden", "error: --init-kwargs is not valid JSON"), ("[1]", "must be a JSON object")],
)
def test_bad_init_kwargs_give_a_one_line_error(
    init_kwargs: str,
    message: str,
    checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = _export_args(checkpoint, tmp_path)
    argv[argv.index("--init-kwargs") + 1] = init_kwargs
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_unsupported_module_gives_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.save(FeedForward().state_dict(), tmp_path / "ff.pt")
    argv = ["export", "--module", "tests/export/fixtures/refused.py:FeedForward"]
    argv += ["--checkpoint", str(tmp_path / "ff.pt"), "--name", "ff"]
    assert main([*argv, "--repository", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: found no recurrent layer or cell in FeedForward (")
    assert "tests/export/fixtures/refused.py:" in err and err.count("\n") == 1


def test_train_hands_its_arguments_to_export_demos(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def demo_main(argv: list[str]) -> int:
        calls.append(argv)
        return 3

    demos = SimpleNamespace(main=demo_main)
    monkeypatch.setitem(sys.modules, "export.demos", demos)
    assert main(["train", "digits", "--epochs", "2"]) == 3
    assert calls == [["digits", "--epochs", "2"]]


def test_train_without_demos_gives_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "export.demos", None)
    assert main(["train", "digits"]) == 1
    assert capsys.readouterr().err.startswith("error: the train subcommand needs export.demos: ")


def test_a_packed_module_exports_and_rechecks_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    checkpoint = tmp_path / "packed.pt"
    torch.save(PackedClassifier().state_dict(), checkpoint)
    module = ["--module", "tests/export/fixtures/layers.py:PackedClassifier"]
    module += ["--checkpoint", str(checkpoint)]
    argv = ["export", *module, "--name", "packed", "--repository", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == (
        "traced: head per_sequence, states h [1, batch, 6], c [1, batch, 6]; streamable; "
        "padding-safe"
    )
    assert main(["parity", str(tmp_path / "packed" / "1"), *module]) == 0
    assert capsys.readouterr().out.startswith("parity: max abs error ")
