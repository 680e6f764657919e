"""Stream many sensors' series into the forecaster at once over one multiplexed WebSocket.

    python examples/mux_sensors.py [--url http://127.0.0.1:8000] [--sensors 500]

A gateway in front of a fleet of CO2 sensors: every month each sensor reports one value, and
one RNM1 binary frame carries the whole fleet's values (`WS /v1/models/{name}/mux`, see
docs/mux.md). The server runs the frame as one batched step and keeps each sensor's hidden
state in its own session. At the end the streamed forecasts are compared with one predict over
each sensor's whole series: a session carries its state exactly as a single run does.
Sensor k reads the Mauna Loa series of 1992-2001 offset by a few ppm.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from rnnserve_client import AsyncClient
from stream_forecast import CO2_1992_2001  # type: ignore[import-not-found]

MODEL = "co2-forecaster"
PREDICT_CHUNK = 200


def series_of(sensor: int) -> list[float]:
    """Sensor k: the real series shifted by (k mod 20) / 4 ppm."""
    return [v + (sensor % 20) / 4 for v in CO2_1992_2001]


async def main(url: str, sensors: int) -> None:
    async with AsyncClient(url) as client:
        mux = await client.mux(MODEL)
        async with mux:
            sessions = [await mux.open() for _ in range(sensors)]
            streamed: list[list[float]] = [[] for _ in sessions]
            started = time.perf_counter()
            for month in range(len(CO2_1992_2001)):
                frame = {s: [[series_of(k)[month]]] for k, s in enumerate(sessions)}
                results = await mux.step(frame)
                for k, session in enumerate(sessions):
                    outputs = results[session].outputs
                    assert outputs is not None, results[session]
                    streamed[k].append(outputs[0][0])
            seconds = time.perf_counter() - started
            for session in sessions:
                await mux.delete(session)
        steps = sensors * len(CO2_1992_2001)
        print(f"{sensors} sensors x {len(CO2_1992_2001)} months: {steps} steps in {seconds:.2f} s")
        whole: list[list[list[float]]] = []
        for first in range(0, sensors, PREDICT_CHUNK):  # a predict takes 256 sequences at most
            batch = [[[v] for v in series_of(k)] for k in range(first, first + PREDICT_CHUNK)]
            whole += (await client.predict(MODEL, batch[: sensors - first], output="all")).outputs
        worst = max(
            abs(got - want[0]) / abs(want[0])
            for k in range(sensors)
            for got, want in zip(streamed[k], whole[k], strict=True)
        )
        print(f"sensor 0, last month: forecast {streamed[0][-1]:.3f} ppm")
        print(f"largest relative gap to one predict per sensor: {worst:.1e}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--sensors", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(main(args.url, args.sensors))
