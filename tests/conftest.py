"""Shared fixtures: random models built through the real exporter, apps, real server processes.

Markers follow the folder (tests/unit, tests/api, tests/e2e, tests/export...), so `-m` selects
a layer. Only the fixtures that export import torch, and only when a test asks for them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.support.app import app_client, cpu_settings
from tests.support.servers import DEMO_REPOSITORY, ServerProcess, start_server

if TYPE_CHECKING:
    from tests.support.models import RandomRepository

LAYER_MARKERS = ("unit", "api", "e2e", "export", "deploy", "bench")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with its layer, taken from the folder it lives in."""
    tests_root = Path(__file__).parent
    for item in items:
        layer = item.path.relative_to(tests_root).parts[0]
        if layer in LAYER_MARKERS:
            item.add_marker(layer)


@pytest.fixture(scope="session")
def random_repository(tmp_path_factory: pytest.TempPathFactory) -> RandomRepository:
    """Every model in RANDOM_MODELS, exported once per test session."""
    from tests.support.models import export_random_repository

    return export_random_repository(tmp_path_factory.mktemp("models"))


@pytest.fixture
async def client(random_repository: RandomRepository) -> AsyncIterator[httpx.AsyncClient]:
    """In-process client over the random repository with default settings."""
    async for c in app_client(cpu_settings(random_repository.path)):
        yield c


@pytest.fixture
async def demo_client() -> AsyncIterator[httpx.AsyncClient]:
    """In-process client over the committed demo models."""
    async for c in app_client(cpu_settings(DEMO_REPOSITORY)):
        yield c


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Any]:
    """Start real servers; every one started is stopped at teardown."""
    started: list[ServerProcess] = []

    def start(repository: Path, **kwargs: Any) -> ServerProcess:
        server = start_server(repository, tmp_path, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
