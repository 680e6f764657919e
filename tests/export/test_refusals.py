"""Modules that cannot be exported get one line naming the construct and the user's file:line."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from torch import nn

from export.api import export_module
from export.errors import ParityError, UnsupportedModuleError
from tests.export.fixtures import refused, unsupported
from tests.export.fixtures.unsupported import LearnedInitialState

SOURCE = Path(refused.__file__).resolve()


def _line_of(cls: type[nn.Module], text: str) -> int:
    """The line number in the fixture file of the first source line of `cls` holding `text`."""
    lines, start = inspect.getsourcelines(cls)
    return start + next(i for i, line in enumerate(lines) if text in line)


def _refusal(module: nn.Module, tmp_path: Path) -> str:
    with pytest.raises(UnsupportedModuleError) as caught:
        export_module(module, name="refused", repository=tmp_path)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    assert not (tmp_path / "refused").exists()
    return message


@pytest.mark.parametrize(
    ("cls", "construct", "marker"),
    [
        (refused.BranchOnValues, "data-dependent Python control flow", "if out.sum() > 0"),
        (
            refused.RunningMax,
            "an op with no ONNX form: torch.ops.aten.cummax",
            "return torch.cummax",
        ),
        (
            refused.MaskArgument,
            "a second input it cannot interpret: forward's parameter 'mask'",
            "def forward",
        ),
        (refused.FeedForward, "found no recurrent layer or cell in FeedForward", "def forward"),
        (refused.StepDependentLoop, "is not one cell step repeated", "def forward"),
    ],
)
def test_refusal_names_the_construct_and_the_line(
    cls: type[nn.Module], construct: str, marker: str, tmp_path: Path
) -> None:
    message = _refusal(cls().eval(), tmp_path)
    assert construct in message
    assert f"{SOURCE.name}:{_line_of(cls, marker)}" in message


def test_a_lengths_argument_named_otherwise_is_refused_until_named(tmp_path: Path) -> None:
    module = refused.StepsArgument().eval()
    assert "--lengths-arg n_steps" in _refusal(module, tmp_path)
    result = export_module(module, name="steps", repository=tmp_path, lengths_arg="n_steps")
    assert result.card["export_method"] == "traced" and result.card["head"] == "per_sequence"


def test_a_trained_initial_state_is_named_as_the_cause_of_a_parity_failure(tmp_path: Path) -> None:
    with pytest.raises(ParityError) as caught:
        export_module(LearnedInitialState().eval(), name="own", repository=tmp_path)
    message = str(caught.value)
    line = _line_of(LearnedInitialState, "self.rnn(x, self.h0")
    assert "forward starts rnn from a non-zero state of its own at " in message
    assert f"{Path(unsupported.__file__).name}:{line}" in message
    assert "differs from torch by" in message
