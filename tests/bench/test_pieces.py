"""The harness's own pieces, without servers: ratios, the bar's verdicts, the raw HTTP client,
log and profile summaries."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import orjson
import pytest

from bench.bars import judge
from bench.baselines.bare import mux_answer
from bench.loadgen.mux import MuxError, decode_answer, describe_statuses
from bench.loadgen.mux import encode_request as encode_mux
from bench.loadgen.rawhttp import Connection, encode_request
from bench.model import v2_binary_body, v2_outputs
from bench.probes import BatchTotals, mean_batch, summarise_collapsed
from bench.procs import Server
from bench.report import Row, add_ratios


def _row(scenario: str, server: str, value: float, protocol: str = "REST", **kw: object) -> Row:
    unit = "req/s" if scenario.startswith("predict") else "steps/s"
    return Row(scenario, server, protocol, value=value, unit=unit, **kw)  # type: ignore[arg-type]


def test_websocket_and_mux_rows_are_compared_with_the_hand_tuned_websocket_streams() -> None:
    rows = [
        _row("streams64_rest", "hand-tuned", 2000.0),
        _row("streams64_rest", "textbook", 1000.0),
        _row("streams64_ws", "hand-tuned", 5000.0, "WS"),
        _row("streams64_ws", "rnnserve", 9000.0, "WS"),
        _row("streams1024_ws", "rnnserve", 10000.0, "WS"),
        _row("mux_256", "rnnserve", 50000.0, "mux"),
        _row("redis_store", "rnnserve", 3000.0, "WS, Redis"),
    ]
    add_ratios(rows)
    assert rows[3].vs_handtuned == 1.8
    assert rows[4].vs_handtuned == 2.0
    assert rows[5].vs_handtuned == 10.0
    assert rows[6].vs_handtuned == 1.5


def test_the_bar_says_met_missed_by_how_much_or_not_measured() -> None:
    rows = [
        _row("predict_c32", "rnnserve", 900.0, "v1 JSON", p99_ms=40.0),
        _row("predict_c32", "hand-tuned", 750.0, "v1 JSON", p99_ms=50.0),
        _row("predict_c32", "textbook", 180.0, "v1 JSON"),
        _row("streams64_rest", "hand-tuned", 2000.0),
        _row("streams64_rest", "rnnserve", 3000.0),
    ]
    bars = [line for line in judge(rows) if line.startswith("(issue 6)")]
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


def test_issue_12_bars_use_same_run_ratios_and_cpu_per_step() -> None:
    rows = [
        _row("ort_ceiling", "onnxruntime", 200_000.0, "InferenceSession.run, batch 64"),
        _row("mux_256", "rnnserve", 120_000.0, "mux", server_cpu_pct=100.0),
        _row("streams64_ws", "rnnserve", 9000.0, "WS", server_cpu_pct=100.0),
        _row("streams64_ws", "hand-tuned", 5000.0, "WS", server_cpu_pct=100.0),
        _row("streams1024_ws", "rnnserve", 8000.0, "WS"),
        _row("redis_store", "rnnserve", 4000.0, "WS, Redis"),
        _row("redis_store", "rnnserve", 8000.0, "WS, memory store"),
        _row("loadgen_ceiling", "bare", 27000.0, "WS, 64 streams"),
    ]
    bars = {line.split(" >= ")[0]: line for line in judge(rows) if line.startswith("[12]")}
    assert bars["[12] mux_256 (frames of 64)"].endswith("0.60x (120,000 vs 200,000 steps/s) — met")
    assert "not measured" in bars["[12] mux_4096 (frames of 256)"]
    ws = bars["[12] 64 WebSocket streams"]
    assert "1.80x" in ws and "CPU ms/op 0.1111 vs 0.2000" in ws and ws.endswith("met")
    assert "MISSED (reaches 89% of the bar)" in bars["[12] 1,024 WebSocket streams"]
    assert "0.50x" in bars["[12] Redis WS"] and "MISSED" in bars["[12] Redis WS"]
    assert any("3.00x rnnserve's streams64_ws figure" in line for line in bars.values())


def test_mux_frames_round_trip_through_the_bare_servers_answer() -> None:
    slots = np.array([3, 7], dtype=np.uint32)
    seqs = np.array([0, 41], dtype=np.uint64)
    counts = np.array([2, 1], dtype=np.uint32)
    x = np.arange(3 * 32, dtype=np.float32).reshape(3, 32)
    frame = encode_mux(9, slots, seqs, counts, x)
    assert frame[:4] == b"RNM1" and len(frame) == 12 + 2 * 4 + 2 * 8 + 2 * 4 + 3 * 32 * 4
    answer = decode_answer(mux_answer(frame))
    assert answer.request_id == 9
    assert answer.status.tolist() == [0, 0]
    assert answer.seq.tolist() == [1, 42]
    assert answer.outputs.shape == (3, 8)


def test_a_mux_answer_that_does_not_add_up_is_refused() -> None:
    good = mux_answer(encode_mux(1, np.array([0]), np.array([0]), np.array([1]), np.zeros((1, 32))))
    for bad in (b"RNM", b"XXXX" + good[4:], good[:-4]):
        with pytest.raises(MuxError):
            decode_answer(bad)
    assert describe_statuses(np.array([0, 2, 2, 3], dtype=np.uint16)) == (
        "conflict x2, unknown slot x1"
    )


async def test_the_raw_websocket_client_speaks_to_a_standard_server() -> None:
    from websockets.asyncio.server import ServerConnection, serve

    from bench.loadgen.rawws import HandshakeError, raw_connect

    async def echo(socket: ServerConnection) -> None:
        await socket.send("hello")
        async for message in socket:
            await socket.send(message)

    async with serve(echo, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        client = await raw_connect(f"ws://127.0.0.1:{port}/v1/x")
        try:
            assert await client.recv() == "hello"
            await client.send('{"seq": 1}', text=True)
            assert await client.recv(decode=False) == b'{"seq": 1}'
            big = bytes(range(256)) * 300  # 76,800 bytes: the 64-bit length form
            await client.send(big, text=False)
            assert await client.recv() == big
        finally:
            await client.close()

    async def refuse(socket: ServerConnection) -> None:
        return None

    async with serve(
        refuse, "127.0.0.1", 0, process_request=lambda c, r: c.respond(403, "no")
    ) as refusing:
        port = next(iter(refusing.sockets)).getsockname()[1]
        with pytest.raises((HandshakeError, OSError)):
            await raw_connect(f"ws://127.0.0.1:{port}/v1/x")
