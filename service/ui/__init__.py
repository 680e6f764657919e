"""Static files of the live page (/ui) and the offline API docs (/docs), shipped in the wheel.

`static/vendor/` holds third-party files copied unchanged from their npm packages (pinned
versions in the folder names, each licence alongside); nothing is fetched at run time.
"""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
UPLOT_DIR = "vendor/uplot-1.6.32"
SWAGGER_UI_DIR = "vendor/swagger-ui-dist-5.35.0"
