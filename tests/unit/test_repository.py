"""Loading the repository: broken versions are listed with a reason, or fail a strict load."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from service.errors import ModelNotFoundError, ModelUnavailableError, RepositoryError
from service.repository import ModelStatus, Repository
from tests.conftest import RandomRepository


def copy_model(source: RandomRepository, name: str, target: Path, version: int = 1) -> Path:
    """Copy a random model's version directory into another repository."""
    destination = target / name / str(version)
    shutil.copytree(source.path / name / "1", destination)
    card_path = destination / "model.json"
    card = json.loads(card_path.read_text())
    card["version"] = version
    card_path.write_text(json.dumps(card))
    return destination


def tamper_graph(version_dir: Path) -> None:
    graph = version_dir / "model.onnx"
    graph.write_bytes(graph.read_bytes() + b"\0")


def delete_graph(version_dir: Path) -> None:
    (version_dir / "model.onnx").unlink()


def corrupt_graph_keeping_sha(version_dir: Path) -> None:
    import hashlib

    graph = version_dir / "model.onnx"
    graph.write_bytes(b"not an onnx graph")
    card_path = version_dir / "model.json"
    card = json.loads(card_path.read_text())
    card["onnx_sha256"] = hashlib.sha256(graph.read_bytes()).hexdigest()
    card_path.write_text(json.dumps(card))


def card_field(field: str, value: object) -> Callable[[Path], None]:
    def edit(version_dir: Path) -> None:
        card_path = version_dir / "model.json"
        card = json.loads(card_path.read_text())
        card[field] = value
        card_path.write_text(json.dumps(card))

    return edit


def state_width(value: int) -> Callable[[Path], None]:
    def edit(version_dir: Path) -> None:
        card_path = version_dir / "model.json"
        card = json.loads(card_path.read_text())
        card["states"][0]["width"] = value
        card_path.write_text(json.dumps(card))

    return edit


BREAKAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "sha mismatch": (tamper_graph, "sha256"),
    "missing graph": (delete_graph, "missing"),
    "corrupt graph": (corrupt_graph_keeping_sha, "onnxruntime cannot load"),
    "card disagrees with graph": (state_width(99), "shape"),
    "card field invalid": (card_field("cell", "transformer"), "'cell'"),
    "card names another model": (card_field("name", "other"), "directory says"),
    "card not json": (lambda d: (d / "model.json").write_text("{"), "model.json"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_broken_version_is_listed_unavailable_with_its_reason(
    random_repository: RandomRepository, tmp_path: Path, breakage: str
) -> None:
    copy_model(random_repository, "gru1", tmp_path)
    broken = copy_model(random_repository, "rnn-feat", tmp_path)
    edit, words = BREAKAGES[breakage]
    edit(broken)
    repository = Repository.load(tmp_path, providers=["CPUExecutionProvider"], intra_op_threads=1)
    entry = repository.entry("rnn-feat", 1)
    assert entry.status is ModelStatus.UNAVAILABLE
    assert entry.reason is not None and words in entry.reason
    assert repository.get("gru1").runner is not None
    with pytest.raises(ModelUnavailableError, match="unavailable"):
        repository.get("rnn-feat")


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_strict_load_fails_on_the_first_broken_version(
    random_repository: RandomRepository, tmp_path: Path, breakage: str
) -> None:
    broken = copy_model(random_repository, "rnn-feat", tmp_path)
    BREAKAGES[breakage][0](broken)
    with pytest.raises(RepositoryError) as info:
        Repository.load(
            tmp_path, providers=["CPUExecutionProvider"], intra_op_threads=1, strict=True
        )
    assert "\n" not in info.value.message


def test_default_version_is_the_highest_ready_one(
    random_repository: RandomRepository, tmp_path: Path
) -> None:
    copy_model(random_repository, "gru1", tmp_path, version=1)
    copy_model(random_repository, "gru1", tmp_path, version=2)
    tamper_graph(copy_model(random_repository, "gru1", tmp_path, version=3))
    repository = Repository.load(tmp_path, providers=["CPUExecutionProvider"], intra_op_threads=1)
    assert repository.get("gru1").version == 2
    assert repository.get("gru1", 1).version == 1
    with pytest.raises(ModelNotFoundError):
        repository.get("gru1", 4)
    with pytest.raises(ModelNotFoundError):
        repository.get("missing")


def test_directories_that_are_not_versions_are_skipped(
    random_repository: RandomRepository, tmp_path: Path
) -> None:
    copy_model(random_repository, "gru1", tmp_path)
    (tmp_path / "gru1" / "latest").mkdir()
    (tmp_path / "Bad Name" / "1").mkdir(parents=True)
    repository = Repository.load(tmp_path, providers=["CPUExecutionProvider"], intra_op_threads=1)
    assert [(e.name, e.version) for e in repository.entries()] == [("gru1", 1)]


def test_missing_cuda_falls_back_to_cpu(random_repository: RandomRepository) -> None:
    repository = Repository.load(
        random_repository.path,
        providers=["CUDAExecutionProvider", "CPUExecutionProvider"],
        intra_op_threads=1,
    )
    assert repository.get("gru1").runner.provider in {
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    }
