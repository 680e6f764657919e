"""Writes `models/<name>/<version>/{model.onnx, model.json}` so no reader sees a half entry.

Files go to a hidden temporary folder beside the version and are renamed into place; the
service skips names that are not positive integers, so it never loads the temporary folder.
A forced replace moves the old folder aside just before renaming the new one in: a reader sees
the old version, for an instant none, or the new one, never a mix of files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from export.errors import RepositoryError

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
MODEL_FILE = "model.onnx"
CARD_FILE = "model.json"


def check_name(name: str) -> None:
    """Raise RepositoryError unless `name` is a valid model name."""
    if not NAME_PATTERN.fullmatch(name):
        raise RepositoryError(
            f"invalid model name {name!r}: use 1-64 of a-z 0-9 . _ -, "
            "starting with a letter or digit"
        )


def existing_versions(repository: Path, name: str) -> list[int]:
    """The versions present for `name`, ascending."""
    model_dir = repository / name
    if not model_dir.is_dir():
        return []
    found = (p.name for p in model_dir.iterdir() if p.is_dir())
    return sorted(int(v) for v in found if v.isdigit() and int(v) > 0)


def resolve_version(repository: Path, name: str, version: int | None, *, force: bool) -> int:
    """The version to write: `version` if free (or `force`), else the highest existing + 1."""
    check_name(name)
    versions = existing_versions(repository, name)
    if version is None:
        return (versions[-1] + 1) if versions else 1
    if version < 1:
        raise RepositoryError(f"version must be a positive integer, got {version}")
    if version in versions and not force:
        raise RepositoryError(_exists_message(repository / name / str(version)))
    return version


def write_version(
    repository: Path,
    *,
    name: str,
    version: int,
    model_bytes: bytes,
    card: Mapping[str, Any],
    force: bool = False,
) -> Path:
    """Write one version atomically and return its folder; `force` replaces an existing one."""
    check_name(name)
    model_dir = repository / name
    target = model_dir / str(version)
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        staging = model_dir / f".tmp-{version}-{uuid.uuid4().hex}"
        staging.mkdir()
    except OSError as exc:
        raise RepositoryError(f"cannot create {model_dir}: {exc.strerror}") from exc
    try:
        _write_file(staging / MODEL_FILE, model_bytes)
        _write_file(staging / CARD_FILE, (json.dumps(card, indent=2) + "\n").encode())
        _install(staging, target, force=force)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise RepositoryError(f"cannot write {target}: {exc.strerror or exc}") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def read_card(directory: Path) -> dict[str, Any]:
    """The card of an existing entry, as a dict."""
    path = directory / CARD_FILE
    try:
        card = json.loads(path.read_text())
    except OSError as exc:
        raise RepositoryError(f"cannot read {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise RepositoryError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(card, dict):
        raise RepositoryError(f"{path} does not hold a JSON object")
    return card


def _write_file(path: Path, data: bytes) -> None:
    with path.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _install(staging: Path, target: Path, *, force: bool) -> None:
    """Rename the staged folder into place; with `force`, move the old one aside first."""
    if target.exists() and not force:
        raise RepositoryError(_exists_message(target))
    if target.exists():
        retired = target.with_name(f".old-{target.name}-{uuid.uuid4().hex}")
        try:
            target.rename(retired)
            staging.rename(target)
        except OSError as exc:
            if retired.exists() and not target.exists():
                retired.rename(target)
            raise RepositoryError(f"cannot replace {target}: {exc.strerror}") from exc
        shutil.rmtree(retired, ignore_errors=True)
        return
    try:
        staging.rename(target)
    except OSError as exc:
        if target.exists():
            # Another export won the race for this version between our check and the rename.
            raise RepositoryError(_exists_message(target)) from exc
        raise


def _exists_message(target: Path) -> str:
    return f"{target} already exists; pass force=True (--force) to replace it, or pick a version"
