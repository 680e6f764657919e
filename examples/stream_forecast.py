"""Stream a monthly series into the forecaster one value at a time over REST.

    python examples/stream_forecast.py [--url http://127.0.0.1:8000] [--model co2-forecaster]
                                       [--csv values.csv]

The server keeps the recurrent hidden state between calls, so each request carries only the
newest value. Every step is sent with its `seq`; when a request times out the client simply
sends the same request again: the server answers a repeated step from its record instead of
applying it twice. Needs only httpx. Default data: Mauna Loa monthly mean CO2 (ppm),
January 1992 to December 2001, from the statsmodels `co2` dataset.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from typing import Any

import httpx

CO2_1992_2001 = [
    355.9, 356.68, 357.9, 359.08, 359.54, 359.12, 357.0, 354.86, 353.02, 353.42, 354.2, 355.35,
    356.68, 357.17, 358.42, 359.33, 360.18, 359.5, 357.42, 355.33, 353.77, 354.06, 355.35, 356.77,
    358.32, 358.9, 359.92, 361.22, 361.65, 360.9, 359.46, 357.38, 355.92, 356.02, 357.58, 359.06,
    359.98, 360.92, 361.58, 363.36, 363.7, 363.25, 361.8, 359.38, 358.0, 357.85, 359.48, 360.7,
    362.02, 363.17, 364.06, 364.7, 365.33, 364.88, 363.48, 361.32, 359.4, 359.62, 360.74, 362.38,
    363.12, 363.88, 364.56, 366.33, 366.68, 365.48, 364.38, 362.46, 360.15, 360.75, 362.38, 364.25,
    365.34, 366.2, 367.38, 368.52, 369.14, 368.75, 367.6, 365.72, 363.92, 364.32, 365.55, 366.92,
    368.12, 368.85, 369.6, 370.98, 370.84, 370.25, 369.0, 366.7, 364.67, 365.14, 366.65, 367.9,
    369.02, 369.38, 370.4, 371.54, 371.65, 371.62, 369.94, 367.95, 366.54, 366.73, 368.12, 369.44,
    370.17, 371.33, 372.06, 372.77, 373.8, 373.06, 371.3, 369.42, 367.88, 368.05, 369.38, 371.02,
]  # fmt: skip
FIRST_MONTH = (1992, 1)
RETRIES = 5


def read_values(path: str | None) -> list[float]:
    """The series to stream: the first column of a CSV file, or the built-in CO2 record."""
    if path is None:
        return CO2_1992_2001
    with Path(path).open(newline="") as handle:
        return [float(row[0]) for row in csv.reader(handle) if row and row[0].strip()]


def month_name(index: int) -> str:
    year, month = FIRST_MONTH
    total = year * 12 + month - 1 + index
    return f"{total // 12}-{total % 12 + 1:02d}"


def post_with_retry(client: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST, resending the very same body after a timeout or connection error (safe: seq)."""
    for attempt in range(RETRIES):
        try:
            response = client.post(path, json=body)
        except httpx.TransportError as exc:
            print(f"  ({type(exc).__name__}; resending seq {body['seq']})", file=sys.stderr)
            time.sleep(0.2 * 2**attempt)
            continue
        if response.status_code == 429:
            time.sleep(float(response.headers.get("retry-after", "1")))
            continue
        if response.status_code != 200:
            sys.exit(f"error {response.status_code}: {response.text}")
        answer: dict[str, Any] = response.json()
        return answer
    sys.exit(f"gave up after {RETRIES} attempts")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", default="co2-forecaster")
    parser.add_argument("--csv", help="a file whose first column is the series to stream")
    args = parser.parse_args()
    values = read_values(args.csv)
    with httpx.Client(base_url=args.url, timeout=10) as client:
        info = client.get(f"/v1/models/{args.model}")
        if info.status_code != 200:
            sys.exit(f"model {args.model!r}: {info.text}")
        card = info.json()["card"]
        if card.get("input_size") != 1:
            sys.exit(f"{args.model} takes {card.get('input_size')} features per step, not 1 value")
        opened = client.post(f"/v1/models/{args.model}/sessions")
        opened.raise_for_status()
        session_id = opened.json()["session_id"]
        print(f"session {session_id} on {args.model} v{opened.json()['version']}")
        print(f"{'month':8} {'observed':>9} {'forecast':>9} {'error':>7}   next month")
        forecast: float | None = None
        errors: list[float] = []
        for seq, value in enumerate(values):
            body = {"seq": seq, "inputs": [[value]]}
            answer = post_with_retry(client, f"/v1/sessions/{session_id}/steps", body)
            error = "" if forecast is None else f"{value - forecast:+7.2f}"
            if forecast is not None:
                errors.append(abs(value - forecast))
            shown = "" if forecast is None else f"{forecast:9.2f}"
            forecast = float(answer["outputs"][0][0])
            print(f"{month_name(seq):8} {value:9.2f} {shown:>9} {error:>7}   {forecast:.2f}")
        client.delete(f"/v1/sessions/{session_id}")
    if errors:
        print(f"mean absolute one-month-ahead error: {sum(errors) / len(errors):.2f}")


if __name__ == "__main__":
    main()
