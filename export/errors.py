"""The exporter's exception tree: everything it raises on purpose is an `ExportError`.

The CLI prints these as one line; anything else escaping is a bug and keeps its traceback.
"""

from __future__ import annotations


class ExportError(Exception):
    """Base of every error the exporter raises on purpose."""


class UnsupportedModuleError(ExportError):
    """The module is not one recurrent layer with an optional embedding and linear head."""


class ModuleLoadError(ExportError):
    """The user's module file, factory, keyword arguments or checkpoint could not be used."""


class ParityError(ExportError):
    """The ONNX graph does not reproduce the torch module closely enough."""


class RepositoryError(ExportError):
    """A bad model name, an existing version, or a repository entry that cannot be read."""


def describe(exc: BaseException) -> str:
    """One line naming an exception from torch/onnx/user code, for wrapping in an ExportError."""
    text = " ".join(str(exc).split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
