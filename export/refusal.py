"""Turn a failure inside torch into one line naming the construct and the user's file:line.

The user's source is the file that defines the module's class (and its submodules' classes).
The line is the deepest frame of the traceback in one of those files, or the recorded stack
of the graph node that failed; without either, the forward's own definition line.
"""

from __future__ import annotations

import inspect
import re
import traceback
from pathlib import Path

from torch import nn

_TORCH_ROOT = str(Path(nn.__file__).resolve().parents[1])


def user_files(module: nn.Module) -> set[str]:
    """Source files of the module's class and its submodules' classes, outside torch."""
    files = set()
    for sub in module.modules():
        try:
            path = inspect.getsourcefile(type(sub))
        except TypeError:
            continue
        if path is not None and not str(Path(path).resolve()).startswith(_TORCH_ROOT):
            files.add(str(Path(path).resolve()))
    return files


def _short(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return path


def source_of(module: nn.Module, exc: BaseException | None = None) -> str:
    """`file.py:line` of the failure in the user's code, or of the module's forward."""
    files = user_files(module)
    if exc is not None:
        located = _from_traceback(exc, files) or _from_text(exc, files)
        if located is not None:
            return located
    forward = type(module).forward
    try:
        path = inspect.getsourcefile(forward) or "?"
        line = inspect.getsourcelines(forward)[1]
    except (TypeError, OSError):
        return type(module).__qualname__
    return f"{_short(path)}:{line}"


def _from_traceback(exc: BaseException, files: set[str]) -> str | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    found: str | None = None
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for frame in traceback.extract_tb(current.__traceback__):
            if str(Path(frame.filename).resolve()) in files:
                found = f"{_short(frame.filename)}:{frame.lineno}"
        if found is not None:
            return found
        current = current.__cause__ or current.__context__
    return None


_FRAME = re.compile(r'File "([^"]+)", line (\d+)')


def _from_text(exc: BaseException, files: set[str]) -> str | None:
    """torch.export reports the user's frames inside its message text."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        hits = [
            f"{_short(path)}:{line}"
            for path, line in _FRAME.findall(str(current))
            if str(Path(path).resolve()) in files
        ]
        if hits:
            return hits[-1]
        current = current.__cause__ or current.__context__
    return None


def stack_location(stack_trace: str | None, module: nn.Module) -> str | None:
    """The user's deepest file:line in a graph node's recorded stack trace."""
    if not stack_trace:
        return None
    files = user_files(module)
    hits = [
        f"{_short(path)}:{line}"
        for path, line in _FRAME.findall(stack_trace)
        if str(Path(path).resolve()) in files
    ]
    return hits[-1] if hits else None


def calling_line(module: nn.Module) -> str | None:
    """The user's deepest file:line on the current call stack (called from inside a hook)."""
    files = user_files(module)
    hits = [
        f"{_short(frame.filename)}:{frame.lineno}"
        for frame in traceback.extract_stack()
        if str(Path(frame.filename).resolve()) in files
    ]
    return hits[-1] if hits else None
