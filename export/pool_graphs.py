"""The three helper graphs of rnnserve's device state pool (service/core/state_pool.py).

The server must not import onnx, so the graphs are built here and committed as files under
`service/core/graphs/`; tests/unit/core/test_state_pool.py checks the files equal what this
module builds. `python -m export.pool_graphs` rewrites them.

Every graph has symbolic shapes, so one file serves every state tensor of every model:
- gather: pool [slots, rows, width], slots [n] -> state [rows, n, width] (the model's layout)
- scatter: pool, slots [n], updates [rows, n, width] -> pool with those slots replaced; the
  server binds the output to the input's own buffer (ScatterElements skips its copy then)
- grow: pool, pads [6] -> the pool padded with zero slots at the end
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

GRAPHS_DIR = Path(__file__).resolve().parents[1] / "service" / "core" / "graphs"
OPSET = 17
IR_VERSION = 8
POOL = ["slots_total", "rows", "width"]


def _model(graph: onnx.GraphProto) -> bytes:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="rnnserve"
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString(deterministic=True)
    return data


def gather_graph() -> bytes:
    """Rows of the pool by slot index, in the model's [rows, batch, width] layout."""
    nodes = [
        helper.make_node("Gather", ["pool", "slots"], ["picked"], axis=0),
        helper.make_node("Transpose", ["picked"], ["state"], perm=[1, 0, 2]),
    ]
    graph = helper.make_graph(
        nodes,
        "state_gather",
        [
            helper.make_tensor_value_info("pool", TensorProto.FLOAT, POOL),
            helper.make_tensor_value_info("slots", TensorProto.INT64, ["n"]),
        ],
        [helper.make_tensor_value_info("state", TensorProto.FLOAT, ["rows", "n", "width"])],
    )
    return _model(graph)


def scatter_graph() -> bytes:
    """The pool with the given slots replaced by a batch's states."""
    column = helper.make_tensor("column", TensorProto.INT64, [3], [-1, 1, 1])
    nodes = [
        helper.make_node("Transpose", ["updates"], ["rows_first"], perm=[1, 0, 2]),
        helper.make_node("Shape", ["rows_first"], ["shape"]),
        helper.make_node("Constant", [], ["column"], value=column),
        helper.make_node("Reshape", ["slots", "column"], ["slot_column"]),
        helper.make_node("Expand", ["slot_column", "shape"], ["indices"]),
        helper.make_node(
            "ScatterElements", ["pool", "indices", "rows_first"], ["pool_out"], axis=0
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "state_scatter",
        [
            helper.make_tensor_value_info("pool", TensorProto.FLOAT, POOL),
            helper.make_tensor_value_info("slots", TensorProto.INT64, ["n"]),
            helper.make_tensor_value_info("updates", TensorProto.FLOAT, ["rows", "n", "width"]),
        ],
        [helper.make_tensor_value_info("pool_out", TensorProto.FLOAT, POOL)],
    )
    return _model(graph)


def grow_graph() -> bytes:
    """The pool with zero slots appended (Pad on the slot axis)."""
    nodes = [helper.make_node("Pad", ["pool", "pads"], ["grown"], mode="constant")]
    graph = helper.make_graph(
        nodes,
        "state_grow",
        [
            helper.make_tensor_value_info("pool", TensorProto.FLOAT, POOL),
            helper.make_tensor_value_info("pads", TensorProto.INT64, [6]),
        ],
        [
            helper.make_tensor_value_info(
                "grown", TensorProto.FLOAT, ["grown_slots", "rows", "width"]
            )
        ],
    )
    return _model(graph)


def build_graphs() -> dict[str, bytes]:
    """File name -> serialized model, for every helper graph."""
    return {
        "state_gather.onnx": gather_graph(),
        "state_scatter.onnx": scatter_graph(),
        "state_grow.onnx": grow_graph(),
    }


def main() -> None:
    """Write the graphs into service/core/graphs/."""
    GRAPHS_DIR.mkdir(exist_ok=True)
    for name, data in build_graphs().items():
        (GRAPHS_DIR / name).write_bytes(data)
        print(f"wrote {GRAPHS_DIR / name} ({len(data)} bytes)")


if __name__ == "__main__":
    main()
