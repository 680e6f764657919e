"""The model card written beside model.onnx; `service/card.py` owns the schema it must pass."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import onnx
import torch

from export.errors import ExportError
from export.model_io import GraphIO
from export.onnx_export import Normalization
from export.properties import Properties
from export.verify import ParityReport

CARD_FORMAT = 2


def structure_fields(io: GraphIO) -> dict[str, Any]:
    """The card fields that follow from the module itself; a recheck compares them."""
    return {
        "input_size": None if io.input.tokens else io.input.size,
        "vocab_size": io.input.size if io.input.tokens else None,
        "embedding_dim": io.embedding_dim,
        "output_size": io.output_size,
        "head": io.head.value,
        "layers": [layer.to_card() for layer in io.layers],
        "states": [state.to_card() for state in io.states],
    }


def check_annotations(
    io: GraphIO, *, labels: Sequence[str] | None, feature_names: Sequence[str] | None
) -> None:
    """Raise ExportError when labels or feature names do not fit the model's sizes."""
    if labels is not None and len(labels) != io.output_size:
        raise ExportError(f"{len(labels)} labels given for output_size {io.output_size}")
    if feature_names is None:
        return
    if io.input.tokens:
        raise ExportError("feature_names apply to float features; this model takes tokens")
    if len(feature_names) != io.input.size:
        raise ExportError(
            f"{len(feature_names)} feature_names given for input_size {io.input.size}"
        )


def graph_opset(model_bytes: bytes) -> int:
    """The default-domain opset the graph imports."""
    model = onnx.load_from_string(model_bytes)
    return next(int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx"))


def build_card(
    io: GraphIO,
    *,
    name: str,
    version: int,
    description: str,
    labels: Sequence[str] | None,
    feature_names: Sequence[str] | None,
    normalization: Normalization | None,
    properties: Properties,
    parity: ParityReport,
    metrics: Mapping[str, float] | None,
    model_bytes: bytes,
) -> dict[str, Any]:
    """The card as a JSON-ready dict (format 2), in the field order of service.core.card."""
    structure = structure_fields(io)
    return {
        "format": CARD_FORMAT,
        "name": name,
        "version": version,
        "description": description,
        "input_size": structure["input_size"],
        "vocab_size": structure["vocab_size"],
        "embedding_dim": structure["embedding_dim"],
        "output_size": structure["output_size"],
        "head": structure["head"],
        "labels": list(labels) if labels is not None else None,
        "feature_names": list(feature_names) if feature_names is not None else None,
        "normalization": normalization.to_card() if normalization is not None else None,
        "layers": structure["layers"],
        "states": structure["states"],
        "streamable": properties.streamable,
        "not_streamable_reason": properties.not_streamable_reason,
        "padding_safe": properties.padding_safe,
        "export_method": io.method,
        "opset": graph_opset(model_bytes),
        "onnx_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "torch_version": torch.__version__,
        "onnx_version": onnx.__version__,
        "parity": parity.to_card(),
        "metrics": {key: float(value) for key, value in (metrics or {}).items()},
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
