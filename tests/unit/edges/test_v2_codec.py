"""The V2 wire format without HTTP: JSON and binary tensors, compression, framed answers."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable

import numpy as np
import orjson
import pytest

from service.edges.v2.codec import Datatype, OutputTensor, TensorSpec, decode_request
from service.edges.v2.framing import decompress, encode_response, parse_header_length
from service.errors import InvalidInputError, LimitExceededError
from tests.support.v2 import binary_body, json_tensor

INPUTS = {
    "x": TensorSpec("x", Datatype.FP32, (-1, -1, 3)),
    "seq_lens": TensorSpec("seq_lens", Datatype.INT32, (-1,), optional=True),
    "h0": TensorSpec("h0", Datatype.FP32, (2, -1, 4), optional=True),
}
OUTPUTS = {
    "y": TensorSpec("y", Datatype.FP32, (-1, -1, 2)),
    "hn": TensorSpec("hn", Datatype.FP32, (2, -1, 4)),
}
X = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3) / 7


def decode_json(header: dict, header_length: int | None = None) -> object:
    return decode_request(orjson.dumps(header), header_length, inputs=INPUTS, outputs=OUTPUTS)


def test_json_data_is_reshaped_row_major_and_typed_as_declared() -> None:
    lens = np.array([5, 2], np.int32)
    request = decode_json(
        {"id": "r1", "inputs": [json_tensor("x", X), json_tensor("seq_lens", lens)]}
    )
    assert request.id == "r1"
    np.testing.assert_array_equal(request.inputs["x"], X)
    assert request.inputs["x"].dtype == np.float32
    assert request.inputs["seq_lens"].dtype == np.int32
    assert request.outputs is None and request.binary_output is False


def test_json_data_may_also_be_nested() -> None:
    tensor = {"name": "x", "shape": [2, 5, 3], "datatype": "FP32", "data": X.tolist()}
    np.testing.assert_array_equal(decode_json({"inputs": [tensor]}).inputs["x"], X)


def test_binary_inputs_are_views_of_the_body_not_copies() -> None:
    h0 = np.ones((2, 2, 4), np.float32)
    body, header_length = binary_body({"x": X, "h0": h0})
    request = decode_request(body, header_length, inputs=INPUTS, outputs=OUTPUTS)
    np.testing.assert_array_equal(request.inputs["x"], X)
    np.testing.assert_array_equal(request.inputs["h0"], h0)
    for array in request.inputs.values():
        assert np.shares_memory(array, np.frombuffer(body, np.uint8))


@pytest.mark.parametrize("offset", [-1, 1])
def test_binary_data_size_off_by_one_is_refused_with_both_sizes(offset: int) -> None:
    body, header_length = binary_body({"x": X}, size_offsets={"x": offset})
    with pytest.raises(
        InvalidInputError, match=rf"binary_data_size {X.nbytes + offset}.*{X.nbytes} bytes"
    ):
        decode_request(body, header_length, inputs=INPUTS, outputs=OUTPUTS)


def test_bytes_left_after_the_last_binary_input_are_refused() -> None:
    body, header_length = binary_body({"x": X})
    with pytest.raises(InvalidInputError, match="1 bytes after the last binary input"):
        decode_request(body + b"\0", header_length, inputs=INPUTS, outputs=OUTPUTS)


def test_binary_input_without_the_header_length_is_refused() -> None:
    body, header_length = binary_body({"x": X})
    with pytest.raises(InvalidInputError, match="Inference-Header-Content-Length"):
        decode_request(body[:header_length], None, inputs=INPUTS, outputs=OUTPUTS)


@pytest.mark.parametrize("raw", ["abc", "0", "-3", "999999", "\u00b2"])
def test_header_length_must_be_an_integer_inside_the_body(raw: str) -> None:
    with pytest.raises(InvalidInputError, match="Inference-Header-Content-Length"):
        parse_header_length(raw, 100)


def test_wrong_datatype_names_what_the_model_takes() -> None:
    tensor = {**json_tensor("x", X), "datatype": "FP64"}
    with pytest.raises(InvalidInputError, match="datatype 'FP64'; the model takes FP32"):
        decode_json({"inputs": [tensor]})


def test_shape_that_does_not_match_its_data_is_refused() -> None:
    tensor = {**json_tensor("x", X), "shape": [2, 4, 3]}
    with pytest.raises(InvalidInputError, match=r"shape \[2, 4, 3\] needs 24 values, data has 30"):
        decode_json({"inputs": [tensor]})


def test_shape_against_fixed_model_axes_is_checked() -> None:
    tensor = json_tensor("x", X.reshape(2, 3, 5))
    with pytest.raises(InvalidInputError, match=r"the model takes \[-1, -1, 3\]"):
        decode_json({"inputs": [tensor]})


def test_integer_inputs_refuse_floats_and_out_of_range_values() -> None:
    floats = {"name": "seq_lens", "shape": [1], "datatype": "INT32", "data": [1.5]}
    huge = {"name": "seq_lens", "shape": [1], "datatype": "INT32", "data": [2**40]}
    for bad in (floats, huge):
        with pytest.raises(InvalidInputError, match="seq_lens"):
            decode_json({"inputs": [json_tensor("x", X), bad]})


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([json_tensor("x", X), json_tensor("x", X)], "given twice"),
        ([json_tensor("z", X)], "unknown input 'z'"),
        ([json_tensor("seq_lens", np.ones(2, np.int32))], r"missing required input\(s\) \['x'\]"),
        ([], "non-empty list"),
    ],
)
def test_input_names_are_checked(inputs: list, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        decode_json({"inputs": inputs})


def test_requested_outputs_keep_order_and_per_output_binary_overrides() -> None:
    request = decode_json(
        {
            "inputs": [json_tensor("x", X)],
            "outputs": [{"name": "hn", "parameters": {"binary_data": False}}, {"name": "y"}],
            "parameters": {"binary_data_output": True},
        }
    )
    assert [(o.name, o.binary) for o in request.outputs] == [("hn", False), ("y", None)]
    assert request.binary_output is True
    with pytest.raises(InvalidInputError, match="unknown output 'cn'"):
        decode_json({"inputs": [json_tensor("x", X)], "outputs": [{"name": "cn"}]})


def test_encoded_binary_response_frames_header_and_sizes() -> None:
    y = np.arange(6, dtype=np.float32).reshape(1, 3, 2)
    hn = np.arange(8, dtype=np.float32).reshape(2, 1, 4)[:, :, ::-1]  # not contiguous
    encoded = encode_response(
        {"model_name": "m"},
        [OutputTensor("y", Datatype.FP32, y, True), OutputTensor("hn", Datatype.FP32, hn, False)],
    )
    assert encoded.content_type == "application/octet-stream"
    assert encoded.header_length is not None
    header = orjson.loads(encoded.body[: encoded.header_length])
    assert header["outputs"][0]["parameters"] == {"binary_data_size": 24}
    assert header["outputs"][1]["data"] == hn.ravel().tolist()
    assert len(encoded.body) == encoded.header_length + 24
    np.testing.assert_array_equal(
        np.frombuffer(encoded.body[encoded.header_length :], "<f4").reshape(1, 3, 2), y
    )


def test_json_only_response_has_no_header_length() -> None:
    y = np.zeros((1, 1, 2), np.float32)
    encoded = encode_response({}, [OutputTensor("y", Datatype.FP32, y, False)])
    assert encoded.header_length is None and encoded.content_type == "application/json"
    assert orjson.loads(encoded.body)["outputs"][0]["data"] == [0.0, 0.0]


@pytest.mark.parametrize(
    ("encoding", "compress"), [("gzip", gzip.compress), ("deflate", zlib.compress)]
)
def test_compressed_bodies_are_inflated_as_tritonclient_sends_them(
    encoding: str, compress: Callable[[bytes], bytes]
) -> None:
    body, _ = binary_body({"x": X})
    assert decompress(compress(body), encoding, limit_bytes=len(body)) == body


def test_decompression_stops_at_the_body_limit_and_refuses_the_rest() -> None:
    bomb = gzip.compress(bytes(10_000_000))
    with pytest.raises(LimitExceededError, match="over the limit of 4096 bytes"):
        decompress(bomb, "gzip", limit_bytes=4096)
    with pytest.raises(InvalidInputError, match="truncated"):
        decompress(gzip.compress(b"{}" * 100)[:-12], "gzip", limit_bytes=4096)
    with pytest.raises(InvalidInputError, match="not supported"):
        decompress(b"{}", "br", limit_bytes=4096)
    assert decompress(b"{}", None, limit_bytes=4096) == b"{}"
