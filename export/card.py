"""The model card written beside model.onnx; `service/card.py` owns the schema it must pass."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import onnx
import torch

from export.errors import ExportError
from export.introspect import RecurrentSpec
from export.onnx_export import OPSET, Normalization
from export.verify import ParityReport

# The card fields that follow from the module itself; a recheck compares them with a checkpoint.
STRUCTURE_FIELDS = (
    "cell",
    "nonlinearity",
    "input_size",
    "vocab_size",
    "embedding_dim",
    "hidden_size",
    "num_layers",
    "bidirectional",
    "output_size",
)


def structure_fields(spec: RecurrentSpec) -> dict[str, Any]:
    """The card fields describing the network's shape, as JSON values."""
    return {
        "cell": spec.cell.value,
        "nonlinearity": spec.nonlinearity.value if spec.nonlinearity is not None else None,
        "input_size": spec.input_size,
        "vocab_size": spec.vocab_size,
        "embedding_dim": spec.embedding_dim,
        "hidden_size": spec.hidden_size,
        "num_layers": spec.num_layers,
        "bidirectional": spec.bidirectional,
        "output_size": spec.output_size,
    }


def check_annotations(
    spec: RecurrentSpec, *, labels: Sequence[str] | None, feature_names: Sequence[str] | None
) -> None:
    """Raise ExportError when labels or feature names do not fit the model's sizes."""
    if labels is not None and len(labels) != spec.output_size:
        raise ExportError(f"{len(labels)} labels given for output_size {spec.output_size}")
    if feature_names is None:
        return
    if spec.input_size is None:
        raise ExportError("feature_names apply to float features; this model takes tokens")
    if len(feature_names) != spec.input_size:
        raise ExportError(
            f"{len(feature_names)} feature_names given for input_size {spec.input_size}"
        )


def build_card(
    spec: RecurrentSpec,
    *,
    name: str,
    version: int,
    description: str,
    labels: Sequence[str] | None,
    feature_names: Sequence[str] | None,
    normalization: Normalization | None,
    parity: ParityReport,
    metrics: Mapping[str, float] | None,
    model_bytes: bytes,
) -> dict[str, Any]:
    """The card as a JSON-ready dict, fields in the order of `service.core.card.ModelCard`."""
    return {
        "name": name,
        "version": version,
        "description": description,
        **structure_fields(spec),
        "head": spec.head.value,
        "labels": list(labels) if labels is not None else None,
        "feature_names": list(feature_names) if feature_names is not None else None,
        "normalization": normalization.to_card() if normalization is not None else None,
        "streamable": not spec.bidirectional,
        "opset": OPSET,
        "onnx_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
        "parity": parity.to_card(),
        "metrics": {key: float(value) for key, value in (metrics or {}).items()},
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
