"""Protobuf <-> the V2 core's typed requests and answers.

A `ModelInferRequest` becomes the same `InferRequest` the HTTP codec builds, checked against the
same tensor specs: typed `contents` or `raw_input_contents` (little-endian bytes, one entry per
input in order, used in place). Answers always go out as `raw_output_contents`, as Triton
sends them; BYTES tensors (classification) use the same length-prefixed encoding as HTTP.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from service.edges.v2.codec import (
    JSON_KINDS,
    NUMPY_DTYPES,
    Datatype,
    InferRequest,
    OutputTensor,
    RequestedOutput,
    TensorSpec,
    check_shape,
)
from service.edges.v2.framing import bytes_tensor
from service.errors import InvalidInputError, NotSupportedError

# which typed field of InferTensorContents carries each datatype
CONTENTS_FIELD = {
    Datatype.FP32: "fp32_contents",
    Datatype.INT64: "int64_contents",
    Datatype.INT32: "int_contents",
}
SHARED_MEMORY_KEYS = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")
# a stream flag, not an inference parameter: the answer then carries `triton_final_response`
EMPTY_FINAL_RESPONSE = "triton_enable_empty_final_response"
FINAL_RESPONSE = "triton_final_response"


def parameter_value(parameter: Any) -> Any:
    """The Python value of an `InferParameter` (its one set field)."""
    which = parameter.WhichOneof("parameter_choice")
    if which is None:
        raise InvalidInputError("a parameter has no value")
    return getattr(parameter, which)


def parameters_of(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A protobuf parameter map as a plain dict; shared memory is refused by name."""
    parameters = {key: parameter_value(value) for key, value in raw.items()}
    for key in SHARED_MEMORY_KEYS:
        if key in parameters:
            raise NotSupportedError(f"{where}: the shared memory extension is not supported")
    return parameters


def decode_infer_request(
    message: Any, *, inputs: Mapping[str, TensorSpec], outputs: Mapping[str, TensorSpec]
) -> InferRequest:
    """A `ModelInferRequest` as the V2 core's request, checked against the model's specs."""
    if not message.inputs:
        raise InvalidInputError("inputs must be a non-empty list of tensors")
    raw_contents = list(message.raw_input_contents)
    if raw_contents and len(raw_contents) != len(message.inputs):
        raise InvalidInputError(
            f"{len(raw_contents)} raw_input_contents for {len(message.inputs)} inputs: give "
            "one per input, or none"
        )
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    for index, tensor in enumerate(message.inputs):
        spec = inputs.get(tensor.name)
        if spec is None:
            raise InvalidInputError(
                f"unknown input {tensor.name!r}; the model takes {sorted(inputs)}"
            )
        if tensor.name in arrays:
            raise InvalidInputError(f"input {tensor.name!r} is given twice")
        extra = parameters_of(tensor.parameters, f"input {tensor.name!r}")
        if extra:
            raise InvalidInputError(
                f"input {tensor.name!r}: parameters {sorted(extra)} are not supported"
            )
        raw = raw_contents[index] if raw_contents else None
        arrays[tensor.name] = _decode_tensor(tensor, spec, raw)
    if missing := [s.name for s in inputs.values() if not s.optional and s.name not in arrays]:
        raise InvalidInputError(f"missing required input(s) {missing}")
    requested = []
    for out in message.outputs:
        if out.name not in outputs:
            raise InvalidInputError(
                f"unknown output {out.name!r}; the model returns {sorted(outputs)}"
            )
        requested.append(
            RequestedOutput(out.name, True, parameters_of(out.parameters, f"output {out.name!r}"))
        )
    return InferRequest(
        id=message.id or None,
        inputs=arrays,
        outputs=requested or None,
        binary_output=True,
        parameters=parameters_of(
            {k: v for k, v in message.parameters.items() if k != EMPTY_FINAL_RESPONSE},
            "the request",
        ),
    )


def wants_final_flag(message: Any) -> bool:
    """True when a stream request asks for `triton_final_response` on its (single) answer."""
    parameter = message.parameters.get(EMPTY_FINAL_RESPONSE)
    return bool(parameter is not None and parameter.bool_param)


def _decode_tensor(tensor: Any, spec: TensorSpec, raw: bytes | None) -> np.ndarray[Any, Any]:
    name = spec.name
    if tensor.datatype != spec.datatype.value:
        raise InvalidInputError(
            f"input {name!r} has datatype {tensor.datatype!r}; the model takes "
            f"{spec.datatype.value}"
        )
    shape = check_shape(list(tensor.shape), spec)
    dtype = NUMPY_DTYPES[spec.datatype]
    count = math.prod(shape)
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise InvalidInputError(
                f"input {name!r}: {len(raw)} raw bytes do not match shape {list(shape)} of "
                f"{spec.datatype.value} ({count * dtype.itemsize} bytes)"
            )
        return np.frombuffer(raw, dtype, count).reshape(shape)
    values = np.asarray(getattr(tensor.contents, CONTENTS_FIELD[spec.datatype]))
    if values.size != count:
        raise InvalidInputError(
            f"input {name!r}: shape {list(shape)} needs {count} values, contents have {values.size}"
        )
    if values.size and values.dtype.kind not in JSON_KINDS[spec.datatype]:
        raise InvalidInputError(f"input {name!r}: contents must be {spec.datatype.value}")
    return values.astype(dtype, copy=False).reshape(shape)


def encode_infer_response(
    *,
    model_name: str,
    model_version: int,
    request_id: str | None,
    outputs: list[OutputTensor],
    final_flag: bool = False,
) -> Any:
    """A `ModelInferResponse` with every tensor in `raw_output_contents`."""
    response = pb.ModelInferResponse(
        model_name=model_name, model_version=str(model_version), id=request_id or ""
    )
    if final_flag:
        # one answer per request: it is also the final one
        response.parameters[FINAL_RESPONSE].bool_param = True
    for out in outputs:
        array = np.ascontiguousarray(out.array, NUMPY_DTYPES[out.datatype])
        response.outputs.add(name=out.name, datatype=out.datatype.value, shape=list(array.shape))
        raw = bytes_tensor(array) if out.datatype is Datatype.BYTES else array.tobytes()
        response.raw_output_contents.append(raw)
    return response
