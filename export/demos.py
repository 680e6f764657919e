"""`python -m export train <demo|all>`: train the three demo models and export them.

Each demo trains a `RecurrentModel` on real data that ships with an installed package
(`export.datasets`), measures it on a held-out split, and writes
`<repository>/<name>/<version>/{model.onnx, model.json}` through `export.api.export_module`.
"""

from __future__ import annotations

import argparse
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from export.api import export_module
from export.architectures import RecurrentModel
from export.datasets import DIGITS_PIXEL_MAX, LabelledSplit, load_co2, load_digits, load_text
from export.onnx_export import Normalization
from export.repository import resolve_version
from export.train import (
    Schedule,
    TrainReport,
    accuracy,
    forecast_rmse,
    make_reproducible,
    naive_rmse,
    perplexity,
    train_classifier,
    train_forecaster,
    train_language_model,
    unigram_perplexity,
)

SEED = 0
# --quick: enough steps to run every stage once; the models it writes are not useful.
QUICK_STEPS = 4
# co2-forecaster's level shifts in training-std units: up to 8 std (about 100 ppm) above
# the training windows, so today's levels stay inside what the network has seen.
LEVEL_SHIFT = (-1.0, 8.0)


@dataclass(frozen=True)
class TrainedDemo:
    """A trained module and everything its card says about it."""

    module: RecurrentModel
    description: str
    report: TrainReport
    metrics: dict[str, float]
    labels: list[str] | None = None
    feature_names: list[str] | None = None
    normalization: Normalization | None = None


def train_digits(*, quick: bool = False) -> TrainedDemo:
    """An Elman RNN (tanh) that reads an 8x8 digit row by row and names the digit."""
    make_reproducible(SEED, threads=1)
    data = load_digits(seed=SEED)
    # One mean/std for every pixel: per-column statistics would blow up the near-empty
    # edge columns.
    mean, std = float(data.train.x.mean()), float(data.train.x.std())

    def scaled(split: LabelledSplit) -> LabelledSplit:
        return LabelledSplit((split.x - mean) / std, split.y)

    model = RecurrentModel(
        cell="rnn",
        nonlinearity="tanh",
        input_size=8,
        hidden_size=64,
        output_size=10,
        head="last_step",
    )
    schedule = Schedule(
        steps=_steps(600, quick), learning_rate=1e-2, validate_every=25, batch_size=64
    )
    report = train_classifier(
        model, train=scaled(data.train), validation=scaled(data.validation), schedule=schedule
    )
    test_accuracy = accuracy(model, scaled(data.test))
    description = (
        "Handwritten digit classifier: scikit-learn's 8x8 digits (1,797 images), each read "
        "as a sequence of its 8 pixel rows, top to bottom. Input x: [batch, 8 steps, 8 "
        f"features], raw pixel intensities 0..{DIGITS_PIXEL_MAX:g} (px0..px7, left to "
        f"right); the graph normalises them itself ((x - {mean:.3f}) / {std:.3f}, from the "
        "training images). Output: 10 logits, one per digit (labels '0'..'9'), read at the "
        "last step; softmax for probabilities. Held-out test set: 360 images, stratified."
    )
    return TrainedDemo(
        module=model,
        description=description,
        report=report,
        metrics={
            "test_accuracy": test_accuracy,
            "validation_accuracy": accuracy(model, scaled(data.validation)),
        },
        labels=[str(digit) for digit in range(10)],
        feature_names=[f"px{column}" for column in range(8)],
        normalization=Normalization(input_mean=[mean] * 8, input_std=[std] * 8),
    )


def train_co2(*, quick: bool = False) -> TrainedDemo:
    """A 2-layer ReLU RNN that forecasts next month's Mauna Loa CO2 from the months so far."""
    make_reproducible(SEED, threads=1)
    series = load_co2()
    mean, std = float(series.train.mean()), float(series.train.std())
    scaled = (series.values - mean) / std
    model = RecurrentModel(
        cell="rnn",
        nonlinearity="relu",
        num_layers=2,
        input_size=1,
        hidden_size=32,
        output_size=1,
        head="per_step",
    )
    schedule = Schedule(
        steps=_steps(2500, quick), learning_rate=3e-3, validate_every=25, batch_size=32
    )
    report = train_forecaster(
        model,
        scaled,
        train_end=series.train_end,
        validation_end=series.validation_end,
        schedule=schedule,
        window=96,
        level_shift=LEVEL_SHIFT,
    )
    end = len(series.values)
    test_rmse = std * forecast_rmse(model, scaled, start=series.validation_end, end=end)
    naive = naive_rmse(series.values, start=series.validation_end, end=end)
    # The highest level the shifted training windows reach, in ppm.
    reach = mean + std * (float(scaled[: series.train_end].max()) + LEVEL_SHIFT[1])
    first, train_last, test_first, last = (
        str(series.months[i]) for i in (0, series.train_end - 1, series.validation_end, -1)
    )
    description = (
        f"One-step CO2 forecaster: monthly mean CO2 at Mauna Loa in ppm ({first} to {last}, "
        "statsmodels' co2 record, weekly values averaged per month, five empty months "
        "interpolated). Input x: [batch, months, 1], raw ppm, oldest first. Output y at "
        "step t: the forecast for month t+1 in ppm. Normalisation from the training "
        f"segment ({first} to {train_last}: mean {mean:.2f}, std {std:.2f}) is baked "
        "into the graph, so clients send and receive raw ppm. Streamable: feed a month, "
        "keep the state. Trained on windows moved by random level shifts, so it follows the "
        f"rising trend beyond the training range (up to about {reach:.0f} ppm). Test "
        f"segment: {test_first} to {last}, forecast while streaming the whole record."
    )
    return TrainedDemo(
        module=model,
        description=description,
        report=report,
        metrics={
            "test_rmse": test_rmse,
            "naive_last_value_rmse": naive,
            "validation_rmse": std * report.best_validation,
        },
        feature_names=["co2_ppm"],
        normalization=Normalization(
            input_mean=[mean], input_std=[std], output_mean=[mean], output_std=[std]
        ),
    )


def train_char_lm(*, quick: bool = False) -> TrainedDemo:
    """A 1-layer LSTM character language model of the Python reference documentation."""
    make_reproducible(SEED)
    corpus = load_text(seed=SEED)
    vocab_size = len(corpus.vocabulary)
    model = RecurrentModel(
        cell="lstm",
        vocab_size=vocab_size,
        embedding_dim=32,
        hidden_size=256,
        output_size=vocab_size,
        head="per_step",
    )
    schedule = Schedule(
        steps=_steps(1200, quick), learning_rate=5e-3, validate_every=100, batch_size=32
    )
    report = train_language_model(
        model,
        train_ids=corpus.train,
        validation_ids=corpus.validation,
        schedule=schedule,
        chunk=100,
        vocab_size=vocab_size,
    )
    test_perplexity = perplexity(model, corpus.test, vocab_size=vocab_size)
    unigram = unigram_perplexity(corpus.train, corpus.test, vocab_size=vocab_size)
    characters = len(corpus.train) + len(corpus.validation) + len(corpus.test)
    description = (
        "Character language model of the Python reference documentation (pydoc_data.topics "
        f"of CPython {platform.python_version()}, {characters:,} characters; 2,048-character "
        "blocks, 5% held out for validation and 5% for test). Input tokens: [batch, seq] "
        "int64 character ids, id i being labels[i]; id 0 (U+FFFD) stands for any character "
        "not in labels (those seen fewer than 10 times in training). Output y at step t: "
        f"{vocab_size} logits for the character after step t (softmax for "
        "probabilities; decode ids with labels). Streamable: feed characters, keep the "
        "state, sample the next."
    )
    return TrainedDemo(
        module=model,
        description=description,
        report=report,
        metrics={
            "test_perplexity": test_perplexity,
            "unigram_perplexity": unigram,
            "validation_perplexity": report.best_validation,
        },
        labels=list(corpus.vocabulary),
    )


class DemoTrainer(Protocol):
    """Trains one demo; `quick` cuts training to a few steps (a smoke test)."""

    def __call__(self, *, quick: bool = False) -> TrainedDemo: ...


DEMOS: dict[str, DemoTrainer] = {
    "digits-rnn": train_digits,
    "co2-forecaster": train_co2,
    "char-lm": train_char_lm,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Train and export the named demo (or all of them); print where each went."""
    args = _parser().parse_args(argv)
    names = list(DEMOS) if args.demo == "all" else [args.demo]
    # Fail before minutes of training, not after, when a version is already taken.
    for name in names:
        resolve_version(args.repository, name, args.version, force=args.force)
    for name in names:
        demo = DEMOS[name](quick=args.quick)
        result = export_module(
            demo.module,
            name=name,
            repository=args.repository,
            version=args.version,
            description=demo.description,
            labels=demo.labels,
            feature_names=demo.feature_names,
            normalization=demo.normalization,
            metrics=demo.metrics,
            force=args.force,
        )
        figures = ", ".join(f"{key} {value:.4f}" for key, value in demo.metrics.items())
        print(f"wrote {result.path}: {figures}")
        print(
            f"  trained {demo.report.steps} steps in {demo.report.seconds:.1f} s "
            f"(kept step {demo.report.best_step}); parity max abs error "
            f"{result.parity.max_abs_error:.2e}"
        )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m export train", description=__doc__)
    parser.add_argument("demo", choices=[*DEMOS, "all"])
    parser.add_argument("--repository", type=Path, default=Path("models"))
    parser.add_argument("--version", type=int, default=1)
    parser.add_argument("--force", action="store_true", help="replace an existing version")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} steps (smoke test)")
    return parser


def _steps(full: int, quick: bool) -> int:
    return QUICK_STEPS if quick else full
