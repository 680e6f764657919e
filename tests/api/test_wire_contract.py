"""Each hot route's one declaration against the running app: its documented example works, its
malformed bodies get their documented status, the OpenAPI document says what the server does,
and `version` is parsed by one rule everywhere."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from service.app import HOT_ROUTES
from service.edges.http.routes import HotRoute
from tests.support.app import Harness, WebSocketClosedError, cpu_settings, running_app
from tests.support.servers import DEMO_REPOSITORY


@pytest.fixture
async def app() -> AsyncIterator[Harness]:
    async with running_app(cpu_settings(DEMO_REPOSITORY)) as harness:
        yield harness


async def url_of(client: httpx.AsyncClient, route: HotRoute) -> str:
    """The route's path with its parameters filled in for its example model."""
    url = route.path.replace("{name}", route.example_model).replace("{version}", "1")
    if "{session_id}" in url:
        opened = await client.post(f"/v1/models/{route.example_model}/sessions")
        url = url.replace("{session_id}", opened.json()["session_id"])
    return url


def assert_error_shape(route: HotRoute, response: httpx.Response) -> None:
    body = response.json()
    if route.v2:
        assert isinstance(body["error"], str) and body["error"]
    else:
        assert set(body["error"]) == {"type", "message", "detail"} and body["error"]["message"]


@pytest.mark.parametrize("route", HOT_ROUTES, ids=[r.path for r in HOT_ROUTES])
async def test_the_documented_example_succeeds(app: Harness, route: HotRoute) -> None:
    response = await app.client.post(await url_of(app.client, route), json=route.example)
    assert response.status_code == route.status, response.text


@pytest.mark.parametrize(
    ("route", "index"),
    [(r, i) for r in HOT_ROUTES for i in range(len(r.malformed))],
    ids=[f"{r.path}-{i}" for r in HOT_ROUTES for i in range(len(r.malformed))],
)
async def test_each_malformed_body_gets_its_documented_error(
    app: Harness, route: HotRoute, index: int
) -> None:
    malformed = route.malformed[index]
    assert malformed.status in route.errors
    response = await app.client.post(
        await url_of(app.client, route),
        content=malformed.body,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == malformed.status, response.text
    assert_error_shape(route, response)
    assert (await app.client.post(await url_of(app.client, route), json=route.example)).is_success


async def test_the_document_declares_every_hot_route_and_no_validation_errors(
    app: Harness,
) -> None:
    document = (await app.client.get("/openapi.json")).json()
    for route in HOT_ROUTES:
        operation = document["paths"][route.path]["post"]
        assert set(operation["responses"]) == {str(route.status), *map(str, route.errors)}
        content = operation["requestBody"]["content"]["application/json"]
        assert content["example"] == route.example
        declared = {p["name"] for p in operation["parameters"]}
        assert declared == {*route.path_names, *(["version"] if route.version_query else [])}
    error_bodies = {"#/components/schemas/ErrorBody", "#/components/schemas/V2ErrorBody"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert "422" not in operation["responses"], (method, path)
            for status, answer in operation["responses"].items():
                if status.startswith(("4", "5")) and "content" in answer:
                    schema = answer["content"]["application/json"]["schema"]
                    # a reference to one of the error bodies, or one inlined
                    assert schema.get("$ref") in error_bodies or "error" in schema.get(
                        "properties", {}
                    ), (method, path, status)
    assert "HTTPValidationError" not in document.get("components", {}).get("schemas", {})


V1_VERSION_ROUTES = [
    ("POST", "/v1/models/digits-rnn/predict", {"inputs": [[[0] * 8]]}),
    ("GET", "/v1/models/digits-rnn", None),
    ("POST", "/v1/models/co2-forecaster/sessions", None),
]


@pytest.mark.parametrize("bad", ["zero", "0", "-1", "1.5", "1e3"])
async def test_a_bad_version_is_the_same_400_on_every_route(app: Harness, bad: str) -> None:
    for method, path, body in V1_VERSION_ROUTES:
        response = await app.client.request(method, f"{path}?version={bad}", json=body)
        assert response.status_code == 400, (path, response.text)
        error = response.json()["error"]
        assert error["type"] == "invalid_input"
        assert error["message"] == f"version must be a positive integer, got {bad!r}"
    v2 = await app.client.get(f"/v2/models/digits-rnn/versions/{bad}")
    assert v2.status_code == 400
    assert v2.json() == {"error": f"version must be a positive integer, got {bad!r}"}
    with pytest.raises(WebSocketClosedError) as closed:
        async with app.ws(f"/v1/models/co2-forecaster/stream?version={bad}") as ws:
            frame = await ws.receive_json()
            assert frame["error"]["type"] == "invalid_input"
            assert frame["error"]["message"] == f"version must be a positive integer, got {bad!r}"
            await ws.receive_json()
    assert closed.value.code == 4400


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ([0, 0, 5, 13, 9, 1, 0, True], "inputs[0][0][7]: true is not a number"),
        ([0, 0, 5, 13, 9, 1, 0, "a"], 'inputs[0][0][7]: "a" is not a number'),
        ([0, 0, 5, 13, None, 1, 0, 0], "inputs[0][0][4]: null is not a number"),
        (
            [0, 0, 5, 13, 9, 1, 0, [1]],
            "inputs[0]: ragged or nested lists; a sequence holds steps of equal length, each a "
            "flat list of numbers (or one token id)",
        ),
    ],
)
async def test_a_value_that_is_not_a_number_is_named_with_its_place(
    app: Harness, step: list[Any], message: str
) -> None:
    good = [0.0] * 8
    response = await app.client.post(
        "/v1/models/digits-rnn/predict", json={"inputs": [[step, good]]}
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == message


async def test_metrics_name_the_document_and_docs_routes(app: Harness) -> None:
    await app.client.get("/openapi.json")
    await app.client.get("/docs")
    metrics = (await app.client.get("/metrics")).text
    assert 'route="/openapi.json",status="200"' in metrics
    assert 'route="/docs",status="200"' in metrics
    assert 'route="unmatched"' not in metrics
