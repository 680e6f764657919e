"""The live page: `GET /ui` and its static files under `/ui/static/` (RNNSERVE_UI=false: off).

The page holds no data of its own; everything it shows comes from the v1 API it calls from
the browser, with the API key typed into the page when keys are set. So the page and its
files are served without a key (ApiKeyMiddleware leaves `/ui` open), the data is not.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.responses import FileResponse
from starlette.staticfiles import StaticFiles

from service.ui import STATIC_DIR


async def ui_page() -> FileResponse:
    """The page itself; its scripts, styles and data files live under /ui/static/."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


def install_ui(app: FastAPI) -> None:
    """Serve the page and its files on `app`."""
    app.add_api_route("/ui", ui_page, methods=["GET"], include_in_schema=False)
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
