"""torch.export (non-strict) then torch.onnx.export of a wrapper with the contract's signature,
with failures turned into one-line refusals naming the construct and the user's file:line."""

from __future__ import annotations

import io as _io
import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from typing import Any

import onnx
import torch
from torch import nn

from export.errors import UnsupportedModuleError, describe
from export.model_io import GraphIO
from export.recurrent_ops import TRANSLATIONS
from export.refusal import source_of, stack_location

OPSET = 18
EXAMPLE_BATCH = 3
EXAMPLE_SEQ = 7


def _example(io: GraphIO, seq: int) -> tuple[torch.Tensor, ...]:
    inputs = io.input.sample(EXAMPLE_BATCH, seq)
    lengths = torch.full((EXAMPLE_BATCH,), seq, dtype=torch.int32)
    states = tuple(torch.zeros(s.rows, EXAMPLE_BATCH, s.width) for s in io.states)
    return (inputs, lengths, *states)


def export_graph(wrapper: nn.Module, module: nn.Module, io: GraphIO, *, dynamic_seq: bool) -> bytes:
    """The serialized ONNX graph of `wrapper(inputs, seq_lens, *states)`, inputs and outputs
    named by the contract, batch (and seq when `dynamic_seq`) dynamic."""
    seq = EXAMPLE_SEQ if dynamic_seq else 1
    example = _example(io, seq)
    batch = torch.export.Dim("batch")
    input_axes: dict[int, Any] = {0: batch}
    if dynamic_seq:
        input_axes[1] = torch.export.Dim("seq")
    dynamic = {
        "inputs": input_axes,
        "seq_lens": {0: batch},
        "states": tuple({1: batch} for _ in io.states),
    }
    try:
        with _quiet():
            program = torch.export.export(wrapper, example, dynamic_shapes=dynamic, strict=False)
    except UnsupportedModuleError:
        raise
    except Exception as exc:
        raise UnsupportedModuleError(_trace_refusal(exc, module)) from exc
    names_in = [io.input_name, "seq_lens", *(s.input for s in io.states)]
    names_out = ["y", *(s.output for s in io.states)]
    try:
        with _quiet():
            onnx_program = torch.onnx.export(
                program,
                dynamo=True,
                input_names=names_in,
                output_names=names_out,
                custom_translation_table=TRANSLATIONS,
                opset_version=OPSET,
                optimize=True,
                verify=False,
                report=False,
            )
    except Exception as exc:
        raise UnsupportedModuleError(_conversion_refusal(exc, program, module)) from exc
    assert onnx_program is not None
    model = onnx_program.model_proto
    _name_axes(model, dynamic_seq)
    serialized: bytes = model.SerializeToString()
    return serialized


@contextmanager
def _quiet() -> Iterator[None]:
    """torch.export and the ONNX exporter report progress, warnings and log lines; failures
    reach the user as one refusal line instead."""
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with (
            warnings.catch_warnings(),
            redirect_stdout(_io.StringIO()),
            redirect_stderr(_io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _name_axes(model: onnx.ModelProto, dynamic_seq: bool) -> None:
    """The contract names the axes `batch` and `seq` on every input and output."""
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if value.name == "seq_lens" or len(dims) < 2:
            if dims:
                dims[0].dim_param = "batch"
            continue
        if value.name in ("x", "tokens") or (value.name == "y" and len(dims) == 3):
            dims[0].dim_param = "batch"
            if dynamic_seq:
                dims[1].dim_param = "seq"
        elif value.name == "y":
            dims[0].dim_param = "batch"
        else:
            dims[1].dim_param = "batch"


_DATA_DEPENDENT = re.compile(
    r"data.dependent|GuardOnDataDependent|Could not guard on data-dependent|item\(\)|nonzero",
    re.IGNORECASE,
)
_SPECIALIZED = re.compile(r"Constraints violated|specialized|not.*dynamic|guard", re.IGNORECASE)


def _trace_refusal(exc: BaseException, module: nn.Module) -> str:
    where = source_of(module, exc)
    text = describe(exc)
    if _DATA_DEPENDENT.search(text):
        return (
            f"data-dependent Python control flow at {where}: forward branches or loops on the "
            "values of a tensor, which a traced graph cannot follow"
        )
    if _SPECIALIZED.search(text):
        return (
            f"Python control flow on the input's shape at {where}: forward depends on the batch "
            "or sequence length as a Python number, so no graph serves every length"
        )
    return f"forward could not be traced at {where}: {text}"


_OP_NAME = re.compile(r"(aten|prims)[.:]+([A-Za-z0-9_]+)(?:\.([A-Za-z0-9_]+))?")


def _conversion_refusal(exc: BaseException, program: Any, module: nn.Module) -> str:
    text = " ".join(str(e) for e in _chain(exc))
    match = _OP_NAME.search(text)
    if match is None:
        return f"the traced forward could not be written as ONNX: {describe(exc)}"
    op_name = match.group(2)
    where = None
    for node in program.graph.nodes:
        if node.op == "call_function" and op_name in str(node.target):
            where = stack_location(node.meta.get("stack_trace"), module)
            if where is not None:
                break
    located = where or source_of(module)
    return f"an op with no ONNX form: torch.ops.aten.{op_name} at {located}"


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen
