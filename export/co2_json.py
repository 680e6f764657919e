"""Write the monthly CO2 series the live page plots: `python -m export.co2_json [PATH]`.

The page needs the real series next to the forecaster's outputs, and the server must not
depend on statsmodels (an export-side package), so the series is written once, from the very
`load_co2` the forecaster was trained on, into the page's static files; the wheel ships it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from export.datasets import load_co2

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "service" / "ui" / "static" / "co2.json"


def co2_document() -> dict[str, object]:
    """The series as JSON: first month, unit, source, and one float32-exact value per month."""
    series = load_co2()
    return {
        "name": "Mauna Loa monthly mean CO2",
        "unit": "ppm",
        "source": "statsmodels.datasets.co2, weekly values averaged per month (export.datasets)",
        "first_month": str(series.months[0]),
        "months": len(series.values),
        # float32 printed with shortest repr: the exact values the model was trained on
        "values": [float(f"{v:.9g}") for v in series.values.tolist()],
    }


def main(argv: list[str]) -> int:
    """Write the document to argv[0] or the page's static folder."""
    path = Path(argv[0]) if argv else DEFAULT_PATH
    path.write_text(json.dumps(co2_document(), separators=(",", ":")) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
