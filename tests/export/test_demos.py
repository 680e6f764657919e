"""The demo datasets, the committed demo models in models/, and the `train` pipeline end to end."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from export.datasets import UNKNOWN_CHAR, load_co2, load_digits, load_text
from export.model_io import GraphIO, Head, LayerInfo, StateTensor
from export.probe import InputKind
from export.properties import measure
from service.core.card import ModelCard

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
DEMOS = ("digits-rnn", "co2-forecaster", "char-lm")


def committed_card(name: str, repository: Path = MODELS) -> ModelCard:
    """The card of version 1 of a demo, validated by the service's schema."""
    return ModelCard.model_validate_json((repository / name / "1" / "model.json").read_text())


def committed_session(name: str) -> ort.InferenceSession:
    """An onnxruntime CPU session on version 1 of a committed demo."""
    path = str(MODELS / name / "1" / "model.onnx")
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def run_committed(
    name: str, inputs: np.ndarray, lengths: np.ndarray | None = None
) -> list[np.ndarray]:
    """Run a committed demo graph from zero state; returns y and the end states."""
    card, session = committed_card(name), committed_session(name)
    batch, seq = inputs.shape[:2]
    feeds = {
        card.input_name: inputs,
        "seq_lens": np.full(batch, seq, np.int32) if lengths is None else lengths,
    }
    for state in card.states:
        feeds[state.input] = np.zeros((state.rows, batch, state.width), np.float32)
    outputs: list[np.ndarray] = session.run(None, feeds)
    return outputs


def test_digits_are_8_step_sequences_of_raw_pixel_rows_split_the_same_way_each_time() -> None:
    data, again = load_digits(), load_digits()
    shapes = [split.x.shape for split in (data.train, data.validation, data.test)]
    assert shapes == [(1167, 8, 8), (270, 8, 8), (360, 8, 8)]
    assert data.train.x.dtype == np.float32 and data.train.y.dtype == np.int64
    assert data.train.x.min() == 0 and data.train.x.max() == 16
    assert set(np.unique(data.test.y)) == set(range(10))
    np.testing.assert_array_equal(data.test.x, again.test.x)
    np.testing.assert_array_equal(data.train.y, again.train.y)


def test_co2_is_526_gap_free_months_split_chronologically() -> None:
    series = load_co2()
    assert series.values.shape == (526,) and np.isfinite(series.values).all()
    assert (np.diff(series.months) == np.timedelta64(1, "M")).all()
    assert (len(series.train), len(series.validation), len(series.test)) == (406, 60, 60)
    assert str(series.months[series.validation_end]) == "1997-01"
    assert str(series.months[-1]) == "2001-12"


def test_text_corpus_has_a_stable_vocabulary_and_disjoint_seeded_splits() -> None:
    corpus, again = load_text(), load_text()
    assert corpus.vocabulary == again.vocabulary
    assert corpus.vocabulary[0] == UNKNOWN_CHAR
    assert list(corpus.vocabulary[1:]) == sorted(corpus.vocabulary[1:])
    sizes = (len(corpus.train), len(corpus.validation), len(corpus.test))
    assert sum(sizes) > 400_000 and sizes[1] == sizes[2] and sizes[1] > 20_000
    np.testing.assert_array_equal(corpus.test, again.test)
    assert corpus.decode(corpus.encode("def f(x):\n")) == "def f(x):\n"
    assert corpus.encode("\u2603").tolist() == [0]


@pytest.mark.parametrize("name", DEMOS)
def test_committed_card_validates_and_matches_its_graph(name: str) -> None:
    card = committed_card(name)
    model_bytes = (MODELS / name / "1" / "model.onnx").read_bytes()
    assert card.name == name and card.version == 1
    assert hashlib.sha256(model_bytes).hexdigest() == card.onnx_sha256
    assert card.parity is not None and card.parity.max_abs_error < 1e-4
    assert card.streamable and card.description
    assert len(model_bytes) < 2_000_000


@pytest.mark.parametrize("name", DEMOS)
def test_committed_card_is_format_2_with_its_properties_measured(name: str) -> None:
    raw = json.loads((MODELS / name / "1" / "model.json").read_text())
    assert raw["format"] == 2 and "cell" not in raw
    card = committed_card(name)
    assert card.export_method == "template" and card.padding_safe
    assert [s.input for s in card.states] == (["h0", "c0"] if name == "char-lm" else ["h0"])
    session = committed_session(name)
    graph_inputs = {i.name for i in session.get_inputs()}
    assert graph_inputs == {card.input_name, "seq_lens", *(s.input for s in card.states)}
    io = GraphIO(
        input=InputKind(tokens=card.takes_tokens, size=card.vocab_size or card.input_size or 0),
        states=tuple(StateTensor(s.name, s.rows, s.width) for s in card.states),
        head=Head(card.head.value),
        output_size=card.output_size,
        layers=tuple(LayerInfo(**layer.model_dump(mode="json")) for layer in card.layers),
        method=card.export_method.value,
    )
    measured = measure(session, io)
    assert (measured.streamable, measured.padding_safe) == (card.streamable, card.padding_safe)


def test_digits_card_meets_the_accuracy_bar_and_the_graph_reproduces_it_on_raw_pixels() -> None:
    card = committed_card("digits-rnn")
    assert card.labels == [str(digit) for digit in range(10)]
    assert card.metrics["test_accuracy"] >= 0.95
    test = load_digits().test
    y = run_committed("digits-rnn", test.x)[0]
    graph_accuracy = float((y[:, -1].argmax(-1) == test.y).mean())
    # One near-tie may flip between torch and onnxruntime; more would mean a bad graph.
    assert graph_accuracy == pytest.approx(card.metrics["test_accuracy"], abs=1.5 / len(test.y))


def test_forecaster_beats_the_naive_forecast_in_raw_ppm() -> None:
    card = committed_card("co2-forecaster")
    assert card.metrics["test_rmse"] < card.metrics["naive_last_value_rmse"]
    series = load_co2()
    start = series.validation_end
    y = run_committed("co2-forecaster", series.values[:-1].reshape(1, -1, 1))[0]
    errors = y[0, start - 1 :, 0] - series.values[start:]
    assert float(np.sqrt(np.mean(errors**2))) == pytest.approx(card.metrics["test_rmse"], rel=1e-3)


def test_forecaster_still_beats_naive_at_present_day_co2_levels() -> None:
    # 1992-2001 moved up 50 ppm: the shape of the record at levels of the 2020s.
    series = load_co2()
    values = series.values[series.train_end :] + 50.0
    y = run_committed("co2-forecaster", values[:-1].reshape(1, -1, 1))[0]
    model_rmse = float(np.sqrt(np.mean((y[0, :, 0] - values[1:]) ** 2)))
    naive = float(np.sqrt(np.mean(np.diff(values) ** 2)))
    assert model_rmse < 0.5 * naive


def test_char_lm_beats_the_unigram_baseline_and_its_labels_decode_tokens() -> None:
    card = committed_card("char-lm")
    assert card.metrics["test_perplexity"] < card.metrics["unigram_perplexity"]
    assert card.labels is not None and card.labels[0] == UNKNOWN_CHAR
    assert all(len(label) == 1 for label in card.labels)
    assert len(set(card.labels)) == card.vocab_size == card.output_size
    ids = [card.labels.index(char) for char in "class "]
    y = run_committed("char-lm", np.array([ids], np.int64))[0]
    # After "class " in Python docs the next character is a letter far more often than not.
    assert card.labels[int(y[0, -1].argmax())].isalpha()


@pytest.mark.parametrize("name", DEMOS)
def test_committed_graph_runs_at_odd_batch_and_seq_lengths(name: str) -> None:
    card = committed_card(name)
    rng = np.random.default_rng(0)
    batch, seq = 3, 11
    if card.takes_tokens:
        inputs = rng.integers(0, card.vocab_size or 1, (batch, seq), dtype=np.int64)
    else:
        # Plausible raw values: the baked-in normalisation's mean, give or take its std.
        assert card.normalization is not None
        mean, std = np.array(card.normalization.input_mean), np.array(card.normalization.input_std)
        noise = rng.standard_normal((batch, seq, len(mean)))
        inputs = (mean + std * noise).astype(np.float32)
    y, *states = run_committed(name, inputs, np.array([11, 1, 6], np.int32))
    assert y.shape == (batch, seq, card.output_size) and np.isfinite(y).all()
    assert [s.shape for s in states] == [(spec.rows, batch, spec.width) for spec in card.states]


@pytest.mark.slow
def test_train_all_quick_runs_through_the_cli_into_a_fresh_repository(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "export", "train", "all", "--quick"]
    subprocess.run([*command, "--repository", str(tmp_path)], cwd=ROOT, check=True, timeout=120)
    for name in DEMOS:
        card = committed_card(name, repository=tmp_path)
        assert (tmp_path / name / "1" / "model.onnx").is_file()
        assert card.parity is not None and card.metrics
    again = subprocess.run(
        [*command, "--repository", str(tmp_path)], cwd=ROOT, capture_output=True, timeout=120
    )
    assert again.returncode == 1 and b"already exists" in again.stderr
