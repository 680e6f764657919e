"""The harness's own pieces, without servers: ratios, the bar's verdicts, the raw HTTP client,
log and profile summaries."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import orjson

from bench.bars import judge
from bench.loadgen.rawhttp import Connection, encode_request
from bench.model import v2_binary_body, v2_outputs
from bench.probes import BatchTotals, mean_batch, summarise_collapsed
from bench.procs import Server
from bench.report import Row, add_ratios


def _row(scenario: str, server: str, value: float, protocol: str = "REST", **kw: object) -> Row:
    unit = "req/s" if scenario.startswith("predict") else "steps/s"
    return Row(scenario, server, protocol, value=value, unit=unit, **kw)  # type: ignore[arg-type]


def test_websocket_rows_are_compared_with_the_hand_tuned_rest_streams() -> None:
    rows = [
        _row("streams64_rest", "hand-tuned", 2000.0),
        _row("streams64_rest", "textbook", 1000.0),
        _row("streams64_ws", "hand-tuned", 5000.0, "WS"),
        _row("streams64_ws", "rnnserve", 9000.0, "WS"),
    ]
    add_ratios(rows)
    assert rows[3].vs_handtuned == 4.5
    assert rows[3].vs_textbook == 9.0


def test_the_bar_says_met_missed_by_how_much_or_not_measured() -> None:
    rows = [
        _row("predict_c32", "rnnserve", 900.0, "v1 JSON", p99_ms=40.0),
        _row("predict_c32", "hand-tuned", 750.0, "v1 JSON", p99_ms=50.0),
        _row("predict_c32", "textbook", 180.0, "v1 JSON"),
        _row("streams64_rest", "hand-tuned", 2000.0),
        _row("streams64_rest", "rnnserve", 3000.0),
    ]
    bars = judge(rows)
    assert "1.20x" in bars[0] and "MISSED (reaches 80% of the bar)" in bars[0]
    assert "5.00x" in bars[1] and "met" in bars[1]
    assert "met" in bars[2]
    assert "1.50x" in bars[3] and bars[3].endswith("met")
    assert "not measured" in bars[4]


def test_mean_batch_is_the_histogram_delta() -> None:
    assert mean_batch(BatchTotals(10, 10), BatchTotals(110, 20)) == 10.0
    assert mean_batch(BatchTotals(10, 10), BatchTotals(10, 10)) is None
    assert mean_batch(None, BatchTotals(1, 1)) is None


def test_collapsed_stacks_are_summarised_by_self_and_inclusive_time() -> None:
    text = "main (a.py:1);parse (b.py:2) 3\nmain (a.py:1);run (c.py:3) 1\n"
    summary = summarise_collapsed(text)
    assert "4 samples" in summary
    assert " 75.0%  parse (b.py:2)" in summary
    assert "100.0%  main (a.py:1)" in summary


def test_a_crashed_server_is_explained_by_its_last_logged_exception(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text(
        '{"level":"info","msg":"starting"}\n'
        '{"level":"error","msg":"Traceback (most recent call last):\\n  File x\\n'
        "service.errors.RnnServeError: unknown session store 'redis://x'\"}\n"
        '{"level":"error","msg":"Application startup failed. Exiting."}\n'
    )
    server = Server.__new__(Server)
    server.log_path = log
    assert server.failure() == "service.errors.RnnServeError: unknown session store 'redis://x'"


async def test_raw_client_reads_content_length_chunked_and_the_binary_header() -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nInference-Header-Content-Length: 2\r\n\r\nhello",
        b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    ]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in answers:
            await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(2)
            writer.write(answer)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    connection = Connection(port)
    try:
        first = await connection.request(encode_request("POST", "/x", b"{}"))
        second = await connection.request(encode_request("POST", "/x", b"{}"))
    finally:
        connection.close()
        server.close()
    assert (first.status, first.body, first.header_length) == (200, b"hello", 2)
    assert (second.status, second.body) == (404, b"abcde")


def test_binary_v2_bodies_decode_back_to_the_same_tensor() -> None:
    x = np.arange(2 * 3 * 32, dtype=np.float32).reshape(2, 3, 32)
    framed = v2_binary_body(x)
    raw = framed.body[framed.header_length :]
    header = orjson.dumps(
        {
            "outputs": [
                {
                    "name": "y",
                    "shape": [2, 3, 32],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    )
    np.testing.assert_array_equal(v2_outputs(header + raw, len(header))["y"], x)
