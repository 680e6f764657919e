"""One model version on disk (`models/<name>/<version>/`): its card and graph, checked against
each other and warmed up before it may serve."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from service.core.card import ModelCard
from service.core.providers import DEFAULT_PROVIDERS, ProviderConfig
from service.core.runtime import ModelRunner, RnnBatch
from service.errors import RepositoryError

CARD_FILE = "model.json"
GRAPH_FILE = "model.onnx"


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A ready model version: what request handlers work with."""

    name: str
    version: int
    card: ModelCard
    runner: ModelRunner


def read_card(version_dir: Path) -> ModelCard:
    """Parse and validate `model.json`, naming the file and the field on failure."""
    card_path = version_dir / CARD_FILE
    try:
        raw = card_path.read_bytes()
    except FileNotFoundError:
        raise RepositoryError(f"{card_path}: missing") from None
    try:
        return ModelCard.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(card)"
        raise RepositoryError(f"{card_path}: field {field!r}: {first['msg']}") from None


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_graph_matches_card(runner: ModelRunner, where: Path) -> None:
    """The graph's inputs and outputs must be exactly what the card promises."""
    card = runner.card
    feature = "tensor(int64)" if card.takes_tokens else "tensor(float)"
    want_inputs: dict[str, tuple[str, list[int | None]]] = {
        card.input_name: (
            feature,
            [None, None] if card.takes_tokens else [None, None, card.input_size],
        ),
        "seq_lens": ("tensor(int32)", [None]),
    }
    # per_sequence heads answer once per sequence: no seq axis
    y_dims: list[int | None] = [None, None] if card.answers_per_step else [None]
    want_outputs: dict[str, tuple[str, list[int | None]]] = {
        "y": ("tensor(float)", [*y_dims, card.output_size]),
    }
    for state in card.states:
        want_inputs[state.input] = ("tensor(float)", [state.rows, None, state.width])
        want_outputs[state.output] = ("tensor(float)", [state.rows, None, state.width])
    for kind, want, have in (
        ("input", want_inputs, runner.graph_inputs),
        ("output", want_outputs, runner.graph_outputs),
    ):
        if set(want) - set(have):
            raise RepositoryError(
                f"{where}: graph {kind}s {sorted(have)} lack {sorted(set(want) - set(have))}"
            )
        for name, (dtype, dims) in want.items():
            have_dtype, have_dims = have[name]
            fixed = [d if isinstance(d, int) else None for d in have_dims]
            if have_dtype != dtype or len(fixed) != len(dims):
                raise RepositoryError(
                    f"{where}: graph {kind} {name!r} is {have_dtype}{have_dims}, card says "
                    f"{dtype} of rank {len(dims)}"
                )
            for got, expected in zip(fixed, dims, strict=True):
                if expected is not None and got != expected:
                    raise RepositoryError(
                        f"{where}: graph {kind} {name!r} has shape {have_dims}, "
                        f"card implies {['?' if d is None else d for d in dims]}"
                    )


def warm_up(runner: ModelRunner) -> None:
    """Run two sequences of different lengths, so a graph with a fixed axis fails at load."""
    seq_lens = np.array([3, 1], np.int32)
    if runner.card.takes_tokens:
        inputs = np.zeros((2, 3), np.int64)
    else:
        inputs = np.zeros((2, 3, runner.card.input_size or 0), np.float32)
    try:
        runner.run(RnnBatch(inputs, seq_lens, runner.zero_state(2)))
    except Exception as exc:  # any onnxruntime failure here means the graph breaks the contract
        raise RepositoryError(f"warm-up run failed: {exc}") from exc


def load_version(
    version_dir: Path,
    *,
    providers: list[str],
    intra_op_threads: int,
    config: ProviderConfig = DEFAULT_PROVIDERS,
) -> LoadedModel:
    """Load and check one version directory; raises RepositoryError with a one-line reason."""
    card = read_card(version_dir)
    name, version = version_dir.parent.name, int(version_dir.name)
    if (card.name, card.version) != (name, version):
        raise RepositoryError(
            f"{version_dir / CARD_FILE}: card says {card.name} v{card.version}, "
            f"directory says {name} v{version}"
        )
    graph = version_dir / GRAPH_FILE
    if not graph.is_file():
        raise RepositoryError(f"{graph}: missing")
    if (actual := sha256_of(graph)) != card.onnx_sha256:
        raise RepositoryError(
            f"{graph}: sha256 {actual[:12]}… does not match the card's {card.onnx_sha256[:12]}…"
        )
    runner = ModelRunner(
        graph, card, providers=providers, intra_op_threads=intra_op_threads, config=config
    )
    check_graph_matches_card(runner, graph)
    warm_up(runner)
    return LoadedModel(name, version, card, runner)
