"""Every call the gRPC edge makes into the V2 core, in one place.

When the V2 operations move (the operations layer), only this module changes: the servicer
decodes protobuf, calls these, and encodes what they return.
"""

from __future__ import annotations

from typing import Any

from service.core.version import LoadedModel
from service.edges.v2 import protocol
from service.edges.v2.codec import InferRequest
from service.edges.v2.config import model_config
from service.edges.v2.contract import ContractSpecs, contract_specs
from service.edges.v2.protocol import InferAnswer
from service.edges.v2.repository_index import repository_index
from service.edges.v2.stats import model_statistics
from service.engine import Engine


def resolve_model(engine: Engine, name: str, version: str) -> tuple[LoadedModel, ContractSpecs]:
    """The ready model version a request names ("" = default) and its V2 tensor specs."""
    model = protocol.ready_model(engine, name, version)
    return model, contract_specs(model.card)


async def run_v2_infer(
    engine: Engine,
    *,
    model: LoadedModel,
    version: str,
    request: InferRequest,
    owner: str | None,
) -> InferAnswer:
    """The V2 infer operation, exactly as the HTTP edge calls it."""
    return await protocol.run_infer(
        engine, model=model, pinned=version, request=request, owner=owner
    )


def server_metadata(version: str) -> dict[str, Any]:
    """Name, version and extensions, as `GET /v2` answers."""
    return protocol.server_metadata(version)


def model_metadata(engine: Engine, name: str, version: str) -> dict[str, Any]:
    """The model metadata, as `GET /v2/models/{m}` answers."""
    return protocol.describe(engine, name, version)


def configuration(engine: Engine, name: str, version: str) -> dict[str, Any]:
    """The Triton model configuration, as `GET /v2/models/{m}/config` answers."""
    return model_config(protocol.ready_model(engine, name, version), engine.settings)


def statistics(engine: Engine, name: str, version: str) -> dict[str, Any]:
    """Triton's statistics of every model ("" name), one model, or one version."""
    return model_statistics(engine, name or None, version or None)


def index(engine: Engine, *, ready_only: bool) -> list[dict[str, Any]]:
    """The repository index, as `POST /v2/repository/index` answers."""
    return repository_index(engine, ready_only=ready_only)


async def load(engine: Engine, name: str) -> None:
    """Triton's repository load, as `POST /v2/repository/models/{m}/load` does it."""
    await protocol.load_model(engine, name)


async def unload(engine: Engine, name: str) -> None:
    """Triton's repository unload, as `POST /v2/repository/models/{m}/unload` does it."""
    await protocol.unload_model(engine, name)
