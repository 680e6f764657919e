"""Load a user's module: import a class or factory by file path, build it, load a checkpoint."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from export.errors import ModuleLoadError, describe

# Training loops often save {"state_dict": ..., "epoch": ...}; accept that wrapper too.
_WRAPPER_KEYS = ("state_dict", "model_state_dict")


def load_user_module(spec: str, checkpoint: Path, init_kwargs: Mapping[str, Any]) -> nn.Module:
    """Build `NAME(**init_kwargs)` from `FILE.py:NAME` (or `package.module:NAME`, such as
    `torch.nn:LSTM`) and load its state_dict from `checkpoint` with weights_only=True."""
    factory = _resolve(spec)
    try:
        module = factory(**init_kwargs)
    except Exception as exc:
        raise ModuleLoadError(
            f"calling {spec}(**{dict(init_kwargs)!r}) failed: {describe(exc)}"
        ) from exc
    if not isinstance(module, nn.Module):
        raise ModuleLoadError(f"{spec} returned {type(module).__name__}, not a torch nn.Module")
    state = _read_state_dict(checkpoint)
    _check_keys(module, state, checkpoint)
    try:
        module.load_state_dict(state)
    except Exception as exc:
        raise ModuleLoadError(f"loading {checkpoint} into {spec} failed: {describe(exc)}") from exc
    return module.eval()


def _resolve(spec: str) -> Any:
    source, sep, name = spec.rpartition(":")
    if not sep and not spec.endswith(".py"):
        # `torch.nn.LSTM` reads as `torch.nn:LSTM`.
        source, _, name = spec.rpartition(".")
    if not source or not name:
        raise ModuleLoadError(f"--module {spec!r} should look like FILE.py:NAME or package:NAME")
    namespace = _import_file(Path(source)) if source.endswith(".py") else _import_package(source)
    if not hasattr(namespace, name):
        own = sorted(
            n
            for n, v in vars(namespace).items()
            if callable(v) and getattr(v, "__module__", None) == namespace.__name__
        )
        defines = f"; it defines: {', '.join(own)}" if own else ""
        raise ModuleLoadError(f"{source} has no {name!r}{defines}")
    return getattr(namespace, name)


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise ModuleLoadError(f"module file not found: {path}")
    module_name = f"rnnserve_user_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ModuleLoadError(f"cannot import {path} as Python source")
    namespace = importlib.util.module_from_spec(spec)
    # Registered before running so dataclasses and pickling inside the file resolve it.
    sys.modules[module_name] = namespace
    try:
        spec.loader.exec_module(namespace)
    except Exception as exc:
        del sys.modules[module_name]
        raise ModuleLoadError(f"importing {path} failed: {describe(exc)}") from exc
    return namespace


def _import_package(dotted: str) -> ModuleType:
    try:
        return importlib.import_module(dotted)
    except Exception as exc:
        raise ModuleLoadError(f"cannot import {dotted}: {describe(exc)}") from exc


def _read_state_dict(checkpoint: Path) -> dict[str, torch.Tensor]:
    if not checkpoint.is_file():
        raise ModuleLoadError(f"checkpoint not found: {checkpoint}")
    try:
        loaded = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModuleLoadError(
            f"cannot load {checkpoint} with weights_only=True ({describe(exc)}); "
            "save model.state_dict(), not the whole module"
        ) from exc
    if isinstance(loaded, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
    if not isinstance(loaded, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise ModuleLoadError(f"{checkpoint} does not hold a state_dict of tensors")
    return dict(loaded)


def _check_keys(module: nn.Module, state: Mapping[str, torch.Tensor], checkpoint: Path) -> None:
    """Name the missing, unexpected and mis-shaped keys, which load_state_dict buries."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mis_shaped = [
        f"{key} {list(state[key].shape)} vs module {list(expected[key].shape)}"
        for key in sorted(set(expected) & set(state))
        if state[key].shape != expected[key].shape
    ]
    problems = [
        f"{label}: {_listing(keys)}"
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatch", mis_shaped),
        )
        if keys
    ]
    if problems:
        raise ModuleLoadError(
            f"{checkpoint} does not match the module's state_dict; {'; '.join(problems)}"
        )


def _listing(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return f"{shown} and {len(items) - limit} more" if len(items) > limit else shown
