"""The exporter's public Python API: export a module, recheck an entry, load a user's module."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from export.card import STRUCTURE_FIELDS, build_card, check_annotations, structure_fields
from export.errors import ExportError, RepositoryError, describe
from export.introspect import Head, introspect
from export.loading import load_user_module
from export.onnx_export import Normalization, build_onnx
from export.repository import MODEL_FILE, read_card, resolve_version, write_version
from export.verify import ParityReport, check_dynamic_axes, check_parity, open_session

__all__ = [
    "ExportResult",
    "Head",
    "Normalization",
    "export_module",
    "load_user_module",
    "recheck_parity",
]


@dataclass(frozen=True)
class ExportResult:
    """Where the version went, the card written beside it, and the parity it reached."""

    path: Path
    card: dict[str, Any]
    parity: ParityReport


def export_module(
    module: nn.Module,
    *,
    name: str,
    repository: Path = Path("models"),
    version: int | None = None,
    head: Head | str | None = None,
    description: str = "",
    labels: Sequence[str] | None = None,
    feature_names: Sequence[str] | None = None,
    normalization: Normalization | None = None,
    metrics: Mapping[str, float] | None = None,
    force: bool = False,
) -> ExportResult:
    """Introspect, build the ONNX graph, check it against torch, and write the version.

    Raises an ExportError subclass, with nothing written, when any step fails.
    """
    version = resolve_version(repository, name, version, force=force)
    spec = introspect(module, head=head)
    check_annotations(spec, labels=labels, feature_names=feature_names)
    model_bytes: bytes = build_onnx(spec, normalization=normalization).SerializeToString()
    session = open_session(model_bytes)
    check_dynamic_axes(session, spec)
    parity = check_parity(module, spec, session, normalization=normalization)
    card = build_card(
        spec,
        name=name,
        version=version,
        description=description,
        labels=labels,
        feature_names=feature_names,
        normalization=normalization,
        parity=parity,
        metrics=metrics,
        model_bytes=model_bytes,
    )
    path = write_version(
        repository, name=name, version=version, model_bytes=model_bytes, card=card, force=force
    )
    return ExportResult(path=path, card=card, parity=parity)


def recheck_parity(directory: Path, module: nn.Module) -> ParityReport:
    """Check an existing `models/<name>/<version>` entry against `module` (say, a checkpoint).

    Raises ExportError when the entry and the module disagree in shape or in outputs.
    """
    card = read_card(directory)
    spec = introspect(module, head=card.get("head"))
    expected = structure_fields(spec)
    differences = [
        f"{key} {expected[key]!r} vs card {card.get(key)!r}"
        for key in STRUCTURE_FIELDS
        if expected[key] != card.get(key)
    ]
    if differences:
        raise ExportError(f"the module does not match {directory}: {'; '.join(differences)}")
    path = directory / MODEL_FILE
    try:
        model_bytes = path.read_bytes()
    except OSError as exc:
        raise RepositoryError(f"cannot read {path}: {exc.strerror}") from exc
    if hashlib.sha256(model_bytes).hexdigest() != card.get("onnx_sha256"):
        raise RepositoryError(f"{path} does not match the card's onnx_sha256")
    normalization = _normalization_from_card(card.get("normalization"))
    session = open_session(model_bytes)
    check_dynamic_axes(session, spec)
    return check_parity(module, spec, session, normalization=normalization)


def _normalization_from_card(value: Any) -> Normalization | None:
    if value is None:
        return None
    try:
        return Normalization(**value)
    except TypeError as exc:
        raise RepositoryError(f"the card's normalization is malformed: {describe(exc)}") from exc
