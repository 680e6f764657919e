"""Just enough of a Dockerfile reader to check what the image copies, sets and runs."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
DOCKERFILE = ROOT / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    """One instruction, continuation lines joined, with the stage it belongs to."""

    keyword: str
    args: str
    stage: str
    line: int


@dataclass(frozen=True)
class Copy:
    """A COPY: `from_stage` is None for files taken from the build context."""

    sources: tuple[str, ...]
    destination: str
    from_stage: str | None
    stage: str


@dataclass(frozen=True)
class Healthcheck:
    """HEALTHCHECK options (`--interval` ...) and its exec-form command."""

    options: dict[str, str]
    command: list[str]


@dataclass(frozen=True)
class Dockerfile:
    """The parsed instructions and each stage's parent (a stage name or an image)."""

    instructions: tuple[Instruction, ...]
    parents: dict[str, str]

    @property
    def final_stage(self) -> str:
        """The stage `docker build` produces without --target."""
        return self.instructions[-1].stage

    def in_stage(self, stage: str, keyword: str) -> list[Instruction]:
        """The stage's own instructions with this keyword, in order."""
        return [i for i in self.instructions if i.stage == stage and i.keyword == keyword]

    def lineage(self, stage: str) -> list[str]:
        """The stage and the stages it is built FROM, base first."""
        chain = [stage]
        while self.parents.get(chain[-1]) in self.parents:
            chain.append(self.parents[chain[-1]])
        return chain[::-1]

    def env(self, stage: str) -> dict[str, str]:
        """ENV in effect in `stage` (inherited ones included), values as written."""
        values: dict[str, str] = {}
        for name in self.lineage(stage):
            for instruction in self.in_stage(name, "ENV"):
                for token in shlex.split(instruction.args):
                    key, _, value = token.partition("=")
                    values[key] = value
        return values

    def copies(self) -> list[Copy]:
        """Every COPY instruction."""
        found = []
        for instruction in self.instructions:
            if instruction.keyword != "COPY":
                continue
            words = shlex.split(instruction.args)
            flags = [w for w in words if w.startswith("--")]
            paths = [w for w in words if not w.startswith("--")]
            from_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
            found.append(Copy(tuple(paths[:-1]), paths[-1], from_stage, instruction.stage))
        return found

    def cmd(self) -> list[str]:
        """The final stage's exec-form CMD."""
        cmds = [i for s in self.lineage(self.final_stage) for i in self.in_stage(s, "CMD")]
        command: list[str] = json.loads(cmds[-1].args)
        return command

    def healthcheck(self) -> Healthcheck:
        """The final stage's HEALTHCHECK."""
        checks = [
            i for s in self.lineage(self.final_stage) for i in self.in_stage(s, "HEALTHCHECK")
        ]
        options_text, _, command = checks[-1].args.partition("CMD ")
        options = dict(o.removeprefix("--").split("=", 1) for o in options_text.split())
        return Healthcheck(options, json.loads(command))


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Continuation lines joined, comment lines dropped (also inside continuations)."""
    lines: list[tuple[int, str]] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append((start, pending + stripped))
        pending = ""
    return lines


def parse_dockerfile(path: Path = DOCKERFILE) -> Dockerfile:
    """Read a Dockerfile into instructions tagged with their stage."""
    instructions = []
    parents: dict[str, str] = {}
    stage = ""
    for number, line in _logical_lines(path.read_text()):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.IGNORECASE)
            assert match, f"unreadable FROM at line {number}"
            stage = match.group(2) or f"stage-{len(parents)}"
            parents[stage] = match.group(1)
        instructions.append(Instruction(keyword, args.strip(), stage, number))
    return Dockerfile(tuple(instructions), parents)


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether Docker leaves `path` out of the build context (last matching pattern wins;
    a pattern that matches a parent directory matches everything under it)."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _pattern_regex(pattern.removeprefix("!"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    pattern = pattern.strip("/")
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def read_dockerignore(path: Path = ROOT / ".dockerignore") -> list[str]:
    """The patterns of a .dockerignore file, comments and blank lines dropped."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]
