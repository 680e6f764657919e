"""README's console walk-throughs as data: each `$ curl ...` with the output printed under it.

The image tests replay them against a container and compare answers field by field: ids and
timestamps by type only, numbers to float32 print precision, everything else exactly.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass
from typing import Any

from tests.deploy.dockerfile import ROOT

README = ROOT / "README.md"
CONSOLE_BLOCK = re.compile(r"```console\n(.*?)```", re.DOTALL)
VOLATILE = {"session_id", "created_at", "expires_at"}


@dataclass(frozen=True)
class Exchange:
    """One shell command from README and the output README shows for it."""

    command: str
    output: str


def console_exchanges(block: str) -> list[Exchange]:
    """Commands (continued over lines until their quotes close) and the lines they printed."""
    exchanges: list[Exchange] = []
    lines = block.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line.startswith("$ "):
            continue
        command = line[2:]
        while not _complete(command) and index < len(lines):
            command += "\n" + lines[index]
            index += 1
        output = []
        while index < len(lines) and not lines[index].startswith("$ "):
            output.append(lines[index])
            index += 1
        exchanges.append(Exchange(command, "\n".join(output)))
    return exchanges


def _complete(command: str) -> bool:
    try:
        shlex.split(command, comments=True)
    except ValueError:
        return False
    return True


def walkthroughs() -> list[list[Exchange]]:
    """Every console block of README whose commands are curl calls to the local server."""
    blocks = [console_exchanges(b) for b in CONSOLE_BLOCK.findall(README.read_text())]
    local = [b for b in blocks if any("localhost:8000" in e.command for e in b)]
    return [b for b in local if any(e.command.startswith("curl") for e in b)]


def matches(expected: Any, actual: Any) -> bool:
    """README's printed JSON against a live answer (see the module docstring)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict) or set(expected) != set(actual):
            return False
        return all(
            isinstance(actual[k], type(v)) if k in VOLATILE else matches(v, actual[k])
            for k, v in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(matches(e, a) for e, a in zip(expected, actual, strict=True))
        )
    if isinstance(expected, float) or isinstance(actual, float):
        return isinstance(actual, int | float) and math.isclose(expected, actual, rel_tol=1e-5)
    return bool(expected == actual)


def parse_output(text: str) -> Any:
    """README's output as a JSON object or array; None where README shortened it (`...`) or
    printed something else (a status code)."""
    if "..." in text:
        return None
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict | list) else None
