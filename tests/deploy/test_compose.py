"""docker-compose.yml validates with Compose v2 and describes what issues 4 and 7 ask for."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.conftest import COMPOSE_CPU_FILE, COMPOSE_FILE, Compose
from tests.deploy.dockerfile import ROOT, Dockerfile

KEYS = {"RNNSERVE_API_KEYS": "key-one,key-two"}


def services(compose: Compose, *files: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The normalised services of the merged files."""
    project: dict[str, Any] = compose.config(*files, env={**KEYS, **(env or {})}).model()
    found: dict[str, Any] = project["services"]
    return found


def test_compose_validates_unknown_keys_so_a_pass_means_something(
    compose: Compose, tmp_path: Path
) -> None:
    broken = tmp_path / "compose.yml"
    broken.write_text("services:\n  rnnserve:\n    image: rnnserve:gpu\n    replica: 2\n")
    run = compose.config(broken)
    assert run.returncode != 0
    assert "additional properties 'replica' not allowed" in run.stderr


@pytest.mark.parametrize(
    "files", [(COMPOSE_FILE,), (COMPOSE_FILE, COMPOSE_CPU_FILE)], ids=["gpu", "cpu"]
)
def test_compose_files_validate(compose: Compose, files: tuple[Path, ...]) -> None:
    assert set(services(compose, *files)) == {"redis", "rnnserve", "front"}


def test_missing_api_keys_stop_compose_with_the_message(compose: Compose) -> None:
    run = compose.config()
    assert run.returncode != 0
    assert "required variable RNNSERVE_API_KEYS is missing a value" in run.stderr
    assert "comma-separated API keys" in run.stderr


def test_replicas_share_redis_and_wait_for_it_to_be_healthy(compose: Compose) -> None:
    rnnserve = services(compose)["rnnserve"]
    assert rnnserve["deploy"]["replicas"] >= 2
    environment = rnnserve["environment"]
    assert environment["RNNSERVE_SESSION_STORE"] == "redis://redis:6379/0"
    assert environment["RNNSERVE_API_KEYS"] == KEYS["RNNSERVE_API_KEYS"]
    assert rnnserve["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "ports" not in rnnserve, "replicas are reached through the front only"


def test_replica_count_is_a_variable(compose: Compose) -> None:
    rnnserve = services(compose, env={"RNNSERVE_REPLICAS": "4"})["rnnserve"]
    assert rnnserve["deploy"]["replicas"] == 4


def test_gpu_variant_reserves_an_nvidia_gpu(compose: Compose) -> None:
    rnnserve = services(compose)["rnnserve"]
    (device,) = rnnserve["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert device["capabilities"] == ["gpu"]
    assert rnnserve["build"]["args"]["RUNTIME"] == "gpu"
    providers = rnnserve["environment"]["RNNSERVE_PROVIDERS"].split(",")
    assert providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_cpu_variant_builds_the_cpu_wheel_and_reserves_no_gpu(compose: Compose) -> None:
    rnnserve = services(compose, COMPOSE_FILE, COMPOSE_CPU_FILE)["rnnserve"]
    assert rnnserve["build"]["args"]["RUNTIME"] == "cpu"
    assert rnnserve["environment"]["RNNSERVE_PROVIDERS"] == "CPUExecutionProvider"
    assert not rnnserve.get("deploy", {}).get("resources", {}).get("reservations")
    assert rnnserve["image"] != services(compose)["rnnserve"]["image"]


def test_build_arguments_are_ones_the_dockerfile_declares(
    compose: Compose, dockerfile: Dockerfile
) -> None:
    declared = {i.args.partition("=")[0] for i in dockerfile.instructions if i.keyword == "ARG"}
    for files in ((COMPOSE_FILE,), (COMPOSE_FILE, COMPOSE_CPU_FILE)):
        assert set(services(compose, *files)["rnnserve"]["build"]["args"]) <= declared


def test_models_are_mounted_read_only_over_the_baked_in_repository(
    compose: Compose, dockerfile: Dockerfile, tmp_path: Path
) -> None:
    repository = dockerfile.env(dockerfile.final_stage)["RNNSERVE_REPOSITORY"]
    (volume,) = services(compose)["rnnserve"]["volumes"]
    assert volume["target"] == repository
    assert volume["read_only"] is True
    assert Path(volume["source"]) == ROOT / "models"
    moved = services(compose, env={"RNNSERVE_MODELS_DIR": str(tmp_path)})["rnnserve"]
    assert moved["volumes"][0]["source"] == str(tmp_path)


def test_redis_is_pinned_redis_7_without_persistence_and_with_a_healthcheck(
    compose: Compose,
) -> None:
    redis = services(compose)["redis"]
    assert re.fullmatch(r"redis:7\.\d+\.\d+(-\w+)?", redis["image"]), redis["image"]
    command = redis["command"]
    assert command[command.index("--save") + 1] == ""
    assert command[command.index("--appendonly") + 1] == "no"
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "ports" not in redis and "volumes" not in redis


def test_front_publishes_the_port_and_waits_for_healthy_replicas(compose: Compose) -> None:
    front = services(compose, env={"RNNSERVE_HTTP_PORT": "9000"})["front"]
    assert re.fullmatch(r"nginx:\d+\.\d+\.\d+(-\w+)?", front["image"]), front["image"]
    (port,) = front["ports"]
    assert port["published"] == "9000"
    assert front["depends_on"]["rnnserve"]["condition"] == "service_healthy"
    assert front["depends_on"]["rnnserve"]["restart"] is True
    (config,) = front["volumes"]
    assert Path(config["source"]) == ROOT / "deploy" / "nginx.conf"
    assert config["target"] == "/etc/nginx/nginx.conf" and config["read_only"] is True
    assert f"listen {port['target']};" in (ROOT / "deploy" / "nginx.conf").read_text()


def test_stop_grace_period_outlasts_the_server_shutdown_grace(compose: Compose) -> None:
    rnnserve = services(compose)["rnnserve"]
    grace_s = float(rnnserve["environment"]["RNNSERVE_SHUTDOWN_GRACE_S"])
    match = re.fullmatch(r"(\d+)s", rnnserve["stop_grace_period"])
    assert match and int(match.group(1)) > grace_s
    assert rnnserve["init"] is True
