"""Every kind of everyday recurrent module through the real exporter and onnxruntime.

For each: the card validates and says what the module is (route, head, states, streamable,
padding-safe); the graph over mixed lengths, batched the way the server batches that card,
equals the module's own forward on each sequence alone; streamable graphs fed in chunks while
carrying every state equal the module on each prefix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from export.api import ExportResult, export_module
from service.core.card import ModelCard
from tests.export.fixtures import cells, layers

LENGTHS = (9, 4, 1, 6)


@dataclass(frozen=True)
class Kind:
    """A module family and what its card must say."""

    build: Callable[[], nn.Module]
    method: str
    head: str
    states: list[tuple[str, int, int]]
    streamable: bool = True
    padding_safe: bool = True
    seq_first: bool = False
    lengths: bool = False
    reason: str | None = None
    layers: list[str] = field(default_factory=list)


KINDS: dict[str, Kind] = {
    "packed_classifier": Kind(
        layers.PackedClassifier, "traced", "per_sequence", [("h", 1, 6), ("c", 1, 6)], lengths=True
    ),
    "packed_tagger": Kind(layers.PackedTagger, "traced", "per_step", [("h", 1, 5)], lengths=True),
    "bidirectional_cat_h_n": Kind(
        layers.BiLSTMClassifier,
        "traced",
        "per_sequence",
        [("h", 4, 5), ("c", 4, 5)],
        streamable=False,
        reason="its recurrent layer lstm is bidirectional",
    ),
    "residual_layernorm_mlp": Kind(layers.ResidualRNN, "traced", "per_step", [("h", 1, 6)]),
    "mean_pooling": Kind(
        layers.MeanPooled,
        "traced",
        "per_sequence",
        [("h", 1, 5)],
        streamable=False,
        padding_safe=False,
        reason="fed in chunks",
    ),
    "lstm_into_gru": Kind(
        layers.LSTMIntoGRU,
        "traced",
        "per_step",
        [("encoder.h", 1, 6), ("encoder.c", 1, 6), ("decoder.h", 1, 4)],
        layers=["encoder", "decoder"],
    ),
    "seq_first": Kind(layers.SeqFirstTagger, "traced", "per_step", [("h", 2, 5)], seq_first=True),
    "h0_argument": Kind(layers.WithH0, "traced", "per_step", [("h", 1, 5)]),
    "last_step_of_padded": Kind(
        layers.LastStepOfPadded,
        "traced",
        "per_sequence",
        [("h", 1, 5), ("c", 1, 5)],
        padding_safe=False,
    ),
    "rnn_cell_loop": Kind(cells.RNNCellTagger, "scan", "per_step", [("h", 1, 5)]),
    "gru_cell_loop_seq_first": Kind(
        cells.GRUCellClassifier, "scan", "last_step", [("h", 1, 6)], seq_first=True
    ),
    "lstm_cell_loop": Kind(cells.LSTMCellTagger, "scan", "per_step", [("h", 1, 4), ("c", 1, 4)]),
    "hand_written_tanh_cell": Kind(cells.HandWrittenRNN, "scan", "last_step", [("cell.h", 1, 5)]),
    "layernorm_lstm_cell_tuple": Kind(
        cells.LayerNormLSTM, "scan", "per_step", [("cell.s0", 1, 5), ("cell.s1", 1, 5)]
    ),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[nn.Module, ExportResult]]:
    """Each kind exported once for all the checks (exports dominate this file's time)."""
    repository = tmp_path_factory.mktemp("kinds")
    done = {}
    for name, kind in KINDS.items():
        torch.manual_seed(0)
        module = kind.build().eval()
        done[name] = (
            module,
            export_module(module, name=name.replace("_", "-"), repository=repository),
        )
    return done


def _torch_alone(module: nn.Module, kind: Kind, sequence: np.ndarray) -> np.ndarray:
    """The module's own forward on one sequence, batch-first answer."""
    x = torch.from_numpy(sequence[None])
    if kind.seq_first:
        x = x.transpose(0, 1)
    args: list[Any] = [x]
    if kind.lengths:
        args.append(torch.tensor([len(sequence)]))
    with torch.no_grad():
        out = module(*args)
    y = out[0] if isinstance(out, tuple) else out
    if y.ndim == 3 and kind.seq_first:
        y = y.transpose(0, 1)
    result: np.ndarray = y[0].numpy()
    return result


def _inputs(card: ModelCard, rng: np.random.Generator, batch: int, seq: int) -> np.ndarray:
    if card.vocab_size is not None:
        return rng.integers(0, card.vocab_size, (batch, seq), dtype=np.int64)
    assert card.input_size is not None
    return rng.standard_normal((batch, seq, card.input_size)).astype(np.float32)


def _run(
    session: ort.InferenceSession,
    card: ModelCard,
    inputs: np.ndarray,
    lengths: np.ndarray,
    states: list[np.ndarray] | None = None,
) -> list[np.ndarray]:
    batch = inputs.shape[0]
    feeds = {card.input_name: inputs, "seq_lens": lengths.astype(np.int32)}
    for i, state in enumerate(card.states):
        given = states[i] if states is not None else None
        feeds[state.input] = (
            given if given is not None else np.zeros((state.rows, batch, state.width), np.float32)
        )
    names = ["y", *(s.output for s in card.states)]
    outputs: list[np.ndarray] = session.run(names, feeds)
    return outputs


def _answer(card: ModelCard, y: np.ndarray, length: int) -> np.ndarray:
    """What the server answers for one sequence: every step, the last valid step, or the row."""
    if card.head.value == "per_step":
        return y[:length]
    if card.head.value == "last_step":
        return y[length - 1]
    return y


@pytest.mark.parametrize("name", list(KINDS))
def test_card_says_what_the_module_is(
    name: str, exported: dict[str, tuple[nn.Module, ExportResult]]
) -> None:
    kind = KINDS[name]
    card = ModelCard.model_validate(exported[name][1].card)
    assert card.export_method.value == kind.method
    assert card.head.value == kind.head
    assert [(s.name, s.rows, s.width) for s in card.states] == kind.states
    assert (card.streamable, card.padding_safe) == (kind.streamable, kind.padding_safe)
    if kind.reason is not None:
        assert card.not_streamable_reason is not None
        assert kind.reason in card.not_streamable_reason
    if kind.layers:
        assert [layer.name for layer in card.layers] == kind.layers
    assert card.parity is not None and card.parity.max_abs_error <= 1e-4


@pytest.mark.parametrize("name", list(KINDS))
def test_mixed_lengths_batched_as_served_equal_torch_on_each_sequence_alone(
    name: str, exported: dict[str, tuple[nn.Module, ExportResult]]
) -> None:
    kind = KINDS[name]
    module, result = exported[name]
    card = ModelCard.model_validate(result.card)
    session = ort.InferenceSession(str(Path(result.path) / "model.onnx"))
    rng = np.random.default_rng(11)
    inputs = _inputs(card, rng, len(LENGTHS), max(LENGTHS))
    lengths = np.asarray(LENGTHS)
    if card.padding_safe:
        y = _run(session, card, inputs, lengths)[0]
        answers = [_answer(card, y[i], n) for i, n in enumerate(LENGTHS)]
    else:
        # The server batches a model that is not padding-safe only with equal lengths.
        answers = []
        for i, n in enumerate(LENGTHS):
            y = _run(session, card, inputs[i : i + 1, :n], np.array([n]))[0]
            answers.append(_answer(card, y[0], n))
    for i, n in enumerate(LENGTHS):
        expected = _torch_alone(module, kind, inputs[i, :n])
        np.testing.assert_allclose(answers[i], expected, atol=1e-5)


@pytest.mark.parametrize("name", [n for n, k in KINDS.items() if k.streamable])
def test_chunks_carrying_every_state_equal_torch_on_each_prefix(
    name: str, exported: dict[str, tuple[nn.Module, ExportResult]]
) -> None:
    kind = KINDS[name]
    module, result = exported[name]
    card = ModelCard.model_validate(result.card)
    session = ort.InferenceSession(str(Path(result.path) / "model.onnx"))
    sequence = _inputs(card, np.random.default_rng(5), 1, 10)
    states: list[np.ndarray] | None = None
    done = 0
    for size in (1, 3, 2, 4):
        chunk = sequence[:, done : done + size]
        y, *states = _run(session, card, chunk, np.array([size]), states)
        done += size
        expected = _torch_alone(module, kind, sequence[0, :done])
        if card.head.value == "per_step":
            np.testing.assert_allclose(y[0], expected[-size:], atol=1e-5)
        else:
            np.testing.assert_allclose(_answer(card, y[0], size), expected, atol=1e-5)


def test_a_non_streamable_card_says_why_in_one_sentence(
    exported: dict[str, tuple[nn.Module, ExportResult]],
) -> None:
    for name, kind in KINDS.items():
        reason = exported[name][1].card["not_streamable_reason"]
        assert (reason is None) == kind.streamable
        if reason is not None:
            assert "\n" not in reason and reason.count(": ") == 1
