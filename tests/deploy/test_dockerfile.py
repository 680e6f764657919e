"""The Dockerfile lints clean and agrees with the package: paths, entry point, port, health."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import import_module
from pathlib import Path

from service.app import create_app
from service.cli import build_parser
from service.settings import Settings
from tests.deploy.dockerfile import (
    ROOT,
    Dockerfile,
    dockerignore_excludes,
    read_dockerignore,
)
from tests.support.app import app_client, cpu_settings

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
REQUIREMENTS_SCRIPT = ROOT / "deploy" / "requirements.py"
HADOLINT = Path(sys.executable).parent / "hadolint"


def requirement_lines(*args: str) -> list[str]:
    """What deploy/requirements.py prints for the image's dependency layer."""
    done = subprocess.run(
        [sys.executable, str(REQUIREMENTS_SCRIPT), "lines", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return done.stdout.split()


def build_args(dockerfile: Dockerfile) -> dict[str, str]:
    """ARG defaults of every stage."""
    found = {}
    for instruction in dockerfile.instructions:
        if instruction.keyword == "ARG":
            name, _, default = instruction.args.partition("=")
            found[name] = default
    return found


def test_hadolint_reports_no_findings_at_any_level(tmp_path: Path) -> None:
    empty_config = tmp_path / "hadolint.yaml"
    empty_config.write_text("{}\n")
    done = subprocess.run(
        [
            str(HADOLINT),
            "--config",
            str(empty_config),
            "--disable-ignore-pragma",
            "--failure-threshold",
            "style",
            "--format",
            "tty",
            "--no-color",
            str(ROOT / "Dockerfile"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and done.stdout.strip() == "", done.stdout + done.stderr


def test_images_come_from_pinned_slim_python_tags(dockerfile: Dockerfile) -> None:
    images = [parent for parent in dockerfile.parents.values() if parent not in dockerfile.parents]
    assert images
    for image in images:
        assert re.fullmatch(r"python:3\.1[12]\.\d+-slim(-\w+)?", image), image


def test_every_copied_path_exists_and_is_inside_the_build_context(dockerfile: Dockerfile) -> None:
    patterns = read_dockerignore()
    context_copies = [copy for copy in dockerfile.copies() if copy.from_stage is None]
    assert context_copies
    for copy in context_copies:
        for source in copy.sources:
            path = ROOT / source
            assert path.exists(), f"the Dockerfile copies {source}, which is not in the repository"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            for file in files:
                relative = file.relative_to(ROOT).as_posix()
                if "__pycache__" in relative or relative.endswith(".pyc"):
                    continue
                assert not dockerignore_excludes(patterns, relative), (
                    f".dockerignore drops {relative}"
                )


def test_build_context_leaves_out_the_venv_tests_and_the_torch_side() -> None:
    patterns = read_dockerignore()
    for path in (".venv/bin/python", "tests/conftest.py", "export/onnx_export.py", ".git/HEAD"):
        assert dockerignore_excludes(patterns, path), path
    assert dockerignore_excludes(patterns, "service/__pycache__/app.cpython-312.pyc")


def test_source_layer_comes_after_the_dependency_layer(dockerfile: Dockerfile) -> None:
    builder = [i for i in dockerfile.instructions if i.stage == "builder"]
    dependency_install = next(i for i in builder if "--requirement" in i.args)
    source_copy = next(i for i in builder if i.keyword == "COPY" and "service/" in i.args)
    assert dependency_install.line < source_copy.line
    copied_before = [
        i.args for i in builder if i.keyword == "COPY" and i.line < dependency_install.line
    ]
    assert copied_before == ["pyproject.toml deploy/requirements.py ./"]


def test_runtime_stage_takes_only_the_venv_and_the_models(dockerfile: Dockerfile) -> None:
    runtime = [c for c in dockerfile.copies() if c.stage == dockerfile.final_stage]
    assert [(c.from_stage, c.sources, c.destination) for c in runtime] == [
        ("builder", ("/opt/venv",), "/opt/venv"),
        (None, ("models/",), "/models/"),
    ]
    copied = {s for c in dockerfile.copies() for s in c.sources}
    assert not copied & {"export/", "export", "bench/", "tests/", "."}


def test_image_installs_one_onnxruntime_wheel_and_no_torch(dockerfile: Dockerfile) -> None:
    version = build_args(dockerfile)["ONNXRUNTIME_VERSION"]
    gpu = requirement_lines(
        "--runtime", "gpu", "--extra", "redis", "--onnxruntime-version", version
    )
    cpu = requirement_lines(
        "--runtime", "cpu", "--extra", "redis", "--onnxruntime-version", version
    )
    assert f"onnxruntime-gpu[cuda,cudnn]=={version}" in gpu
    assert f"onnxruntime=={version}" in cpu
    base = [r for r in PYPROJECT["project"]["dependencies"] if not r.startswith("onnxruntime")]
    for lines in (gpu, cpu):
        assert lines[: len(base)] == base
        assert [r for r in lines if r.startswith("onnxruntime")] == [lines[len(base)]]
        assert PYPROJECT["project"]["optional-dependencies"]["redis"][0] in lines
        assert not [r for r in lines if r.startswith("torch")]


def test_gpu_extra_asks_for_the_cuda_and_cudnn_wheels_onnxruntime_gpu_declares() -> None:
    # PyPI metadata: onnxruntime-gpu declares the extras `cuda` and `cudnn` from 1.21.0 on
    # (1.20 has none, so `[cuda,cudnn]` would silently install no CUDA libraries there).
    (gpu,) = PYPROJECT["project"]["optional-dependencies"]["gpu"]
    match = re.fullmatch(r"onnxruntime-gpu\[cuda,cudnn\]>=(\d+)\.(\d+)", gpu)
    assert match, gpu
    assert (int(match.group(1)), int(match.group(2))) >= (1, 21)


def test_install_check_fails_the_build_when_the_gpu_wheel_is_missing() -> None:
    # This venv has the CPU wheel and torch: the check must name both problems, not pass.
    done = subprocess.run(
        [sys.executable, str(REQUIREMENTS_SCRIPT), "check", "--runtime", "gpu"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert "onnxruntime-gpu is not installed" in done.stderr
    assert "onnxruntime is installed next to onnxruntime-gpu" in done.stderr
    assert "torch is installed" in done.stderr


def test_cmd_runs_the_console_script_pyproject_declares(dockerfile: Dockerfile) -> None:
    command = dockerfile.cmd()
    scripts = PYPROJECT["project"]["scripts"]
    assert command[0] in scripts
    module, _, function = scripts[command[0]].partition(":")
    assert callable(getattr(import_module(module), function))
    assert command[1:4] == ["serve", "--host", "0.0.0.0"]
    parsed = build_parser().parse_args(command[1:])
    assert parsed.command == "serve" and parsed.host == "0.0.0.0"


def test_exposed_ports_are_the_ports_the_server_listens_on(dockerfile: Dockerfile) -> None:
    final = dockerfile.final_stage
    exposed = [i.args for s in dockerfile.lineage(final) for i in dockerfile.in_stage(s, "EXPOSE")]
    default_port = Settings.model_fields["port"].default
    env = dockerfile.env(final)
    # HTTP on the default port, gRPC on Triton's 8001 (RNNSERVE_GRPC_PORT turns it on)
    assert exposed == [f"{default_port} {env['RNNSERVE_GRPC_PORT']}"]
    assert env["RNNSERVE_PORT"] == str(default_port)
    assert env["RNNSERVE_GRPC_PORT"] == "8001"
    assert "--port" not in dockerfile.cmd(), "the port comes from RNNSERVE_PORT alone"


async def test_healthcheck_probes_the_readiness_route_of_the_app(
    dockerfile: Dockerfile, tmp_path: Path
) -> None:
    check = dockerfile.healthcheck()
    assert check.command[:2] == ["python", "-c"]
    script = check.command[2]
    assert "os.environ.get('RNNSERVE_PORT', '8000')" in script
    (route,) = re.findall(r"'(/health/[a-z]+)'", script)
    assert route == "/health/ready"
    assert {"interval", "timeout", "start-period", "retries"} <= check.options.keys()
    settings = cpu_settings(tmp_path)
    assert route in create_app(settings).openapi()["paths"]
    async for client in app_client(settings):
        assert (await client.get(route)).status_code == 200


def test_server_runs_unprivileged_and_unbuffered(dockerfile: Dockerfile) -> None:
    final = dockerfile.final_stage
    (user,) = [i.args for i in dockerfile.in_stage(final, "USER")]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) >= 1000 and gid.isdigit()
    useradd = next(i.args for i in dockerfile.in_stage(final, "RUN") if "useradd" in i.args)
    assert f"--uid {uid}" in useradd
    assert dockerfile.env(final)["PYTHONUNBUFFERED"] == "1"


def test_repository_variable_points_at_the_baked_in_models(dockerfile: Dockerfile) -> None:
    models_copy = next(c for c in dockerfile.copies() if c.sources == ("models/",))
    repository = dockerfile.env(dockerfile.final_stage)["RNNSERVE_REPOSITORY"]
    assert repository.rstrip("/") == models_copy.destination.rstrip("/")
