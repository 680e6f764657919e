"""The image's dependency layer, read from pyproject.toml so the Dockerfile never repeats it.

`onnxruntime` (CPU) and `onnxruntime-gpu` are alternative wheels that install into the same
`onnxruntime/` package: installing both leaves whichever came last, half overwritten. So the
`lines` command drops the base `onnxruntime` requirement and adds exactly one runtime wheel, and
`check` fails the build if the other one, or torch, ended up installed anyway.

    python requirements.py lines --runtime gpu --extra redis [--onnxruntime-version 1.31.1]
    python requirements.py check --runtime gpu
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

RUNTIME_WHEELS = {"cpu": "onnxruntime", "gpu": "onnxruntime-gpu"}
NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?")


def canonical(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """The normalised project name a requirement line installs."""
    match = NAME.match(requirement)
    if match is None:
        raise ValueError(f"cannot read a project name from {requirement!r}")
    return canonical(match.group(1))


def pin(requirement: str, version: str) -> str:
    """The same project and extras, pinned to exactly `version` (markers are not used here)."""
    match = NAME.match(requirement)
    if match is None:
        raise ValueError(f"cannot read a project name from {requirement!r}")
    return f"{match.group(1)}{match.group(2) or ''}=={version}"


def requirement_lines(
    pyproject: Path, *, runtime: str, extras: list[str], onnxruntime_version: str | None
) -> list[str]:
    """Base dependencies without the CPU wheel, then one onnxruntime wheel, then the extras."""
    project = tomllib.loads(pyproject.read_text())["project"]
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    base: list[str] = project["dependencies"]
    wheel_name = RUNTIME_WHEELS[runtime]
    candidates = base if runtime == "cpu" else optional["gpu"]
    wheels = [r for r in candidates if requirement_name(r) == wheel_name]
    if len(wheels) != 1:
        raise ValueError(f"expected one {wheel_name} requirement in pyproject, found {wheels}")
    wheel = pin(wheels[0], onnxruntime_version) if onnxruntime_version else wheels[0]
    lines = [r for r in base if requirement_name(r) != RUNTIME_WHEELS["cpu"]] + [wheel]
    for extra in extras:
        for requirement in optional[extra]:
            if requirement_name(requirement) == canonical(project["name"]):
                raise ValueError(f"extra {extra!r} refers to the project itself: {requirement}")
            lines.append(requirement)
    return lines


def installed(name: str) -> bool:
    """Whether a distribution of that name is importable from this interpreter."""
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return True


def check_installed(runtime: str) -> list[str]:
    """What is wrong with the installed set for `runtime`; empty when the image is as intended."""
    wanted = RUNTIME_WHEELS[runtime]
    problems = [f"{wanted} is not installed"] if not installed(wanted) else []
    problems += [
        f"{name} is installed next to {wanted}"
        for name in RUNTIME_WHEELS.values()
        if name != wanted and installed(name)
    ]
    if installed("torch"):
        problems.append("torch is installed: the serving image must not carry it")
    if runtime == "gpu" and not problems:
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            problems.append("onnxruntime does not offer CUDAExecutionProvider")
    return problems


def main(argv: list[str] | None = None) -> int:
    """`lines` prints requirements for pip; `check` exits 1 naming each problem."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    lines = sub.add_parser("lines", help="print the requirements for the dependency layer")
    lines.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    lines.add_argument("--runtime", choices=sorted(RUNTIME_WHEELS), required=True)
    lines.add_argument("--extra", action="append", default=[], help="an optional-dependencies key")
    lines.add_argument("--onnxruntime-version", default="", help="pin the runtime wheel exactly")
    check = sub.add_parser("check", help="verify the installed distributions")
    check.add_argument("--runtime", choices=sorted(RUNTIME_WHEELS), required=True)
    args = parser.parse_args(argv)
    if args.command == "lines":
        found = requirement_lines(
            args.pyproject,
            runtime=args.runtime,
            extras=args.extra,
            onnxruntime_version=args.onnxruntime_version or None,
        )
        print("\n".join(found))
        return 0
    problems = check_installed(args.runtime)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
