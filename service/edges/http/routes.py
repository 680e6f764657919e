"""Hot routes, each declared once: the declaration drives routing, OpenAPI and the tests.

Predict, streaming steps and V2 infer are plain Starlette routes matched before FastAPI's
routes: FastAPI's per-request dependency solving and parameter validation cost about as much
as a whole streaming step (bench/RESULTS.md), and these endpoints parse their own inputs with
the codecs anyway. A `HotRoute` holds what FastAPI would otherwise derive: the body schema (a
pydantic model, for the document only), the path and query parameters, the answer, the error
statuses, a working example and malformed ones (tests post every one of them).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from service.edges.http.schemas import ErrorBody, V2ErrorBody, inline_schema

Endpoint = Callable[[Request], Awaitable[Response]]

VERSION_PARAMETER: dict[str, Any] = {
    "name": "version",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 1},
    "description": "pin a model version (default: the highest ready one)",
}


@dataclass(frozen=True)
class Malformed:
    """A body the route must refuse, and the status it must answer."""

    body: bytes
    status: int


@dataclass(frozen=True)
class HotRoute:
    """One hot route: everything routing, the OpenAPI document and the tests need.

    `example` (sent to the demo model `example_model`; a `{session_id}` is a fresh session on
    it) must succeed; each of `malformed` must get its status.
    """

    path: str
    endpoint: Endpoint
    summary: str
    tag: str
    body: type[BaseModel] | None
    answer: type[BaseModel] | None
    errors: tuple[int, ...]
    example_model: str
    example: dict[str, Any]
    malformed: tuple[Malformed, ...]
    version_query: bool = False
    v2: bool = False
    status: int = 200
    extra_content: dict[str, Any] = field(default_factory=dict)

    @property
    def path_names(self) -> list[str]:
        """The `{name}` segments of the path."""
        return [part[1:-1] for part in self.path.split("/") if part.startswith("{")]

    def operation(self) -> dict[str, Any]:
        """The OpenAPI operation object for this route."""
        parameters: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in self.path_names
        ]
        if self.version_query:
            parameters.append(VERSION_PARAMETER)
        content: dict[str, Any] = {}
        if self.body is not None:
            content["application/json"] = {
                "schema": inline_schema(self.body),
                "example": self.example,
            }
        content.update(self.extra_content)
        responses: dict[str, Any] = {
            str(self.status): {
                "description": "OK",
                "content": {
                    "application/json": {
                        "schema": inline_schema(self.answer) if self.answer else {}
                    }
                },
            }
        }
        error_schema = inline_schema(V2ErrorBody if self.v2 else ErrorBody)
        for status in self.errors:
            responses[str(status)] = {
                "description": "error",
                "content": {"application/json": {"schema": error_schema}},
            }
        return {
            "tags": [self.tag],
            "summary": self.summary,
            "description": (self.endpoint.__doc__ or "").strip(),
            "operationId": re.sub(r"[^a-z0-9]+", "_", self.path.lower()).strip("_"),
            "parameters": parameters,
            "requestBody": {"required": True, "content": content},
            "responses": responses,
        }


class TemplatedRoute(Route):
    """A Starlette route that records itself in the scope, as FastAPI's routes do, so metrics
    and logs see the route template rather than the raw path."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = self
        await super().handle(scope, receive, send)


def install_hot_routes(app: FastAPI, routes: Sequence[HotRoute]) -> None:
    """Route the hot routes ahead of FastAPI's, and merge them into the OpenAPI document."""
    for route in reversed(routes):
        app.router.routes.insert(0, TemplatedRoute(route.path, route.endpoint, methods=["POST"]))

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            for route in routes:
                document["paths"].setdefault(route.path, {})["post"] = route.operation()
            drop_validation_errors(document)
            link_session_routes(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


SESSION = "/v1/sessions/{session_id}"
SESSION_ROUTES = {
    "StepSession": (f"{SESSION}/steps", "post"),
    "GetSession": (SESSION, "get"),
    "ExportSessionState": (f"{SESSION}/state", "get"),
    "ResetSession": (f"{SESSION}/reset", "post"),
    "DeleteSession": (SESSION, "delete"),
}


def link_session_routes(document: dict[str, Any]) -> None:
    """OpenAPI links from the routes that name a session to the routes that use it, so that
    clients and stateful fuzzers (schemathesis) can follow open -> step -> state -> delete."""
    paths = document["paths"]
    targets = {
        name: paths[path][method]["operationId"]
        for name, (path, method) in SESSION_ROUTES.items()
        if method in paths.get(path, {})
    }

    def links(source: str) -> dict[str, Any]:
        return {
            name: {"operationId": op, "parameters": {"session_id": source}}
            for name, op in targets.items()
        }

    opened = paths.get("/v1/models/{name}/sessions", {}).get("post")
    if opened is not None:
        opened["responses"]["201"]["links"] = links("$response.body#/session_id")
    for path, method in SESSION_ROUTES.values():
        operation = paths.get(path, {}).get(method)
        ok = next((c for c in ("200", "204") if c in (operation or {}).get("responses", {})), None)
        if operation is not None and ok is not None:
            operation["responses"][ok]["links"] = links("$request.path.session_id")


def drop_validation_errors(document: dict[str, Any]) -> None:
    """Remove FastAPI's generated 422 answers: every route parses its own inputs and answers
    400 with the v1 (or V2) error body, so a 422 with `{"detail": [...]}` never happens."""
    for operations in document["paths"].values():
        for operation in operations.values():
            operation.get("responses", {}).pop("422", None)
    schemas = document.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
