"""Repository entries: versions, atomic writes, no silent overwrite, a card the service reads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from export.api import export_module, recheck_parity
from export.errors import ExportError, RepositoryError
from export.onnx_export import Normalization
from export.repository import write_version
from export.verify import open_session
from service.core.card import ModelCard
from tests.export.helpers import FEATURES, HIDDEN, random_model, run_graph


def _entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_versions_default_to_one_then_the_highest_plus_one(tmp_path: Path) -> None:
    model = random_model()
    assert export_module(model, name="m", repository=tmp_path).path == tmp_path / "m" / "1"
    (tmp_path / "m" / "7").mkdir()
    assert export_module(model, name="m", repository=tmp_path).path == tmp_path / "m" / "8"


def test_existing_version_is_refused_without_force(tmp_path: Path) -> None:
    model = random_model()
    export_module(model, name="m", repository=tmp_path, version=2)
    before = (tmp_path / "m" / "2" / "model.onnx").read_bytes()
    with pytest.raises(RepositoryError, match=r"m/2 already exists; pass force=True"):
        export_module(random_model(seed=1), name="m", repository=tmp_path, version=2)
    assert (tmp_path / "m" / "2" / "model.onnx").read_bytes() == before


def test_force_replaces_an_existing_version_and_leaves_no_temporary_folders(
    tmp_path: Path,
) -> None:
    export_module(random_model(), name="m", repository=tmp_path, version=1)
    result = export_module(
        random_model(seed=1), name="m", repository=tmp_path, version=1, force=True
    )
    card = json.loads((result.path / "model.json").read_text())
    assert card["onnx_sha256"] == result.card["onnx_sha256"]
    assert _entries(tmp_path / "m") == ["1"]
    assert _entries(result.path) == ["model.json", "model.onnx"]


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "model.onnx").write_bytes(b"old")
    with pytest.raises(RepositoryError):
        write_version(tmp_path, name="m", version=1, model_bytes=b"new", card={})
    assert _entries(tmp_path / "m") == ["1"]
    assert (tmp_path / "m" / "1" / "model.onnx").read_bytes() == b"old"


@pytest.mark.parametrize("name", ["Digits", "-lead", "has space", "a" * 65, "", "x/y"])
def test_invalid_model_names_are_refused_before_any_work(name: str, tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="invalid model name"):
        export_module(random_model(), name=name, repository=tmp_path)
    assert _entries(tmp_path) == []


def test_written_card_validates_against_the_service_model_card(tmp_path: Path) -> None:
    model = random_model(cell="rnn", nonlinearity="relu", head="last_step")
    result = export_module(
        model,
        name="digits-rnn",
        repository=tmp_path,
        description="reads digits row by row",
        labels=["yes", "no"],
        feature_names=["a", "b", "c"],
        metrics={"test_accuracy": 0.97},
    )
    card = ModelCard.model_validate_json((result.path / "model.json").read_text())
    written = {k: v for k, v in result.card.items() if k != "created_at"}
    assert card.model_dump(mode="json", exclude={"created_at"}) == written
    assert card.layers[0].nonlinearity == "relu"
    assert card.format == 2 and card.export_method == "template"
    assert card.streamable and card.padding_safe and card.head == "last_step"
    assert card.labels == ["yes", "no"] and card.metrics == {"test_accuracy": 0.97}
    assert card.opset == 17 and card.torch_version == torch.__version__
    assert card.created_at.utcoffset() is not None


def test_normalization_is_baked_into_the_graph_and_recorded_on_the_card(tmp_path: Path) -> None:
    model = random_model(cell="gru")
    normalization = Normalization(
        input_mean=[300.0, -2.0, 0.5],
        input_std=[20.0, 0.5, 1.0],
        output_mean=[310.0, 1.0],
        output_std=[25.0, 2.0],
    )
    result = export_module(model, name="co2", repository=tmp_path, normalization=normalization)
    card = ModelCard.model_validate_json((result.path / "model.json").read_text())
    assert card.normalization is not None and card.normalization.output_std == [25.0, 2.0]

    session = open_session((result.path / "model.onnx").read_bytes())
    scaled = np.random.default_rng(0).standard_normal((2, 6, FEATURES)).astype(np.float32)
    raw = scaled * np.array([20.0, 0.5, 1.0]) + np.array([300.0, -2.0, 0.5])
    h0 = np.zeros((1, 2, HIDDEN), dtype=np.float32)
    out = run_graph(
        session, {"x": raw.astype(np.float32), "h0": h0, "seq_lens": np.full(2, 6, dtype=np.int32)}
    )
    with torch.no_grad():
        y, _ = model(torch.from_numpy(scaled))
    expected = y.numpy() * np.array([25.0, 2.0]) + np.array([310.0, 1.0])
    np.testing.assert_allclose(out["y"], expected, atol=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"labels": ["only-one"]}, r"1 labels given for output_size 2"),
        ({"feature_names": ["a"]}, r"1 feature_names given for input_size 3"),
        (
            {"normalization": Normalization(input_mean=[0.0], input_std=[1.0])},
            r"normalization has 1 input values for input_size 3",
        ),
    ],
)
def test_card_annotations_that_do_not_fit_the_model_are_refused(
    kwargs: dict[str, object], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ExportError, match=message):
        export_module(random_model(), name="m", repository=tmp_path, **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "m").exists() or _entries(tmp_path / "m") == []


def test_normalization_rejects_a_zero_std() -> None:
    with pytest.raises(ExportError, match="every std must be finite and > 0"):
        Normalization(input_mean=[0.0], input_std=[0.0])


def test_recheck_refuses_an_entry_whose_graph_no_longer_matches_its_card(tmp_path: Path) -> None:
    model = random_model()
    result = export_module(model, name="m", repository=tmp_path)
    (result.path / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(RepositoryError, match=r"model.onnx does not match the card's onnx_sha256"):
        recheck_parity(result.path, model)


def test_unwritable_repository_gives_a_repository_error(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "models"
    not_a_folder.write_text("")
    with pytest.raises(RepositoryError, match=r"cannot create .*models/m"):
        export_module(random_model(), name="m", repository=not_a_folder)
