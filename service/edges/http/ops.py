"""Operations routes: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from service.core.repository import ModelStatus
from service.edges.http.deps import EngineDep, json_response
from service.engine import Engine
from service.errors import StoreUnavailableError

router = APIRouter(tags=["ops"])


@router.get("/health/live", summary="The process answers")
async def live() -> Response:
    """200 as long as the event loop runs."""
    return json_response({"status": "live"})


@router.get("/health/ready", summary="Models loaded and warmed up", responses={503: {}})
async def ready(engine: EngineDep) -> Response:
    """200 once the repository is loaded and every ready model answered its warm-up run."""
    if not engine.ready:
        return json_response({"status": "loading"}, 503, {"Retry-After": "1"})
    entries = engine.repository.entries()
    models = {f"{e.name}/{e.version}": e.status.value for e in entries}
    unavailable = sum(e.status is ModelStatus.UNAVAILABLE for e in entries)
    body: dict[str, Any] = {"status": "ready", "models": models, "unavailable": unavailable}
    # predict never needs the store: a store that is down degrades sessions, not readiness
    body["session_store"] = await store_health(engine)
    return json_response(body)


async def store_health(engine: Engine) -> dict[str, str]:
    """`{"kind", "status": "up" | "degraded"[, "reason"]}`, and the store_up gauge to match."""
    kind = engine.settings.session_store.partition(":")[0]
    try:
        await engine.sessions.store.ping()
    except StoreUnavailableError as exc:
        engine.metrics.store_up.set(0)
        return {"kind": kind, "status": "degraded", "reason": exc.message}
    engine.metrics.store_up.set(1)
    return {"kind": kind, "status": "up"}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(engine: EngineDep) -> Response:
    """Requests, latency, batch sizes, queue depth, sessions, in the text exposition format."""
    return Response(engine.metrics.render(), media_type=CONTENT_TYPE_LATEST)
