"""deploy/nginx.conf: nginx accepts it, it points at the compose service, and it spreads load
(outside Docker, with loopback replicas: tests/deploy/front.py)."""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.settings import Settings
from tests.deploy.conftest import NGINX_CONF, Compose
from tests.deploy.dockerfile import Dockerfile
from tests.deploy.front import UPSTREAM_SERVER, loopback_config, start_front, wait_until_up
from tests.support.servers import free_port


def test_upstream_is_the_compose_service_on_the_image_port(
    compose: Compose, dockerfile: Dockerfile
) -> None:
    (match,) = UPSTREAM_SERVER.finditer(NGINX_CONF.read_text())
    project = compose.config(env={"RNNSERVE_API_KEYS": "k"}).model()
    assert match.group(2) in project["services"]
    assert project["services"][match.group(2)]["image"].startswith("rnnserve:")
    assert match.group(3) == dockerfile.env(dockerfile.final_stage)["RNNSERVE_PORT"]


def test_nginx_accepts_the_front_config(nginx: str, tmp_path: Path) -> None:
    config = tmp_path / "nginx.conf"
    config.write_text(
        loopback_config(upstream_ports=[8000], listen_port=8080, pid_path=tmp_path / "pid")
    )
    done = subprocess.run(
        [nginx, "-t", "-q", "-c", str(config), "-e", "stderr"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.e2e
@pytest.mark.slow
def test_front_alternates_replicas_keeps_request_ids_and_skips_a_dead_one(
    nginx: str, server_factory: Any, tmp_path: Path
) -> None:
    repository = tmp_path / "models"
    repository.mkdir()
    replicas = [server_factory(repository) for _ in range(2)]
    ports = [int(r.base_url.rsplit(":", 1)[1]) for r in replicas]
    front_port = free_port()
    config = tmp_path / "nginx.conf"
    config.write_text(
        loopback_config(upstream_ports=ports, listen_port=front_port, pid_path=tmp_path / "pid")
    )
    log_path = tmp_path / "nginx.log"
    front = start_front(nginx, config, log_path)
    base = f"http://127.0.0.1:{front_port}"
    try:
        wait_until_up(front, f"{base}/health/live", log_path)
        for i in range(10):
            answer = httpx.get(f"{base}/health/ready", headers={"X-Request-ID": f"deploy-{i}"})
            assert answer.status_code == 200
            assert answer.headers["x-request-id"] == f"deploy-{i}"
        generated = httpx.get(f"{base}/health/ready").headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", generated), generated
        replicas[1].stop()
        after_stop = [httpx.get(f"{base}/health/ready").status_code for _ in range(4)]
        assert after_stop == [200] * 4
    finally:
        front.terminate()
        front.wait(timeout=20)
    used = Counter(re.findall(r"upstream=(\S+) request_id=deploy-", log_path.read_text()))
    assert set(used) == {f"127.0.0.1:{port}" for port in ports}
    assert min(used.values()) >= 3, used


def test_front_body_limit_leaves_the_server_limit_to_answer() -> None:
    (megabytes,) = re.findall(r"client_max_body_size (\d+)m;", NGINX_CONF.read_text())
    assert int(megabytes) * 1024 * 1024 > Settings.model_fields["max_body_bytes"].default
