"""What introspection accepts, what it records, and how it refuses everything else."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from export.errors import ExportError, UnsupportedModuleError
from export.introspect import Cell, Head, Nonlinearity, introspect
from tests.export.fixtures import unsupported
from tests.export.fixtures.tutorial import CharLSTM, GRUClassifier, TutorialRNN
from tests.export.helpers import random_model


def test_recurrent_model_spec_records_its_configuration() -> None:
    model = random_model(cell="rnn", num_layers=3, bidirectional=True, nonlinearity="relu")
    spec = introspect(model)
    assert spec.cell is Cell.RNN
    assert spec.nonlinearity is Nonlinearity.RELU
    assert (spec.num_layers, spec.hidden_size, spec.state_rows) == (3, 4, 6)
    assert (spec.input_size, spec.vocab_size, spec.output_size) == (3, None, 2)
    assert spec.rnn is model.rnn and spec.linear is model.fc and spec.embedding is None


def test_token_model_spec_records_vocab_and_embedding_dim() -> None:
    spec = introspect(random_model(cell="lstm", tokens=True))
    assert spec.takes_tokens
    assert (spec.input_size, spec.vocab_size, spec.embedding_dim) == (None, 7, 3)
    assert spec.nonlinearity is None


@pytest.mark.parametrize("cls", [nn.RNN, nn.LSTM, nn.GRU])
def test_bare_recurrent_layer_outputs_its_hidden_sequence(cls: type[nn.RNNBase]) -> None:
    spec = introspect(cls(3, 4, bidirectional=True))
    assert spec.linear is None
    assert spec.head is Head.PER_STEP
    assert spec.output_size == 8


@pytest.mark.parametrize(
    ("module", "head"),
    [
        (TutorialRNN(), Head.LAST_STEP),
        (GRUClassifier(), Head.LAST_STEP),
        (CharLSTM(), Head.PER_STEP),
    ],
)
def test_head_mode_is_detected_from_the_forward_output(module: nn.Module, head: Head) -> None:
    assert introspect(module).head is head


def test_explicit_head_wins_over_detection() -> None:
    assert introspect(TutorialRNN(), head="per_step").head is Head.PER_STEP


def test_introspection_leaves_the_module_training_mode_alone() -> None:
    module = TutorialRNN().train()
    introspect(module)
    assert module.training


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (
            unsupported.TwoRecurrent(),
            r"found 2 recurrent layers: rnn1 \(LSTM\), rnn2 \(GRU\); supported: exactly one, "
            r"use num_layers to stack",
        ),
        (
            unsupported.NoRecurrent(),
            r"found no recurrent layer in NoRecurrent; supported: exactly one nn.RNN",
        ),
        (
            unsupported.TwoLinear(),
            r"found 2 nn.Linear modules: fc1, fc2; supported: at most one, the head after",
        ),
        (unsupported.WithLayerNorm(), r"norm \(LayerNorm\); supported: one nn.RNN"),
        (unsupported.WithConv(), r"conv \(Conv1d\); supported: one nn.RNN"),
        (
            unsupported.EmbeddingIntoFloat(),
            r"nn.Embedding gives 2 features but rnn takes input_size=5: an embedding mixed into "
            r"float features is not supported",
        ),
        (
            unsupported.MismatchedHead(),
            r"nn.Linear fc has in_features=4 but rnn outputs 2\*4=8 features per step",
        ),
        (
            unsupported.ReducedWithoutHead(),
            r"forward returns outputs of width 1 but no nn.Linear head was found and rnn alone "
            r"gives 4",
        ),
        (
            unsupported.BrokenForward(),
            r"BrokenForward.forward failed on float32 features of shape \[2, 5\]: RuntimeError",
        ),
        (nn.LSTM(3, 4, proj_size=2), r"proj_size=2; supported: proj_size=0"),
        (nn.GRU(3, 4).double(), r"non-float32 parameters.*module.float\(\)"),
        (nn.Sequential(nn.Embedding(5, 3, max_norm=1.0), nn.RNN(3, 4)), r"max_norm"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, nn.Module) else "",
)
def test_unsupported_modules_are_refused_with_what_was_found(
    module: nn.Module, message: str
) -> None:
    with pytest.raises(UnsupportedModuleError, match=message):
        introspect(module)


def test_unsupported_module_error_is_an_export_error_and_hides_the_torch_traceback() -> None:
    with pytest.raises(ExportError) as caught:
        introspect(unsupported.BrokenForward())
    assert "\n" not in str(caught.value)


def test_unknown_head_is_refused() -> None:
    with pytest.raises(UnsupportedModuleError, match="unknown head 'middle'"):
        introspect(TutorialRNN(), head="middle")


def test_non_module_is_refused() -> None:
    with pytest.raises(UnsupportedModuleError, match=r"expected a torch nn.Module, got Tensor"):
        introspect(torch.zeros(1))  # type: ignore[arg-type]
