"""The live page and the API docs are served from the package, work offline, and know API keys."""

from __future__ import annotations

import re

import pytest

from service.settings import Settings
from tests.support.app import app_client, cpu_settings
from tests.support.servers import DEMO_REPOSITORY

ASSET = re.compile(r'(?:src|href)="([^"]+)"')


async def test_docs_load_swagger_ui_from_the_server_not_a_cdn() -> None:
    async for client in app_client(cpu_settings(DEMO_REPOSITORY)):
        page = await client.get("/docs")
        assert page.status_code == 200
        assets = ASSET.findall(page.text)
        assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
        for asset in assets:
            assert asset.startswith("/"), f"{asset} is not served by rnnserve"
            assert (await client.get(asset)).status_code == 200, asset
        assert "cdn" not in page.text.lower()
        assert (await client.get("/redoc")).status_code == 404  # ReDoc would need a CDN


async def test_the_schema_declares_the_api_key_schemes_and_requires_them_when_keys_are_set() -> (
    None
):
    async for client in app_client(cpu_settings(DEMO_REPOSITORY)):
        schema = (await client.get("/openapi.json")).json()
        assert set(schema["components"]["securitySchemes"]) == {"bearer", "apiKey"}
        assert "security" not in schema
    async for client in app_client(cpu_settings(DEMO_REPOSITORY, api_keys=["k1"])):
        assert (await client.get("/docs")).status_code == 200  # a page without data: open
        schema = (await client.get("/openapi.json")).json()
        assert schema["security"] == [{"bearer": []}, {"apiKey": []}]
        assert schema["components"]["securitySchemes"]["apiKey"]["name"] == "X-API-Key"
        assert (await client.get("/v1/models")).status_code == 401


async def test_the_page_and_its_files_are_served_and_reference_only_the_server() -> None:
    async for client in app_client(cpu_settings(DEMO_REPOSITORY, api_keys=["k1"])):
        page = await client.get("/ui")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assets = ASSET.findall(page.text)
        assert "ui/static/app.js" in assets
        for asset in assets:
            if asset.startswith("data:"):
                continue
            assert "://" not in asset, f"{asset} would need the internet"
            response = await client.get(f"/{asset}")
            assert response.status_code == 200, asset
        series = (await client.get("/ui/static/co2.json")).json()
        assert series["months"] == len(series["values"]) == 526
        assert (await client.get("/ui/static/nope.js")).status_code == 404


async def test_rnnserve_ui_false_removes_the_page(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNNSERVE_UI", "false")
    assert Settings().ui is False
    async for client in app_client(cpu_settings(DEMO_REPOSITORY, ui=False)):
        assert (await client.get("/ui")).status_code == 404
        assert (await client.get("/ui/static/app.js")).status_code == 404
        assert (await client.get("/health/ready")).status_code == 200
