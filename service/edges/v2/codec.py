"""Open Inference Protocol requests: JSON tensors and binary tensors, checked against specs.

A request body is a JSON header, optionally followed by raw little-endian tensor bytes in
the order the inputs are listed (`Inference-Header-Content-Length` gives the header size,
`parameters.binary_data_size` each input's share). Binary inputs become `np.frombuffer`
views of the body: no copy. `service.edges.v2.framing` frames the answers the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import orjson

from service.edges.wire import require_object
from service.errors import InvalidInputError


class Datatype(StrEnum):
    """The tensor datatypes the model contract uses."""

    FP32 = "FP32"
    INT64 = "INT64"
    INT32 = "INT32"
    # answers only: classification strings (service.edges.v2.classification)
    BYTES = "BYTES"


# Explicit little-endian: the extension fixes the byte order whatever the host's.
NUMPY_DTYPES: dict[Datatype, np.dtype[Any]] = {
    Datatype.FP32: np.dtype("<f4"),
    Datatype.INT64: np.dtype("<i8"),
    Datatype.INT32: np.dtype("<i4"),
    Datatype.BYTES: np.dtype(object),
}

# numpy kinds accepted from JSON for each datatype: no silent float -> int truncation.
JSON_KINDS: dict[Datatype, str] = {Datatype.FP32: "fiu", Datatype.INT64: "iu", Datatype.INT32: "iu"}


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A tensor as the model metadata shows it; -1 marks a dynamic axis."""

    name: str
    datatype: Datatype
    shape: tuple[int, ...]
    optional: bool = False
    # a second shape accepted on input (seq_lens: [batch, 1] as Triton declares it, or [batch])
    also_accepts: tuple[int, ...] | None = None

    def as_json(self) -> dict[str, Any]:
        """`{"name", "datatype", "shape"}` as in the protocol's model metadata."""
        return {"name": self.name, "datatype": self.datatype.value, "shape": list(self.shape)}


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    """An output the client asked for, whether it wants it as raw bytes, and its parameters."""

    name: str
    binary: bool | None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InferRequest:
    """A decoded infer request: arrays shaped as declared, checked against the specs."""

    id: str | None
    inputs: dict[str, np.ndarray[Any, Any]]
    outputs: list[RequestedOutput] | None
    binary_output: bool
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class OutputTensor:
    """One tensor of the answer."""

    name: str
    datatype: Datatype
    array: np.ndarray[Any, Any]
    binary: bool


def decode_request(
    body: bytes,
    header_length: int | None,
    *,
    inputs: Mapping[str, TensorSpec],
    outputs: Mapping[str, TensorSpec],
) -> InferRequest:
    """Parse and check an infer body against the model's tensor specs."""
    view = memoryview(body)
    header_end = len(body) if header_length is None else header_length
    try:
        header = require_object(orjson.loads(view[:header_end]), "the infer request")
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"the infer request header is not valid JSON: {exc}") from None
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInputError("inputs must be a non-empty list of tensors")
    reader = _BinaryReader(view, header_end, framed=header_length is not None)
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    for raw in raw_inputs:
        tensor = require_object(raw, "every input")
        name = tensor.get("name")
        if not isinstance(name, str):
            raise InvalidInputError("every input needs a string name")
        if name not in inputs:
            raise InvalidInputError(f"unknown input {name!r}; the model takes {sorted(inputs)}")
        if name in arrays:
            raise InvalidInputError(f"input {name!r} is given twice")
        arrays[name] = _decode_input(tensor, inputs[name], reader)
    reader.finish()
    if missing := [s.name for s in inputs.values() if not s.optional and s.name not in arrays]:
        raise InvalidInputError(f"missing required input(s) {missing}")
    parameters = _parameters(header.get("parameters"), "parameters")
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInputError("id must be a string")
    return InferRequest(
        id=request_id,
        inputs=arrays,
        outputs=_requested_outputs(header.get("outputs"), outputs),
        binary_output=_flag(parameters, "binary_data_output", "parameters"),
        parameters=parameters,
    )


class _BinaryReader:
    """Hands out consecutive slices of the bytes after the header, and checks they add up."""

    def __init__(self, view: memoryview, offset: int, *, framed: bool) -> None:
        self._view = view
        self._offset = offset
        self._framed = framed

    def take(self, spec: TensorSpec, shape: tuple[int, ...], size: int) -> np.ndarray[Any, Any]:
        if not self._framed:
            raise InvalidInputError(
                f"input {spec.name!r} has binary_data_size but the request has no "
                "Inference-Header-Content-Length header"
            )
        dtype = NUMPY_DTYPES[spec.datatype]
        expected = math.prod(shape) * dtype.itemsize
        if size != expected:
            raise InvalidInputError(
                f"input {spec.name!r}: binary_data_size {size} does not match shape "
                f"{list(shape)} of {spec.datatype.value} ({expected} bytes)"
            )
        if self._offset + size > len(self._view):
            raise InvalidInputError(
                f"input {spec.name!r}: binary_data_size {size} runs past the end of the body "
                f"({len(self._view) - self._offset} bytes left)"
            )
        array = np.frombuffer(self._view, dtype, math.prod(shape), self._offset).reshape(shape)
        self._offset += size
        return array

    def finish(self) -> None:
        if self._offset != len(self._view):
            raise InvalidInputError(
                f"{len(self._view) - self._offset} bytes after the last binary input: the "
                "binary_data_size values do not add up to the body"
            )


def _decode_input(
    tensor: dict[str, Any], spec: TensorSpec, reader: _BinaryReader
) -> np.ndarray[Any, Any]:
    name = spec.name
    datatype = tensor.get("datatype")
    if datatype != spec.datatype.value:
        raise InvalidInputError(
            f"input {name!r} has datatype {datatype!r}; the model takes {spec.datatype.value}"
        )
    shape = check_shape(tensor.get("shape"), spec)
    parameters = _parameters(tensor.get("parameters"), f"input {name!r} parameters")
    size = parameters.get("binary_data_size")
    if size is not None:
        if "data" in tensor:
            raise InvalidInputError(f"input {name!r} has both data and binary_data_size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidInputError(f"input {name!r}: binary_data_size must be an integer >= 0")
        return reader.take(spec, shape, size)
    return _json_data(tensor.get("data"), spec, shape)


def check_shape(raw: Any, spec: TensorSpec) -> tuple[int, ...]:
    """A client's shape as a tuple, when it is one the spec takes (-1 axes take any size)."""
    if not isinstance(raw, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in raw
    ):
        raise InvalidInputError(f"input {spec.name!r}: shape must be a list of integers >= 0")
    shape = tuple(raw)
    if not any(
        len(shape) == len(want) and all(w in (-1, g) for w, g in zip(want, shape, strict=True))
        for want in (spec.shape, spec.also_accepts or spec.shape)
    ):
        raise InvalidInputError(
            f"input {spec.name!r} has shape {list(shape)}; the model takes {list(spec.shape)}"
        )
    return shape


def _json_data(raw: Any, spec: TensorSpec, shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    if not isinstance(raw, list):
        raise InvalidInputError(f"input {spec.name!r} needs data (a flat list) or binary data")
    try:
        array = np.asarray(raw)
    except ValueError:
        raise InvalidInputError(f"input {spec.name!r}: data is ragged") from None
    if array.size and array.dtype.kind not in JSON_KINDS[spec.datatype]:
        raise InvalidInputError(
            f"input {spec.name!r}: data must be {spec.datatype.value} numbers, got {array.dtype}"
        )
    if array.size != math.prod(shape):
        raise InvalidInputError(
            f"input {spec.name!r}: shape {list(shape)} needs {math.prod(shape)} values, "
            f"data has {array.size}"
        )
    with np.errstate(over="ignore"):
        converted = array.astype(NUMPY_DTYPES[spec.datatype], copy=False)
    if spec.datatype is not Datatype.FP32 and not np.array_equal(converted, array):
        raise InvalidInputError(f"input {spec.name!r}: values out of {spec.datatype.value} range")
    return converted.reshape(shape)


def _parameters(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidInputError(f"{where} must be an object")
    return raw


def _flag(parameters: Mapping[str, Any], key: str, where: str) -> bool:
    value = parameters.get(key, False)
    if not isinstance(value, bool):
        raise InvalidInputError(f"{where}.{key} must be true or false")
    return value


def _requested_outputs(raw: Any, specs: Mapping[str, TensorSpec]) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidInputError("outputs must be a list")
    requested: list[RequestedOutput] = []
    for item in raw:
        name = require_object(item, "every requested output").get("name")
        if not isinstance(name, str) or name not in specs:
            raise InvalidInputError(f"unknown output {name!r}; the model returns {sorted(specs)}")
        parameters = _parameters(item.get("parameters"), f"output {name!r} parameters")
        binary = _flag(parameters, "binary_data", f"output {name!r} parameters")
        requested.append(
            RequestedOutput(name, binary if "binary_data" in parameters else None, parameters)
        )
    return requested
