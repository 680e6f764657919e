"""The model repository: `models/<name>/<version>/{model.onnx, model.json}`, loaded and checked.

A broken version never takes the server down: it is kept as unavailable with the reason,
unless the repository is loaded strictly.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from service.core.card import MODEL_NAME_PATTERN, ModelCard
from service.core.providers import DEFAULT_PROVIDERS, ProviderConfig
from service.core.runtime import ModelRunner, choose_providers
from service.core.version import LoadedModel, load_version, read_card
from service.errors import (
    ModelNotFoundError,
    ModelUnavailableError,
    ProviderUnavailableError,
    RepositoryError,
)

log = logging.getLogger(__name__)


class ModelStatus(StrEnum):
    """Whether a model version can serve."""

    READY = "ready"
    UNAVAILABLE = "unavailable"
    UNLOADED = "unloaded"


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One model version as found on disk; `runner` is set only when it is ready."""

    name: str
    version: int
    path: Path
    status: ModelStatus
    card: ModelCard | None = None
    runner: ModelRunner | None = None
    reason: str | None = None


def require_repository(root: Path) -> None:
    """RepositoryError, saying how to fix it, when `root` is not a directory."""
    if not root.is_dir():
        raise RepositoryError(
            f"model repository {root} is not a directory; point RNNSERVE_REPOSITORY (or "
            "--repository) at one, or export a model into it with `rnnserve export`"
        )


def _version_dirs(root: Path) -> Iterator[tuple[str, int, Path]]:
    require_repository(root)
    # hidden directories are the exporter's atomic-write scratch space
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not re.fullmatch(MODEL_NAME_PATTERN, model_dir.name):
            log.warning("skipping %s: not a valid model name", model_dir)
            continue
        versions = (p for p in model_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        for version_dir in sorted(versions):
            if version_dir.name.isdigit() and int(version_dir.name) >= 1:
                yield model_dir.name, int(version_dir.name), version_dir
            else:
                log.warning("skipping %s: versions are positive integers", version_dir)


def load_entry(
    name: str,
    version: int,
    path: Path,
    *,
    providers: list[str],
    intra_op_threads: int,
    strict: bool = False,
    config: ProviderConfig = DEFAULT_PROVIDERS,
) -> ModelEntry:
    """One version from disk: ready, or unavailable with the one-line reason (with `strict`,
    or a model not on the required provider, RepositoryError instead)."""
    try:
        model = load_version(
            path, providers=providers, intra_op_threads=intra_op_threads, config=config
        )
    except RepositoryError as exc:
        if strict or isinstance(exc, ProviderUnavailableError):
            raise
        log.error("model %s v%d unavailable: %s", name, version, exc.message)
        return ModelEntry(
            name, version, path, ModelStatus.UNAVAILABLE, _card_or_none(path), reason=exc.message
        )
    log.info(
        "loaded model %s v%d on %s",
        name,
        version,
        model.runner.provider,
        extra={"model": name, "version": version, "provider": model.runner.provider},
    )
    return ModelEntry(name, version, path, ModelStatus.READY, model.card, model.runner)


@dataclass(frozen=True, slots=True)
class RepositoryChange:
    """What a rescan, load or unload did: versions that now serve, and versions that stopped."""

    added: list[ModelEntry]
    removed: list[ModelEntry]


class Repository:
    """Every model version found on disk, ready or not.

    Versions are immutable once exported: a rescan loads versions that appeared and drops
    versions whose directory went away, and never touches a loaded one. A broken new version is
    listed unavailable and never replaces a working one (the default is the highest ready).
    """

    def __init__(
        self,
        entries: list[ModelEntry],
        *,
        root: Path | None = None,
        providers: list[str] | None = None,
        intra_op_threads: int = 1,
        config: ProviderConfig = DEFAULT_PROVIDERS,
    ) -> None:
        self._entries: dict[str, dict[int, ModelEntry]] = {}
        for entry in entries:
            self._entries.setdefault(entry.name, {})[entry.version] = entry
        self._root = root
        self._providers = providers or ["CPUExecutionProvider"]
        self._intra_op_threads = intra_op_threads
        self._config = config

    @classmethod
    def load(
        cls,
        root: Path,
        *,
        providers: list[str],
        intra_op_threads: int,
        strict: bool = False,
        config: ProviderConfig = DEFAULT_PROVIDERS,
    ) -> Repository:
        """Scan `root`; with `strict`, the first broken version raises RepositoryError, and a
        version off `config.required` always raises ProviderUnavailableError."""
        if not config.requested:
            config = replace(config, requested=tuple(providers))
        providers = choose_providers(providers, config)
        entries = [
            load_entry(
                name,
                version,
                path,
                providers=providers,
                intra_op_threads=intra_op_threads,
                strict=strict,
                config=config,
            )
            for name, version, path in _version_dirs(root)
        ]
        return cls(
            entries,
            root=root,
            providers=providers,
            intra_op_threads=intra_op_threads,
            config=config,
        )

    def scan(self, only: str | None = None) -> RepositoryChange:
        """Load the versions that appeared on disk (of `only`, or of every model) and find the
        versions whose directory is gone; unloaded versions are loaded again when `only` names
        their model. Changes nothing: `apply` does. Blocking: call it off the event loop."""
        if self._root is None:
            raise RepositoryError("this repository was not loaded from a directory")
        found = {
            (name, version): path
            for name, version, path in _version_dirs(self._root)
            if only is None or name == only
        }
        if only is not None and not found:
            raise ModelNotFoundError(
                f"model {only!r} is not in the repository", detail={"model": only}
            )
        added: list[ModelEntry] = []
        removed: list[ModelEntry] = []
        for (name, version), path in sorted(found.items()):
            known = self._entries.get(name, {}).get(version)
            reload = known is not None and known.status is ModelStatus.UNLOADED and only == name
            if known is None or reload:
                added.append(
                    load_entry(
                        name,
                        version,
                        path,
                        providers=self._providers,
                        intra_op_threads=self._intra_op_threads,
                        config=self._config,
                    )
                )
        for name in [only] if only is not None else list(self._entries):
            removed += [
                entry
                for version, entry in self._entries.get(name, {}).items()
                if (name, version) not in found
            ]
        return RepositoryChange(added, removed)

    def apply(self, change: RepositoryChange) -> None:
        """Make a change visible (on the event loop: request handlers read the entries)."""
        for entry in change.removed:
            versions = self._entries.get(entry.name, {})
            if versions.get(entry.version) is entry:
                del versions[entry.version]
            if not versions:
                self._entries.pop(entry.name, None)
        for entry in change.added:
            self._entries.setdefault(entry.name, {})[entry.version] = entry

    def unload(self, name: str) -> RepositoryChange:
        """The change that stops serving every version of `name`: each is listed as unloaded
        until loaded again (`apply` makes it so)."""
        versions = self._entries.get(name)
        if not versions:
            raise ModelNotFoundError(f"model {name!r} not found", detail={"model": name})
        removed = [e for e in versions.values() if e.status is not ModelStatus.UNLOADED]
        unloaded = [
            ModelEntry(
                e.name,
                e.version,
                e.path,
                ModelStatus.UNLOADED,
                e.card,
                reason="unloaded through the repository API; load it to serve it again",
            )
            for e in removed
        ]
        return RepositoryChange(unloaded, removed)

    def entries(self) -> list[ModelEntry]:
        """All versions, sorted by name then version."""
        return [e for name in sorted(self._entries) for _, e in sorted(self._entries[name].items())]

    def versions(self, name: str) -> list[ModelEntry]:
        """All versions of one model; ModelNotFoundError when the name is unknown."""
        if name not in self._entries:
            raise ModelNotFoundError(f"model {name!r} not found", detail={"model": name})
        return [e for _, e in sorted(self._entries[name].items())]

    def entry(self, name: str, version: int | None = None) -> ModelEntry:
        """One version (default: the highest ready one, else the highest)."""
        versions = self._entries.get(name)
        if not versions:
            raise ModelNotFoundError(f"model {name!r} not found", detail={"model": name})
        if version is None:
            ready = [v for v, e in versions.items() if e.status is ModelStatus.READY]
            version = max(ready or versions)
        if version not in versions:
            raise ModelNotFoundError(
                f"model {name!r} has no version {version}; it has {sorted(versions)}",
                detail={"model": name, "version": version},
            )
        return versions[version]

    def get(self, name: str, version: int | None = None) -> LoadedModel:
        """A ready model version, or the error that says why not."""
        entry = self.entry(name, version)
        if entry.status is ModelStatus.UNLOADED:
            raise ModelNotFoundError(
                f"model {name!r} v{entry.version} was unloaded; load it again to serve it",
                detail={"model": name, "version": entry.version},
            )
        if entry.runner is None or entry.card is None:
            raise ModelUnavailableError(
                f"model {name!r} v{entry.version} is unavailable: {entry.reason}",
                retry_after_s=60.0,
                detail={"model": name, "version": entry.version},
            )
        return LoadedModel(name, entry.version, entry.card, entry.runner)

    def ready_models(self) -> list[LoadedModel]:
        """Every ready version."""
        return [self.get(e.name, e.version) for e in self.entries() if e.runner is not None]


def _card_or_none(path: Path) -> ModelCard | None:
    try:
        return read_card(path)
    except RepositoryError:
        return None
