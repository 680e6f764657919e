"""The exported graph reproduces torch: configuration grid, mixed lengths, state, dynamic axes."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from export.api import export_module
from export.errors import ParityError
from export.introspect import introspect
from export.onnx_export import build_onnx
from export.verify import open_session
from service.core.card import ModelCard
from tests.export.fixtures.tutorial import CharLSTM, GRUClassifier, TutorialRNN
from tests.export.fixtures.unsupported import LearnedInitialState
from tests.export.helpers import FEATURES, HIDDEN, VOCAB, random_model, run_graph


def _grid() -> list[dict[str, Any]]:
    configs = []
    for cell in ("rnn", "lstm", "gru"):
        nonlinearities = ("tanh", "relu") if cell == "rnn" else ("tanh",)
        for layers, bi, nonlin, bias, batch_first, tokens, head in itertools.product(
            (1, 3),
            (False, True),
            nonlinearities,
            (True, False),
            (True, False),
            (False, True),
            ("per_step", "last_step"),
        ):
            configs.append(
                {
                    "cell": cell,
                    "num_layers": layers,
                    "bidirectional": bi,
                    "nonlinearity": nonlin,
                    "bias": bias,
                    "batch_first": batch_first,
                    "tokens": tokens,
                    "head": head,
                }
            )
    return configs


def _config_id(config: dict[str, Any]) -> str:
    return "-".join(
        [
            config["cell"],
            f"L{config['num_layers']}",
            "bi" if config["bidirectional"] else "uni",
            config["nonlinearity"] if config["cell"] == "rnn" else "gates",
            "bias" if config["bias"] else "nobias",
            "bf" if config["batch_first"] else "sf",
            "tokens" if config["tokens"] else "floats",
            config["head"],
        ]
    )


GRID = _grid()


@pytest.mark.parametrize("config", GRID, ids=[_config_id(c) for c in GRID])
def test_every_configuration_exports_with_grid_parity_and_a_valid_card(
    config: dict[str, Any], tmp_path: Path
) -> None:
    result = export_module(random_model(**config), name="grid", repository=tmp_path)
    assert result.parity.max_abs_error < 1e-5
    assert result.parity.batch_sizes == (1, 3, 17)
    assert result.parity.seq_lens == (1, 7, 64, 300)
    assert result.parity.mixed_lengths and result.parity.initial_state
    card = ModelCard.model_validate_json((result.path / "model.json").read_text())
    assert card.head == config["head"]
    assert card.takes_tokens == config["tokens"]


def test_mixed_lengths_in_one_batch_equal_each_sequence_run_alone() -> None:
    model = random_model(cell="gru", num_layers=2, bidirectional=True)
    session = open_session(build_onnx(introspect(model)).SerializeToString())
    lengths = np.array([5, 1, 9, 3], dtype=np.int32)
    x = np.random.default_rng(3).standard_normal((4, 9, FEATURES)).astype(np.float32)
    h0 = np.zeros((4, 4, HIDDEN), dtype=np.float32)
    out = run_graph(session, {"x": x, "h0": h0, "seq_lens": lengths})
    for i, length in enumerate(lengths):
        with torch.no_grad():
            y, h_n = model(torch.from_numpy(x[i : i + 1, :length]))
        np.testing.assert_allclose(out["y"][i, :length], y[0].numpy(), atol=1e-5)
        np.testing.assert_allclose(out["hn"][:, i], h_n[:, 0].numpy(), atol=1e-5)


def test_padded_steps_are_zero_when_there_is_no_head() -> None:
    torch.manual_seed(0)
    rnn = nn.RNN(FEATURES, HIDDEN, batch_first=True, bidirectional=True).eval()
    session = open_session(build_onnx(introspect(rnn)).SerializeToString())
    x = np.ones((2, 6, FEATURES), dtype=np.float32)
    h0 = np.zeros((2, 2, HIDDEN), dtype=np.float32)
    out = run_graph(session, {"x": x, "h0": h0, "seq_lens": np.array([6, 2], dtype=np.int32)})
    assert np.all(out["y"][1, 2:] == 0)
    assert np.any(out["y"][1, :2] != 0)


def test_nonzero_h0_and_c0_continue_from_the_given_state() -> None:
    model = random_model(cell="lstm", num_layers=2, bidirectional=True, tokens=True)
    session = open_session(build_onnx(introspect(model)).SerializeToString())
    rng = np.random.default_rng(4)
    tokens = rng.integers(0, VOCAB, (3, 8), dtype=np.int64)
    h0, c0 = (rng.normal(0, 1, (4, 3, HIDDEN)).astype(np.float32) for _ in range(2))
    lengths = np.full(3, 8, dtype=np.int32)
    out = run_graph(session, {"tokens": tokens, "h0": h0, "c0": c0, "seq_lens": lengths})
    with torch.no_grad():
        state = (torch.from_numpy(h0), torch.from_numpy(c0))
        y, (h_n, c_n) = model(torch.from_numpy(tokens), state)
    np.testing.assert_allclose(out["y"], y.numpy(), atol=1e-5)
    np.testing.assert_allclose(out["hn"], h_n.numpy(), atol=1e-5)
    np.testing.assert_allclose(out["cn"], c_n.numpy(), atol=1e-5)


def test_graph_declares_symbolic_axes_and_runs_at_unseen_sizes() -> None:
    model = random_model(cell="rnn", num_layers=3)
    session = open_session(build_onnx(introspect(model)).SerializeToString())
    shapes = {arg.name: arg.shape for arg in [*session.get_inputs(), *session.get_outputs()]}
    assert shapes == {
        "x": ["batch", "seq", FEATURES],
        "h0": [3, "batch", HIDDEN],
        "seq_lens": ["batch"],
        "y": ["batch", "seq", 2],
        "hn": [3, "batch", HIDDEN],
    }
    x = np.random.default_rng(5).standard_normal((11, 41, FEATURES)).astype(np.float32)
    h0 = np.zeros((3, 11, HIDDEN), dtype=np.float32)
    out = run_graph(session, {"x": x, "h0": h0, "seq_lens": np.full(11, 41, dtype=np.int32)})
    with torch.no_grad():
        y, h_n = model(torch.from_numpy(x))
    np.testing.assert_allclose(out["y"], y.numpy(), atol=1e-5)
    np.testing.assert_allclose(out["hn"], h_n.numpy(), atol=1e-5)


def test_parity_failure_raises_with_the_figure_and_writes_nothing(tmp_path: Path) -> None:
    torch.manual_seed(0)
    with pytest.raises(ParityError, match=r"differs from torch by \d\.\d+.*tolerance 0\.0001"):
        export_module(LearnedInitialState(), name="broken", repository=tmp_path)
    assert not (tmp_path / "broken").exists()


@pytest.mark.parametrize(
    ("module", "head"),
    [(TutorialRNN(), "last_step"), (GRUClassifier(), "last_step"), (CharLSTM(), "per_step")],
    ids=["seq-major-rnn-last-step", "gru-reading-h_n", "char-lstm-with-state"],
)
def test_tutorial_style_modules_export_with_parity(
    module: nn.Module, head: str, tmp_path: Path
) -> None:
    result = export_module(module, name="tutorial", repository=tmp_path)
    assert result.card["head"] == head
    assert result.parity.max_abs_error < 1e-5
    # They keep the template route: the graph written from the weights, byte for byte.
    template = build_onnx(introspect(module)).SerializeToString()
    assert result.card["export_method"] == "template"
    assert (result.path / "model.onnx").read_bytes() == template
    assert result.card["streamable"] and result.card["padding_safe"]


def test_bare_lstm_exports_its_hidden_sequence_as_y(tmp_path: Path) -> None:
    torch.manual_seed(0)
    lstm = nn.LSTM(FEATURES, HIDDEN, num_layers=2, bidirectional=True)
    result = export_module(lstm, name="bare", repository=tmp_path)
    assert result.card["output_size"] == 2 * HIDDEN
    assert result.card["head"] == "per_step" and not result.card["streamable"]
    assert result.card["layers"][0]["name"] == "lstm"
    assert "bidirectional" in result.card["not_streamable_reason"]
    assert result.parity.max_abs_error < 1e-5
