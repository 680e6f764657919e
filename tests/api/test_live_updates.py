"""New model versions without a restart: Triton's repository load/unload routes and the poller.

A version exported next to a running server serves after a load (or the next poll); a broken
one is reported and never replaces a working one; unloading lets queued work finish and gives
sessions pinned to the version a 404 naming it; readiness, the index and the metrics follow."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import httpx
import pytest

from tests.support.app import Harness, cpu_settings, running_app
from tests.support.models import RandomRepository

MODEL = "gru1"
STEP = [[0.5, -0.5]]


@pytest.fixture
def repository(random_repository: RandomRepository, tmp_path: Path) -> Path:
    """A private repository holding one version of one model."""
    shutil.copytree(random_repository.path / MODEL, tmp_path / MODEL)
    return tmp_path


def add_version(repository: Path, version: int, *, broken: bool = False) -> None:
    """Copy v1 as `version`, as the exporter would write it (or with a corrupt graph)."""
    source, target = repository / MODEL / "1", repository / MODEL / str(version)
    shutil.copytree(source, target)
    card = json.loads((target / "model.json").read_text())
    card["version"] = version
    (target / "model.json").write_text(json.dumps(card))
    if broken:
        (target / "model.onnx").write_bytes(b"not a graph")


async def predict(client: httpx.AsyncClient, version: int | None = None) -> httpx.Response:
    query = "" if version is None else f"?version={version}"
    return await client.post(f"/v1/models/{MODEL}/predict{query}", json={"inputs": [STEP]})


def ready_gauge(app: Harness, version: int) -> float:
    labels = {"model": MODEL, "version": str(version), "provider": "CPUExecutionProvider"}
    return app.metric("rnnserve_model_ready", labels)


async def test_a_version_exported_while_serving_serves_after_a_load(repository: Path) -> None:
    async with running_app(cpu_settings(repository)) as app:
        add_version(repository, 2)
        assert (await predict(app.client, 2)).status_code == 404  # not loaded yet
        loaded = await app.client.post(f"/v2/repository/models/{MODEL}/load")
        assert loaded.status_code == 200, loaded.text
        assert (await predict(app.client)).json()["version"] == 2  # the new default
        assert (await predict(app.client, 1)).status_code == 200  # pinned requests keep working
        assert ready_gauge(app, 2) == 1
        ready = (await app.client.get("/health/ready")).json()
        assert ready["models"] == {f"{MODEL}/1": "ready", f"{MODEL}/2": "ready"}


async def test_a_broken_new_version_is_reported_and_never_replaces_the_working_one(
    repository: Path,
) -> None:
    async with running_app(cpu_settings(repository)) as app:
        add_version(repository, 2, broken=True)
        loaded = await app.client.post(f"/v2/repository/models/{MODEL}/load")
        assert loaded.status_code == 200  # v1 still serves: the load is not a failure
        assert (await predict(app.client)).json()["version"] == 1
        index = (await app.client.post("/v2/repository/index")).json()
        v2 = next(i for i in index if i["version"] == "2")
        assert v2["state"] == "UNAVAILABLE" and "sha256" in v2["reason"]
        assert ready_gauge(app, 2) == 0
        assert (await app.client.get("/health/ready")).json()["unavailable"] == 1


async def test_a_model_with_no_version_that_loads_is_a_400_naming_the_reasons(
    repository: Path,
) -> None:
    async with running_app(cpu_settings(repository)) as app:
        await app.client.post(f"/v2/repository/models/{MODEL}/unload")
        (repository / MODEL / "1" / "model.onnx").write_bytes(b"corrupted while unloaded")
        failed = await app.client.post(f"/v2/repository/models/{MODEL}/load")
        assert failed.status_code == 400
        assert "no version that can serve" in failed.json()["error"]
        assert "v1: " in failed.json()["error"] and "sha256" in failed.json()["error"]
        shutil.rmtree(repository / MODEL)
        gone = await app.client.post(f"/v2/repository/models/{MODEL}/load")
        assert gone.status_code == 404 and "not in the repository" in gone.json()["error"]


async def test_unload_finishes_queued_work_and_pinned_sessions_get_a_404_naming_it(
    repository: Path,
) -> None:
    async with running_app(cpu_settings(repository)) as app:
        opened = await app.client.post(f"/v1/models/{MODEL}/sessions")
        session = opened.json()["session_id"]
        in_flight = [asyncio.ensure_future(predict(app.client)) for _ in range(16)]
        await asyncio.sleep(0)
        unloaded = await app.client.post(f"/v2/repository/models/{MODEL}/unload")
        assert unloaded.status_code == 200, unloaded.text
        answers = await asyncio.gather(*in_flight)
        assert {a.status_code for a in answers} <= {200, 404}
        assert any(a.status_code == 200 for a in answers)  # queued before the unload: answered
        for late in (a for a in answers if a.status_code == 404):
            assert "unloaded" in late.json()["error"]["message"]
        step = await app.client.post(
            f"/v1/sessions/{session}/steps", json={"seq": 0, "inputs": STEP}
        )
        assert step.status_code == 404
        assert f"{MODEL}' v1 was unloaded" in step.json()["error"]["message"]
        assert ready_gauge(app, 1) == 0
        assert (await app.client.get("/health/ready")).json()["models"] == {
            f"{MODEL}/1": "unloaded"
        }
        # loading it again serves it, and the session carries on where it was
        assert (await app.client.post(f"/v2/repository/models/{MODEL}/load")).status_code == 200
        step = await app.client.post(
            f"/v1/sessions/{session}/steps", json={"seq": 0, "inputs": STEP}
        )
        assert step.status_code == 200 and step.json()["seq"] == 1


async def test_load_and_unload_refuse_parameters_they_cannot_honour(repository: Path) -> None:
    async with running_app(cpu_settings(repository)) as app:
        for action in ("load", "unload"):
            refused = await app.client.post(
                f"/v2/repository/models/{MODEL}/{action}",
                json={"parameters": {"config": "{}"}},
            )
            assert refused.status_code == 400 and "not supported" in refused.json()["error"]
        unknown = await app.client.post("/v2/repository/models/nope/unload")
        assert unknown.status_code == 404


async def test_with_polling_a_new_version_serves_without_any_call(repository: Path) -> None:
    settings = cpu_settings(repository, repository_poll_s=0.05)
    async with running_app(settings) as app:
        add_version(repository, 2)
        for _ in range(200):  # bounded: the poller runs every 50 ms
            if ready_gauge(app, 2) == 1:
                break
            await asyncio.sleep(0.05)
        assert (await predict(app.client)).json()["version"] == 2
        shutil.rmtree(repository / MODEL / "2")  # a version whose directory went away
        for _ in range(200):
            if ready_gauge(app, 2) == 0:
                break
            await asyncio.sleep(0.05)
        assert (await predict(app.client)).json()["version"] == 1
