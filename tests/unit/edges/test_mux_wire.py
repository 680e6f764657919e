"""The RNM1 frames: the byte-level example in docs/mux.md, round trips, and frames that lie."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import pytest

from service.edges.mux_wire import (
    MAGIC,
    FrameError,
    MuxStatus,
    decode_answer,
    decode_frame,
    encode_answer,
    encode_frame,
    peek_request_id,
)
from service.errors import LimitExceededError

DOC = Path(__file__).resolve().parents[3] / "docs" / "mux.md"
HEX = re.compile(r"^[0-9a-f]{2}$")


def doc_block(name: str) -> bytes:
    """The bytes of a ```text <name> block: the hex pairs that start each line."""
    block = DOC.read_text().split(f"```text {name}\n", 1)[1].split("```", 1)[0]
    data = bytearray()
    for line in block.splitlines():
        for token in line.split():
            if not HEX.match(token):
                break
            data.append(int(token, 16))
    return bytes(data)


def test_the_documented_request_is_what_the_encoder_writes_and_the_server_reads() -> None:
    inputs = [np.array([[315.7], [317.5]], np.float32), np.array([[316.2]], np.float32)]
    assert doc_block("request") == encode_frame(7, [0, 1], [0, 1], inputs, tokens=False)
    frame = decode_frame(doc_block("request"), features=1, max_records=16)
    assert (frame.request_id, frame.slots.tolist(), frame.seqs.tolist()) == (7, [0, 1], [0, 1])
    assert [r.tolist() for r in frame.record_inputs()] == [x.tolist() for x in inputs]


def test_the_documented_answer_is_what_the_server_writes() -> None:
    outputs = np.array([[315.93896], [318.45868]], np.float32)
    statuses = [MuxStatus.APPLIED, MuxStatus.CONFLICT]
    assert doc_block("answer") == encode_answer(7, statuses, [2, 3], [outputs])
    answer = decode_answer(doc_block("answer"))
    assert answer.statuses.tolist() == [0, 2] and answer.seqs.tolist() == [2, 3]
    np.testing.assert_array_equal(answer.outputs, outputs.ravel())


def test_token_frames_carry_int64_ids_and_large_seqs() -> None:
    ids = [np.array([3, 1, 4], np.int64), np.array([10], np.int64)]
    data = encode_frame(2**32 - 1, [9, 2**32 - 1], [2**40, 0], ids, tokens=True)
    frame = decode_frame(data, features=None, max_records=2)
    assert frame.request_id == 2**32 - 1
    assert frame.slots.tolist() == [9, 2**32 - 1] and frame.seqs.tolist() == [2**40, 0]
    assert [r.tolist() for r in frame.record_inputs()] == [[3, 1, 4], [10]]


def test_a_record_with_no_steps_decodes_as_an_empty_sequence() -> None:
    data = encode_frame(1, [0, 1], [0, 0], [np.zeros((0, 2)), np.ones((1, 2))], tokens=False)
    empty, one = decode_frame(data, features=2, max_records=2).record_inputs()
    assert empty.shape == (0, 2) and one.shape == (1, 2)


@pytest.mark.parametrize(
    ("data", "request_id"),
    [
        (b"", None),
        (b"RNM1\x05\x00", None),
        (b"RNM1" + struct.pack("<I", 5), 5),
        (b"RNM2" + struct.pack("<II", 5, 1), 5),
        (MAGIC + struct.pack("<II", 5, 0), 5),
        (MAGIC + struct.pack("<II", 5, 3) + b"\0" * 40, 5),
        (encode_frame(5, [0], [0], [np.ones((3, 2))], tokens=False)[:-1], 5),
        (encode_frame(5, [0], [0], [np.ones((3, 2))], tokens=False) + b"\0" * 8, 5),
        # the counts claim more steps than the frame holds, however large
        (MAGIC + struct.pack("<II", 5, 1) + struct.pack("<IQI", 0, 0, 2**32 - 1), 5),
    ],
)
def test_frames_that_lie_about_their_sizes_are_refused_naming_their_request(
    data: bytes, request_id: int | None
) -> None:
    assert peek_request_id(data) == request_id
    with pytest.raises(FrameError) as refused:
        decode_frame(data, features=2, max_records=8)
    assert refused.value.request_id == request_id


def test_more_records_than_the_limit_are_refused_before_reading_them() -> None:
    data = encode_frame(5, [0, 1, 2], [0] * 3, [np.ones((1, 2))] * 3, tokens=False)
    with pytest.raises(LimitExceededError):
        decode_frame(data, features=2, max_records=2)
