"""The exporter's public Python API: export a module, recheck an entry, load a user's module."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from export.card import CARD_FORMAT, build_card, check_annotations, structure_fields
from export.errors import (
    ExportError,
    ParityError,
    RepositoryError,
    UnsupportedModuleError,
    describe,
)
from export.introspect import Head
from export.loading import load_user_module
from export.onnx_export import Normalization
from export.properties import Properties, measure
from export.refusal import source_of
from export.repository import MODEL_FILE, read_card, resolve_version, write_version
from export.routes import Route, choose_route
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
    lengths_arg: str | None = None,
    seq_first: bool | None = None,
) -> ExportResult:
    """Choose a route, build the ONNX graph, measure what it is, check it against torch, and
    write the version.

    `lengths_arg` names forward's lengths parameter when its name does not say so;
    `seq_first` overrides the layout read from the recurrent layers. Raises an ExportError
    subclass, with nothing written, when any step fails.
    """
    version = resolve_version(repository, name, version, force=force)
    options: dict[str, Any] = {
        "head": None if head is None else Head(head).value,
        "normalization": normalization,
        "lengths_arg": lengths_arg,
        "seq_first": seq_first,
    }
    route = choose_route(module, **options)
    check_annotations(route.io, labels=labels, feature_names=feature_names)
    try:
        model_bytes, properties, parity = _build_and_check(route, module, normalization)
    except ParityError:
        if route.io.method != "template":
            raise
        # The template looked right on a probe but not on the grid (forward branches, say):
        # the traced route follows forward itself, or names what it cannot follow.
        route = choose_route(module, **options, template=False)
        model_bytes, properties, parity = _build_and_check(route, module, normalization)
    card = build_card(
        route.io,
        name=name,
        version=version,
        description=description,
        labels=labels,
        feature_names=feature_names,
        normalization=normalization,
        properties=properties,
        parity=parity,
        metrics=metrics,
        model_bytes=model_bytes,
    )
    path = write_version(
        repository, name=name, version=version, model_bytes=model_bytes, card=card, force=force
    )
    return ExportResult(path=path, card=card, parity=parity)


def _build_and_check(
    route: Route, module: nn.Module, normalization: Normalization | None
) -> tuple[bytes, Properties, ParityReport]:
    """Build the graph, measure its properties and check parity; a scan graph that misses
    parity is refused with the reason the decomposition failed."""
    model_bytes = route.build()
    session = open_session(model_bytes)
    check_dynamic_axes(session, route.io)
    properties = measure(session, route.io)
    try:
        parity = check_parity(
            route.io,
            route.reference,
            session,
            normalization=normalization,
            padding_safe=properties.padding_safe,
        )
    except ParityError as exc:
        if route.parity_hint is not None:
            raise ParityError(f"{route.parity_hint} ({exc})") from exc
        if route.io.method != "scan":
            raise
        raise UnsupportedModuleError(
            f"the loop over time in {source_of(module)} is not one cell step repeated: the "
            "one-step graph scanned over time does not reproduce forward, so the loop's body is "
            f"not the same at every step or the output mixes time steps ({exc})"
        ) from exc
    return model_bytes, properties, parity


def recheck_parity(
    directory: Path,
    module: nn.Module,
    *,
    lengths_arg: str | None = None,
    seq_first: bool | None = None,
) -> ParityReport:
    """Check an existing `models/<name>/<version>` entry against `module` (say, a checkpoint).

    Raises ExportError when the entry and the module disagree in shape or in outputs.
    """
    card = _as_format_2(read_card(directory), directory)
    normalization = _normalization_from_card(card.get("normalization"))
    route = choose_route(
        module,
        head=card.get("head"),
        normalization=normalization,
        lengths_arg=lengths_arg,
        seq_first=seq_first,
        template=card.get("export_method") == "template",
    )
    expected = structure_fields(route.io)
    differences = [
        line for key in expected for line in _differences(key, expected[key], card.get(key))
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
    session = open_session(model_bytes)
    check_dynamic_axes(session, route.io)
    return check_parity(
        route.io,
        route.reference,
        session,
        normalization=normalization,
        padding_safe=bool(card.get("padding_safe", True)),
    )


def _as_format_2(card: dict[str, Any], directory: Path) -> dict[str, Any]:
    """Rechecks compare the format 2 fields; older cards are re-exported instead."""
    if card.get("format") != CARD_FORMAT:
        raise RepositoryError(
            f"{directory} has a format {card.get('format', 1)} card; parity rechecks read format "
            f"{CARD_FORMAT} (layers, states): export the checkpoint again to write one"
        )
    return card


def _differences(path: str, mine: Any, theirs: Any) -> list[str]:
    """`path value vs card value` for each leaf that differs; layer names are informational
    (a checkpoint's module may call its layers otherwise)."""
    if isinstance(mine, dict) and isinstance(theirs, dict):
        return [
            line
            for key in mine
            if key != "name" or not path.startswith("layers")
            for line in _differences(f"{path}.{key}", mine[key], theirs.get(key))
        ]
    if isinstance(mine, list) and isinstance(theirs, list) and len(mine) == len(theirs):
        return [
            line
            for i, (a, b) in enumerate(zip(mine, theirs, strict=True))
            for line in _differences(f"{path}[{i}]", a, b)
        ]
    return [] if mine == theirs else [f"{path} {mine!r} vs card {theirs!r}"]


def _normalization_from_card(value: Any) -> Normalization | None:
    if value is None:
        return None
    try:
        return Normalization(**value)
    except TypeError as exc:
        raise RepositoryError(f"the card's normalization is malformed: {describe(exc)}") from exc
