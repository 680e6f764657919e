"""Wrap a one-step graph `(x [B, 1, ...], seq_lens, *states) -> (y_t, *states')` in an ONNX Scan
over the time axis, each state update masked by `t < seq_lens`."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.inliner
from onnx import TensorProto, helper, numpy_helper

from export.errors import ExportError, describe
from export.model_io import GraphIO

_PREFIX = "step/"


def _renamed(step: onnx.GraphProto, names: dict[str, str]) -> list[onnx.NodeProto]:
    """The step's nodes with every value renamed (prefixed unless mapped)."""

    def name(value: str) -> str:
        if not value:
            return value
        return names.get(value, _PREFIX + value)

    nodes = []
    for node in step.node:
        if any(
            a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
            for a in node.attribute
        ):
            raise ExportError(f"the one-step graph holds a {node.op_type} with a subgraph")
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = _PREFIX + node.name if node.name else ""
        copy.ClearField("input")
        copy.ClearField("output")
        copy.input.extend(name(i) for i in node.input)
        copy.output.extend(name(o) for o in node.output)
        nodes.append(copy)
    return nodes


def scan_over_time(step_bytes: bytes, io: GraphIO) -> bytes:
    """The serving graph: the step graph as the body of a Scan over `seq`."""
    step_model = onnx.inliner.inline_local_functions(onnx.load_from_string(step_bytes))
    step = step_model.graph
    carry = [f"carry/{s.name}" for s in io.states]
    names = {io.input_name: "body/x", "seq_lens": "seq_lens"}
    names.update({s.input: c for s, c in zip(io.states, carry, strict=True)})
    consts = [
        numpy_helper.from_array(np.asarray([1], np.int64), "body/axis1"),
        numpy_helper.from_array(np.asarray([1, -1, 1], np.int64), "body/mask_shape"),
    ]
    body_nodes = [
        helper.make_node("Unsqueeze", ["body/x_t", "body/axis1"], ["body/x"]),
        helper.make_node("Reshape", ["body/m_t", "body/mask_shape"], ["body/mask"]),
        *_renamed(step, names),
    ]
    next_states = []
    for s in io.states:
        new = names.get(s.output, _PREFIX + s.output)
        body_nodes.append(
            helper.make_node(
                "Where", ["body/mask", new, names.get(s.input, "")], [f"next/{s.name}"]
            )
        )
        next_states.append(f"next/{s.name}")
    body_nodes.append(helper.make_node("Identity", [names.get("y", _PREFIX + "y")], ["body/y_t"]))
    initializers = []
    for tensor in step.initializer:
        copy = TensorProto()
        copy.CopyFrom(tensor)
        copy.name = _PREFIX + tensor.name
        initializers.append(copy)
    input_type = TensorProto.INT64 if io.input.tokens else TensorProto.FLOAT
    body = helper.make_graph(
        body_nodes,
        "step",
        [
            *(helper.make_tensor_value_info(c, TensorProto.FLOAT, None) for c in carry),
            helper.make_tensor_value_info("body/x_t", input_type, None),
            helper.make_tensor_value_info("body/m_t", TensorProto.BOOL, None),
        ],
        [
            *(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in next_states),
            helper.make_tensor_value_info("body/y_t", TensorProto.FLOAT, None),
        ],
        [*consts, *initializers],
    )
    outer = [
        numpy_helper.from_array(np.asarray(0, np.int64), "time/zero"),
        numpy_helper.from_array(np.asarray(1, np.int64), "time/one"),
        numpy_helper.from_array(np.asarray([0], np.int64), "time/axis0"),
        numpy_helper.from_array(np.asarray([1], np.int64), "time/axis1"),
    ]
    nodes = [
        helper.make_node("Shape", [io.input_name], ["time/seq_1d"], start=1, end=2),
        helper.make_node("Squeeze", ["time/seq_1d", "time/axis0"], ["time/seq"]),
        helper.make_node("Range", ["time/zero", "time/seq", "time/one"], ["time/steps"]),
        helper.make_node("Unsqueeze", ["time/steps", "time/axis0"], ["time/row"]),
        helper.make_node("Cast", ["seq_lens"], ["time/lens"], to=TensorProto.INT64),
        helper.make_node("Unsqueeze", ["time/lens", "time/axis1"], ["time/column"]),
        helper.make_node("Less", ["time/row", "time/column"], ["time/valid"]),
        helper.make_node(
            "Scan",
            [*(s.input for s in io.states), io.input_name, "time/valid"],
            [*(s.output for s in io.states), "y"],
            body=body,
            num_scan_inputs=2,
            scan_input_axes=[1, 1],
            scan_output_axes=[1],
        ),
    ]
    features = [] if io.input.tokens else [io.input.size]
    # A scan answers at every step (per_step, or last_step read at each sequence's end).
    y_shape: list[str | int] = ["batch", "seq", io.output_size]
    graph = helper.make_graph(
        nodes,
        "rnnserve",
        [
            helper.make_tensor_value_info(io.input_name, input_type, ["batch", "seq", *features]),
            helper.make_tensor_value_info("seq_lens", TensorProto.INT32, ["batch"]),
            *(
                helper.make_tensor_value_info(
                    s.input, TensorProto.FLOAT, [s.rows, "batch", s.width]
                )
                for s in io.states
            ),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape),
            *(
                helper.make_tensor_value_info(
                    s.output, TensorProto.FLOAT, [s.rows, "batch", s.width]
                )
                for s in io.states
            ),
        ],
        outer,
    )
    model = helper.make_model(
        graph,
        opset_imports=list(step_model.opset_import),
        ir_version=step_model.ir_version,
        producer_name="rnnserve.export",
    )
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise ExportError(f"the Scan graph failed onnx.checker: {describe(exc)}") from exc
    serialized: bytes = model.SerializeToString()
    return serialized
