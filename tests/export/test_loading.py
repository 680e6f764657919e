"""Loading a user's module by file path or package, with a state_dict checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from export.api import load_user_module
from export.errors import ModuleLoadError
from tests.export.fixtures.tutorial import TutorialRNN

TUTORIAL = Path(__file__).parent / "fixtures" / "tutorial.py"


def _save(tmp_path: Path, state: object) -> Path:
    path = tmp_path / "model.pt"
    torch.save(state, path)
    return path


def test_class_from_a_file_is_built_with_kwargs_and_loaded_with_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    trained = TutorialRNN(hidden_size=5)
    checkpoint = _save(tmp_path, trained.state_dict())
    module = load_user_module(f"{TUTORIAL}:TutorialRNN", checkpoint, {"hidden_size": 5})
    assert type(module).__name__ == "TutorialRNN" and not module.training
    for key, value in trained.state_dict().items():
        assert torch.equal(module.state_dict()[key], value)


def test_factory_function_and_wrapped_checkpoint_are_accepted(tmp_path: Path) -> None:
    checkpoint = _save(
        tmp_path, {"state_dict": TutorialRNN(hidden_size=4).state_dict(), "epoch": 3}
    )
    module = load_user_module(f"{TUTORIAL}:make_tutorial_rnn", checkpoint, {"hidden_size": 4})
    assert module.rnn.hidden_size == 4


@pytest.mark.parametrize("spec", ["torch.nn:LSTM", "torch.nn.LSTM"])
def test_bare_torch_layer_is_loaded_by_package_name(spec: str, tmp_path: Path) -> None:
    checkpoint = _save(tmp_path, nn.LSTM(4, 8).state_dict())
    module = load_user_module(spec, checkpoint, {"input_size": 4, "hidden_size": 8})
    assert isinstance(module, nn.LSTM)


@pytest.mark.parametrize(
    ("spec", "kwargs", "message"),
    [
        ("missing.py:Model", {}, r"module file not found: missing.py"),
        (f"{TUTORIAL}:Nope", {}, r"has no 'Nope'; it defines: CharLSTM, GRUClassifier, "),
        (f"{TUTORIAL}", {}, r"should look like FILE.py:NAME"),
        ("no_such_package:Model", {}, r"cannot import no_such_package: ModuleNotFoundError"),
        (f"{TUTORIAL}:TutorialRNN", {"hidden": 3}, r"TypeError: .*unexpected keyword"),
    ],
)
def test_bad_module_specs_name_the_problem(
    spec: str, kwargs: dict[str, object], message: str, tmp_path: Path
) -> None:
    checkpoint = _save(tmp_path, TutorialRNN().state_dict())
    with pytest.raises(ModuleLoadError, match=message):
        load_user_module(spec, checkpoint, kwargs)


def test_state_dict_mismatch_lists_missing_unexpected_and_mis_shaped_keys(tmp_path: Path) -> None:
    state = TutorialRNN(hidden_size=7).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["fc.bias"]
    checkpoint = _save(tmp_path, state)
    with pytest.raises(ModuleLoadError) as caught:
        load_user_module(f"{TUTORIAL}:TutorialRNN", checkpoint, {})
    message = str(caught.value)
    assert "missing keys: fc.bias" in message
    assert "unexpected keys: extra.weight" in message
    assert "shape mismatch: fc.weight [3, 7] vs module [3, 6]" in message


def test_pickled_whole_module_is_refused_with_a_hint(tmp_path: Path) -> None:
    checkpoint = _save(tmp_path, TutorialRNN())
    with pytest.raises(ModuleLoadError, match=r"weights_only=True.*save model.state_dict\(\)"):
        load_user_module(f"{TUTORIAL}:TutorialRNN", checkpoint, {})


def test_missing_checkpoint_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModuleLoadError, match=r"checkpoint not found: .*absent.pt"):
        load_user_module(f"{TUTORIAL}:TutorialRNN", tmp_path / "absent.pt", {})
