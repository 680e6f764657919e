"""The v1 JSON decoding shortcut: a plain body (no string values, booleans or nulls) decodes its
arrays straight to float32, and anything else takes the checking path that names a bad value."""

from __future__ import annotations

import numpy as np
import pytest

from service.edges.http.codec import parse_body, to_array
from service.errors import InvalidInputError


@pytest.mark.parametrize(
    "body",
    [
        b'{"seq": 0, "inputs": [[1.5, 2]]}',
        b'{"inputs":[[[1,2],[3,4]]]}',
        '{"seq":3,"inputs":[[0.25]]}',
        b'{"inputs": [[[1.0]]], "output": "all", "return_state": false}',
        b'{"inputs": [[[1.0]]], "output": null, "return_state": true}',
    ],
)
def test_numbers_under_plain_keys_are_plain(body: bytes | str) -> None:
    assert parse_body(body).plain


@pytest.mark.parametrize(
    "body",
    [
        b'{"seq": 0, "inputs": [[true]]}',
        b'{"seq": 0, "inputs": [[null]]}',
        b'{"seq": 0, "inputs": [["1.5"]]}',
        b'{"inputs": [[1.0]], "inputs": "x"}',
        b'{"inputs": [[{"a": 1}]]}',
        b'{"inputs": [[1.0, false]], "return_state": true}',
        b'{"inputs": [["x"]], "output": "all"}',
        b'{"inputs": [[true]], "output": "\\u0074rue"}',
        b'{"inputs": [["1", "2"]], "a\\u0022\\u0022": 1}',
        b"[[1.0]]",
        '{"seq": 0, "inputs": [[false]]}',
    ],
)
def test_strings_booleans_nulls_or_a_non_object_are_not_plain(body: bytes | str) -> None:
    assert not parse_body(body).plain


def test_the_float32_path_gives_what_the_checking_path_gives() -> None:
    raw = np.round(np.random.default_rng(0).normal(size=(7, 5)), 4).tolist()
    fast = to_array(raw, where="inputs", what="a sequence", float32=True)
    checked = to_array(raw, where="inputs", what="a sequence").astype(np.float32)
    assert fast.dtype == np.float32
    np.testing.assert_array_equal(fast, checked)


def test_a_ragged_plain_list_still_gets_the_precise_message() -> None:
    with pytest.raises(InvalidInputError, match="ragged or nested lists"):
        to_array([[1.0, 2.0], [3.0]], where="inputs", what="a sequence", float32=True)
