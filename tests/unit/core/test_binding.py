"""IOBinding runs (CPU OrtValues here, CUDA on a GPU) answer bit for bit what `session.run`
answers, for every model kind the tests build, and keep their output buffers grow-only."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from export.api import export_module
from service.core.batching import BatchJob, run_jobs
from service.core.binding import MIN_BUFFER_ELEMENTS, BoundRun, bucket_of
from service.core.providers import CPU, ProviderConfig
from service.core.runtime import ModelRunner, RnnBatch
from service.core.state import RecurrentState
from service.core.version import LoadedModel, load_version
from service.settings import DeviceFeature
from tests.export.test_kinds import KINDS
from tests.support.models import RANDOM_MODELS, RandomRepository

# per_sequence heads (one padding-safe, one not), several state tensors, a scan-exported loop
KIND_NAMES = ("packed_classifier", "mean_pooling", "lstm_into_gru", "gru_cell_loop_seq_first")
BATCH_SIZES = (1, 5, 64)


@pytest.fixture(scope="module")
def kinds_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("bound-kinds")
    for name in KIND_NAMES:
        torch.manual_seed(2)
        export_module(
            KINDS[name].build().eval(), name=name.replace("_", "-"), repository=repository
        )
    return repository


def load(path: Path, mode: DeviceFeature = DeviceFeature.OFF) -> LoadedModel:
    return load_version(
        path, providers=[CPU], intra_op_threads=1, config=ProviderConfig(io_binding=mode)
    )


def every_model(random_repository: RandomRepository, kinds_repository: Path) -> list[Path]:
    paths = [random_repository.path / name / "1" for name in RANDOM_MODELS]
    return paths + [kinds_repository / n.replace("_", "-") / "1" for n in KIND_NAMES]


def random_batch(runner: ModelRunner, batch: int, rng: np.random.Generator) -> RnnBatch:
    card = runner.card
    lengths = rng.integers(1, 7, batch).astype(np.int32)
    steps = int(lengths.max())
    if card.vocab_size is not None:
        inputs = rng.integers(0, card.vocab_size, (batch, steps), dtype=np.int64)
    else:
        assert card.input_size is not None
        inputs = rng.standard_normal((batch, steps, card.input_size)).astype(np.float32)
    if not card.padding_safe:
        lengths[:] = steps  # a model that is not padding-safe only ever runs one length
    state = RecurrentState(
        tuple(rng.standard_normal((s.rows, batch, s.width)).astype(np.float32) for s in card.states)
    )
    return RnnBatch(inputs, lengths, state)


def assert_identical(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype
        assert np.array_equal(x, y), "IOBinding changed a bit"


def test_bound_runs_equal_session_run_bit_for_bit_for_every_kind_and_batch_size(
    random_repository: RandomRepository, kinds_repository: Path
) -> None:
    rng = np.random.default_rng(0)
    heads = set()
    for path in every_model(random_repository, kinds_repository):
        runner = load(path).runner
        heads.add(runner.card.head.value)
        for batch_size in BATCH_SIZES:
            batch = random_batch(runner, batch_size, rng)
            plain, bound = runner.run_plain(batch), runner.run_bound(batch)
            assert_identical([plain.y, *plain.state.arrays], [bound.y, *bound.state.arrays])
    assert heads == {"per_step", "last_step", "per_sequence"}


def test_batches_through_the_batcher_answer_the_same_with_io_binding_on(
    random_repository: RandomRepository, kinds_repository: Path
) -> None:
    rng = np.random.default_rng(1)
    for path in every_model(random_repository, kinds_repository):
        plain, bound = load(path, DeviceFeature.OFF).runner, load(path, DeviceFeature.ON).runner
        assert bound.io_binding and not plain.io_binding
        sample = random_batch(plain, 6, rng)
        sequences = [sample.inputs[i, :n] for i, n in enumerate(sample.seq_lens.tolist())]
        answers = []
        for runner in (plain, bound):
            job = BatchJob(sequences, sample.state, future=None)  # type: ignore[arg-type]
            answers.append(run_jobs([job], runner)[0])
        for a, b in zip(*answers, strict=True):
            assert_identical([a.y, *a.state.arrays], [b.y, *b.state.arrays])


def test_results_own_their_memory_so_the_next_batch_cannot_overwrite_them(
    random_repository: RandomRepository,
) -> None:
    runner = load(random_repository.path / "lstm3" / "1").runner
    rng = np.random.default_rng(2)
    first = random_batch(runner, 4, rng)
    kept = runner.run_bound(first)
    copies = [kept.y.copy(), *(a.copy() for a in kept.state.arrays)]
    runner.run_bound(random_batch(runner, 4, rng))
    assert_identical([kept.y, *kept.state.arrays], copies)


def test_output_buffers_grow_by_power_of_two_buckets_and_never_shrink(
    random_repository: RandomRepository,
) -> None:
    model = load(random_repository.path / "rnn-feat" / "1")
    session = model.runner._session  # the runner's own session, bound here directly
    bound = BoundRun(session, model.card, provider=CPU)
    rng = np.random.default_rng(3)
    sizes = []
    for batch_size in (2, 256, 3):
        batch = random_batch(model.runner, batch_size, rng)
        feeds = {
            model.card.input_name: batch.inputs,
            "seq_lens": batch.seq_lens,
            **{s.input: a for s, a in zip(model.card.states, batch.state.arrays, strict=True)},
        }
        bound.run(feeds)
        sizes.append(bound.buffer_sizes)
    assert sizes[0]["y"] == MIN_BUFFER_ELEMENTS
    assert sizes[1]["y"] > sizes[0]["y"] and sizes[2] == sizes[1]
    assert all(size & (size - 1) == 0 for size in sizes[1].values())


def test_bucket_sizes() -> None:
    assert bucket_of(1) == MIN_BUFFER_ELEMENTS
    assert bucket_of(MIN_BUFFER_ELEMENTS + 1) == 2 * MIN_BUFFER_ELEMENTS
    assert bucket_of(5000) == 8192


def test_each_thread_binds_through_its_own_buffers(random_repository: RandomRepository) -> None:
    runner = load(random_repository.path / "gru1" / "1", DeviceFeature.ON).runner
    rng = np.random.default_rng(4)
    batches = [random_batch(runner, 16, rng) for _ in range(8)]
    expected = [runner.run_plain(b) for b in batches]
    failures: list[str] = []

    def work(offset: int) -> None:
        for i in range(40):
            index = (i + offset) % len(batches)
            got = runner.run(batches[index])
            if not np.array_equal(got.y, expected[index].y):
                failures.append(f"thread {offset} batch {index}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
