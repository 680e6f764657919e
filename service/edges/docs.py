"""OpenAPI docs that work offline (Swagger UI from the installed package) and know API keys.

FastAPI's own `/docs` loads Swagger UI from a CDN and the schema declares no security scheme,
so the docs neither load without the internet nor can send a key. Here the assets come from
`service/ui/static/` and the schema declares both ways a key is accepted.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from service.ui import STATIC_DIR, SWAGGER_UI_DIR

DOCS_ASSETS = "/docs/assets"
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}


def install_docs(app: FastAPI, *, keys_required: bool) -> None:
    """`/docs` from local assets and an OpenAPI schema with the API-key schemes.

    The app must be built with `docs_url=None` so FastAPI's CDN page is not registered, and its
    routes installed first: the document is theirs, with the key schemes added.
    """
    assets = STATIC_DIR / SWAGGER_UI_DIR
    document_of = app.openapi

    def openapi() -> dict[str, Any]:
        document = document_of()  # built once and cached by the app; completing it is idempotent
        document.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        if keys_required:
            # either scheme will do; Swagger UI then sends the key it was given on every call
            document["security"] = [{"bearer": []}, {"apiKey": []}]
        return document

    async def docs_page() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - API docs",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
            # no validator badge: it is an image from validator.swagger.io
            swagger_ui_parameters={"persistAuthorization": True, "validatorUrl": None},
        )

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_api_route("/docs", docs_page, methods=["GET"], include_in_schema=False)
    app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")
