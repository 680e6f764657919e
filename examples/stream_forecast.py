"""Stream a monthly series into the forecaster one value at a time over REST.

    python examples/stream_forecast.py [--url http://127.0.0.1:8000] [--model co2-forecaster]
                                       [--csv values.csv [--column ppm] [--label-column month]]

The server keeps the recurrent hidden state between calls, so each request carries only the
newest value. `rnnserve_client`'s `Session.step` sends every step with its `seq` and resends the
very same request after a timeout or a dropped connection: the server answers a repeated step
from its record instead of applying it twice. Default data: Mauna Loa monthly mean CO2 (ppm),
January 1992 to December 2001, from the statsmodels `co2` dataset.

A CSV may start with a header row; `--column` picks the values (a header name or a 0-based
index, default 0) and `--label-column` the row labels (default: the row numbers).
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

from rnnserve_client import Client, RnnServeError

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


@dataclass(frozen=True)
class Series:
    """The values to stream and a label for each row."""

    values: list[float]
    labels: list[str]


def month_name(index: int) -> str:
    """The built-in series' month of row `index`."""
    year, month = FIRST_MONTH
    total = year * 12 + month - 1 + index
    return f"{total // 12}-{total % 12 + 1:02d}"


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _column_index(choice: str | None, header: list[str] | None, default: int | None) -> int | None:
    if choice is None:
        return default
    if choice.isdigit():
        return int(choice)
    if header is None or choice not in header:
        sys.exit(f"column {choice!r} not found; the header is {header}")
    return header.index(choice)


def read_series(path: str | None, column: str | None, label_column: str | None) -> Series:
    """The built-in CO2 record, or a CSV's column (a non-numeric first row is its header)."""
    if path is None:
        return Series(CO2_1992_2001, [month_name(i) for i in range(len(CO2_1992_2001))])
    with Path(path).open(newline="") as handle:
        rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    if not rows:
        sys.exit(f"{path} has no rows")
    probe = _column_index(column, rows[0], 0)
    assert probe is not None
    header = rows[0] if probe >= len(rows[0]) or _number(rows[0][probe]) is None else None
    value_at = _column_index(column, header, 0)
    label_at = _column_index(label_column, header, None)
    assert value_at is not None
    values: list[float] = []
    labels: list[str] = []
    for line, row in enumerate(rows[1:] if header else rows, start=2 if header else 1):
        value = _number(row[value_at]) if value_at < len(row) else None
        if value is None:
            sys.exit(f"{path}:{line}: {row!r} has no number in column {value_at}")
        values.append(value)
        labels.append(row[label_at] if label_at is not None else f"#{len(values)}")
    return Series(values, labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", default="co2-forecaster")
    parser.add_argument("--api-key", help="when the server has RNNSERVE_API_KEYS")
    parser.add_argument("--csv", help="a CSV file holding the series to stream")
    parser.add_argument("--column", help="the CSV column with the values: name or index")
    parser.add_argument("--label-column", help="the CSV column that labels each row")
    args = parser.parse_args()
    series = read_series(args.csv, args.column, args.label_column)
    width = max(8, *(len(label) for label in series.labels))
    try:
        with Client(args.url, api_key=args.api_key) as client:
            card = client.model(args.model).card or {}
            if card.get("input_size") != 1:
                sys.exit(f"{args.model} takes {card.get('input_size')} features per step, not 1")
            with client.open(args.model) as session:
                print(f"session {session.id} on {args.model} v{session.info.version}")
                print(f"{'row':{width}} {'observed':>9} {'forecast':>9} {'error':>7}   next")
                forecast: float | None = None
                errors: list[float] = []
                for label, value in zip(series.labels, series.values, strict=True):
                    shown, error = "", ""
                    if forecast is not None:
                        errors.append(abs(value - forecast))
                        shown, error = f"{forecast:9.2f}", f"{value - forecast:+7.2f}"
                    forecast = float(session.step([[value]]).outputs[0][0])
                    print(f"{label:{width}} {value:9.2f} {shown:>9} {error:>7}   {forecast:.2f}")
    except RnnServeError as exc:
        sys.exit(f"server error: {exc}")
    if errors:
        print(f"mean absolute one-step-ahead error: {sum(errors) / len(errors):.2f}")


if __name__ == "__main__":
    main()
