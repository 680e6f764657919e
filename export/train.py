"""Small, seeded, reproducible training runs for the demo models (CPU, two threads).

One loop (`fit`) serves all three demos: Adam under a one-cycle learning rate, gradient
clipping, a validation score every few steps, and the best-scoring weights kept at the end.
Each demo supplies a closure that draws its next batch and returns the loss.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.nn import functional
from tqdm import tqdm

from export.datasets import LabelledSplit

MAX_THREADS = 2
State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Schedule:
    """How long and how fast to train, and how often to score on validation."""

    steps: int
    learning_rate: float
    validate_every: int
    batch_size: int
    clip_norm: float = 1.0


@dataclass(frozen=True)
class TrainReport:
    """What a run did: steps taken, wall time, and the step whose weights were kept."""

    steps: int
    seconds: float
    best_step: int
    best_validation: float


def make_reproducible(seed: int, *, threads: int = MAX_THREADS) -> None:
    """Seed torch, insist on deterministic kernels, and cap torch's CPU threads.

    Small networks should take one thread: on a busy machine two spinning threads made a
    32-unit RNN 15x slower. The thread count can change the last bits of the weights, so
    each demo pins its own.
    """
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(min(threads, MAX_THREADS))


def fit(
    model: nn.Module,
    *,
    loss_at: Callable[[], torch.Tensor],
    validate: Callable[[], float],
    schedule: Schedule,
    desc: str,
) -> TrainReport:
    """Train `model` in place for `schedule.steps` steps; keep the weights `validate` liked best.

    `validate` returns a score where lower is better (an error, a perplexity, 1 - accuracy).
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=schedule.learning_rate)
    # Short warm-up then cosine decay: a high rate early, a settled model at the end.
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=schedule.learning_rate, total_steps=schedule.steps, pct_start=0.1
    )
    best = (math.inf, 0, copy.deepcopy(model.state_dict()))
    started = time.perf_counter()
    progress = tqdm(range(1, schedule.steps + 1), desc=desc, unit="step", disable=None)
    for step in progress:
        model.train()
        loss = loss_at()
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        nn.utils.clip_grad_norm_(model.parameters(), schedule.clip_norm)
        optimizer.step()
        scheduler.step()
        if step % schedule.validate_every == 0 or step == schedule.steps:
            model.eval()
            with torch.no_grad():
                score = validate()
            if score < best[0]:
                best = (score, step, copy.deepcopy(model.state_dict()))
            progress.set_postfix(loss=f"{loss.item():.4f}", validation=f"{score:.4f}")
    model.load_state_dict(best[2])
    model.eval()
    return TrainReport(
        steps=schedule.steps,
        seconds=time.perf_counter() - started,
        best_step=best[1],
        best_validation=best[0],
    )


def train_classifier(
    model: nn.Module, *, train: LabelledSplit, validation: LabelledSplit, schedule: Schedule
) -> TrainReport:
    """Cross-entropy on random minibatches of (normalised) sequences; selects on accuracy."""
    x, y = torch.from_numpy(train.x), torch.from_numpy(train.y)
    generator = torch.Generator().manual_seed(0)

    def loss_at() -> torch.Tensor:
        rows = torch.randint(len(x), (schedule.batch_size,), generator=generator)
        return functional.cross_entropy(model(x[rows])[0], y[rows])

    return fit(
        model,
        loss_at=loss_at,
        validate=lambda: 1.0 - accuracy(model, validation),
        schedule=schedule,
        desc="classifier",
    )


def accuracy(model: nn.Module, split: LabelledSplit) -> float:
    """Share of sequences whose highest logit is the true class."""
    with torch.no_grad():
        logits = model(torch.from_numpy(split.x))[0]
    return float((logits.argmax(-1).numpy() == split.y).mean())


def train_forecaster(
    model: nn.Module,
    series: npt.NDArray[np.float32],
    *,
    train_end: int,
    validation_end: int,
    schedule: Schedule,
    window: int,
    level_shift: tuple[float, float],
) -> TrainReport:
    """Next-value MSE on random windows of the (normalised) training segment.

    Each window is moved up or down by a random level drawn from `level_shift`: a trending
    series leaves the training range in later years, and the shift teaches the network to
    forecast the change from the current level rather than to memorise absolute levels.
    Validation streams the whole series from its start and scores the validation segment.
    """
    values = torch.from_numpy(series[:train_end])
    generator = torch.Generator().manual_seed(0)
    low, high = level_shift

    def loss_at() -> torch.Tensor:
        starts = torch.randint(train_end - window, (schedule.batch_size,), generator=generator)
        windows = torch.stack([values[s : s + window + 1] for s in starts.tolist()])
        shift = low + (high - low) * torch.rand(schedule.batch_size, 1, generator=generator)
        windows = (windows + shift).unsqueeze(-1)
        predicted = model(windows[:, :-1])[0]
        return functional.mse_loss(predicted, windows[:, 1:])

    return fit(
        model,
        loss_at=loss_at,
        validate=lambda: forecast_rmse(model, series, start=train_end, end=validation_end),
        schedule=schedule,
        desc="forecaster",
    )


def forecast_rmse(
    model: nn.Module, series: npt.NDArray[np.float32], *, start: int, end: int
) -> float:
    """RMSE of one-step forecasts of `series[start:end]`, streaming the series from index 0."""
    with torch.no_grad():
        inputs = torch.from_numpy(series[: end - 1]).view(1, -1, 1)
        predicted = model(inputs)[0].view(-1)[start - 1 :].numpy()
    return float(np.sqrt(np.mean((predicted - series[start:end]) ** 2)))


def naive_rmse(series: npt.NDArray[np.float32], *, start: int, end: int) -> float:
    """RMSE of the last-value forecast (next = current) over `series[start:end]`."""
    return float(np.sqrt(np.mean((series[start:end] - series[start - 1 : end - 1]) ** 2)))


def train_language_model(
    model: nn.Module,
    *,
    train_ids: npt.NDArray[np.int64],
    validation_ids: npt.NDArray[np.int64],
    schedule: Schedule,
    chunk: int,
    vocab_size: int,
) -> TrainReport:
    """Next-character cross-entropy with truncated backpropagation through time.

    The corpus is laid out as `batch_size` parallel streams; each step reads the next
    `chunk` characters of every stream and carries the (detached) state on, so the network
    sees long contexts while gradients stop at chunk boundaries.
    """
    streams = _as_streams(train_ids, schedule.batch_size)
    state: State | None = None
    position = 0

    def loss_at() -> torch.Tensor:
        nonlocal state, position
        if position + chunk + 1 > streams.shape[1]:
            state, position = None, 0
        window = streams[:, position : position + chunk + 1]
        position += chunk
        logits, new_state = model(window[:, :-1], state)
        state = _detach(new_state)
        return functional.cross_entropy(logits.reshape(-1, vocab_size), window[:, 1:].reshape(-1))

    return fit(
        model,
        loss_at=loss_at,
        validate=lambda: perplexity(model, validation_ids, vocab_size=vocab_size),
        schedule=schedule,
        desc="language model",
    )


def perplexity(
    model: nn.Module,
    ids: npt.NDArray[np.int64],
    *,
    vocab_size: int,
    streams: int = 16,
    chunk: int = 256,
) -> float:
    """Per-character perplexity of `ids`, read as parallel streams with state carried on."""
    data = _as_streams(ids, streams)
    state: State | None = None
    total, count = 0.0, 0
    with torch.no_grad():
        for position in range(0, data.shape[1] - 1, chunk):
            window = data[:, position : position + chunk + 1]
            logits, state = model(window[:, :-1], state)
            targets = window[:, 1:].reshape(-1)
            flat = logits.reshape(-1, vocab_size)
            total += functional.cross_entropy(flat, targets, reduction="sum").item()
            count += targets.numel()
    return math.exp(total / count)


def unigram_perplexity(
    train_ids: npt.NDArray[np.int64], ids: npt.NDArray[np.int64], *, vocab_size: int
) -> float:
    """Perplexity of `ids` under training character frequencies (add-one smoothed)."""
    counts = np.bincount(train_ids, minlength=vocab_size) + 1.0
    log_probs = np.log(counts / counts.sum())
    return float(np.exp(-log_probs[ids].mean()))


def _as_streams(ids: npt.NDArray[np.int64], count: int) -> torch.Tensor:
    """`ids` cut into `count` equal consecutive streams, [count, length] (the tail dropped)."""
    length = len(ids) // count
    return torch.from_numpy(ids[: length * count].copy()).view(count, length)


def _detach(state: State) -> State:
    if isinstance(state, tuple):
        return (state[0].detach(), state[1].detach())
    return state.detach()
