"""A plain `tritonclient.http` stateful streaming script, pointed at rnnserve.

Streams monthly CO2 readings into the demo forecaster one step per request with Triton's
sequence parameters, then checks the streamed outputs against one stateless request.

    .venv/bin/python examples/triton_stream.py [--url localhost:8000] [--model co2-forecaster]
"""

from __future__ import annotations

import argparse

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

# Mauna Loa monthly means, ppm, 1992-01 .. 1992-12 (statsmodels' co2 record)
READINGS = [
    355.9,
    356.68,
    357.9,
    358.72,
    359.55,
    359.1,
    356.96,
    354.88,
    353.39,
    353.97,
    355.2,
    356.32,
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="localhost:8000")
    parser.add_argument("--model", default="co2-forecaster")
    args = parser.parse_args()
    client = httpclient.InferenceServerClient(args.url)
    meta = client.get_model_metadata(args.model)
    print("inputs:", [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]])

    signal = np.asarray(READINGS, np.float32)[:, None]
    streamed = []
    for t, step in enumerate(signal):
        x = httpclient.InferInput("x", [1, 1, 1], "FP32")
        x.set_data_from_numpy(step[None, None])  # binary tensors, the client's default
        result = client.infer(
            args.model,
            [x],
            sequence_id=1992,
            sequence_start=t == 0,
            sequence_end=t == len(signal) - 1,
        )
        streamed.append(float(result.as_numpy("y")[0, 0, 0]))
        print(
            f"month {t + 1:2d}: observed {step[0]:.2f}  forecast for next month {streamed[-1]:.2f}"
        )

    x = httpclient.InferInput("x", [1, len(signal), 1], "FP32")
    x.set_data_from_numpy(signal[None])
    whole = client.infer(args.model, [x]).as_numpy("y")[0, :, 0]
    print("max |streamed - one request| =", float(np.abs(np.asarray(streamed) - whole).max()))
    try:
        client.infer(args.model, [x], sequence_id=1992)
    except InferenceServerException as exc:
        print("after sequence_end:", exc)


if __name__ == "__main__":
    main()
