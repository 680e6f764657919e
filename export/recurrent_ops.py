"""One recurrent layer as a torch custom op that the ONNX exporter turns into an RNN/LSTM/GRU node.

The dynamo exporter unrolls nn.RNN/LSTM/GRU into per-step MatMuls and fixes the seq axis
(DESIGN.md section 2). Swapping each layer for `rnnserve::<kind>_layer` keeps it one opaque call
while torch.export traces, and `TRANSLATIONS` writes that call as the ONNX node with
`sequence_lens` wired. Weights are in ONNX layout already (gates reordered, biases [Wb, Rb]), so
the translation is a single node plus the reshape of its Y output.

The eager implementations follow ONNX semantics (steps past a sequence's length leave the state
alone and give zeros), so a patched module run in torch means what its graph means.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from onnxscript import opset18 as op
from torch import nn

Floats = npt.NDArray[np.float32]

# Rows of PyTorch's stacked gate weights, taken in the order ONNX wants them.
GATE_ORDER: dict[str, tuple[int, ...]] = {
    "RNN": (0,),
    "LSTM": (0, 3, 1, 2),  # torch i,f,g,o -> onnx i,o,f,c
    "GRU": (1, 0, 2),  # torch r,z,n -> onnx z,r,h
}


def onnx_family(rnn: nn.RNNBase) -> str:
    """`RNN`, `LSTM` or `GRU`: the ONNX op for this module's mode."""
    return "RNN" if rnn.mode.startswith("RNN_") else rnn.mode


def layer_weights(rnn: nn.RNNBase, layer: int) -> tuple[Floats, Floats, Floats]:
    """W, R, B of one layer, directions stacked, gates reordered from PyTorch to ONNX."""
    order = GATE_ORDER[onnx_family(rnn)]
    directions = 2 if rnn.bidirectional else 1

    def gates(name: str) -> Floats:
        value = getattr(rnn, name).detach().cpu().numpy().astype(np.float32)
        blocks = np.split(value, len(order), axis=0)
        return np.concatenate([blocks[i] for i in order], axis=0)

    ws, rs, bs = [], [], []
    for suffix in ("", "_reverse")[:directions]:
        ws.append(gates(f"weight_ih_l{layer}{suffix}"))
        rs.append(gates(f"weight_hh_l{layer}{suffix}"))
        if rnn.bias:
            bs.append(
                np.concatenate(
                    [gates(f"bias_ih_l{layer}{suffix}"), gates(f"bias_hh_l{layer}{suffix}")]
                )
            )
        else:
            bs.append(np.zeros(2 * len(order) * rnn.hidden_size, dtype=np.float32))
    return np.stack(ws), np.stack(rs), np.stack(bs)


def _step(
    family: str, activation: str, x: torch.Tensor, state: tuple[torch.Tensor, ...], w: Any
) -> tuple[torch.Tensor, ...]:
    """One step of one direction in ONNX gate order; returns the new state (h first)."""
    wi, ri, wb, rb = w
    gx = x @ wi.T + wb
    gh = state[0] @ ri.T + rb
    if family == "RNN":
        act = torch.tanh if activation == "Tanh" else torch.relu
        return (act(gx + gh),)
    if family == "LSTM":
        i, o, f, c = (gx + gh).chunk(4, dim=-1)
        cell = torch.sigmoid(f) * state[1] + torch.sigmoid(i) * torch.tanh(c)
        return torch.sigmoid(o) * torch.tanh(cell), cell
    xz, xr, xh = gx.chunk(3, dim=-1)
    hz, hr, hh = gh.chunk(3, dim=-1)
    z, r = torch.sigmoid(xz + hz), torch.sigmoid(xr + hr)
    return ((1 - z) * torch.tanh(xh + r * hh) + z * state[0],)


def _reference_layer(
    family: str,
    activation: str,
    x: torch.Tensor,
    w: torch.Tensor,
    r: torch.Tensor,
    b: torch.Tensor,
    seq_lens: torch.Tensor,
    initial: tuple[torch.Tensor, ...],
) -> tuple[torch.Tensor, ...]:
    """The ONNX node's semantics in torch: a masked loop per direction."""
    steps, directions, hidden = x.shape[0], w.shape[0], r.shape[-1]
    valid = torch.arange(steps, device=x.device)[:, None] < seq_lens.to(x.device)[None, :]
    outputs, ends = [], []
    for d in range(directions):
        weights = (w[d], r[d], b[d, : w.shape[1]], b[d, w.shape[1] :])
        state = tuple(s[d] for s in initial)
        y = x.new_zeros(steps, x.shape[1], hidden)
        order = range(steps) if d == 0 else range(steps - 1, -1, -1)
        for t in order:
            new = _step(family, activation, x[t], state, weights)
            mask = valid[t][:, None]
            state = tuple(torch.where(mask, n, s) for n, s in zip(new, state, strict=True))
            y[t] = torch.where(mask, new[0], torch.zeros_like(new[0]))
        outputs.append(y)
        ends.append(state)
    y_all = torch.cat(outputs, dim=-1)
    return (y_all, *(torch.stack([e[k] for e in ends]) for k in range(len(initial))))


@torch.library.custom_op("rnnserve::rnn_layer", mutates_args=())
def rnn_layer(
    x: torch.Tensor,
    w: torch.Tensor,
    r: torch.Tensor,
    b: torch.Tensor,
    seq_lens: torch.Tensor,
    h0: torch.Tensor,
    activation: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ONNX RNN: x [T, B, I], state [D, B, H] -> (y [T, B, D*H], hn)."""
    y, hn = _reference_layer("RNN", activation, x, w, r, b, seq_lens, (h0,))
    return y, hn


@torch.library.custom_op("rnnserve::gru_layer", mutates_args=())
def gru_layer(
    x: torch.Tensor,
    w: torch.Tensor,
    r: torch.Tensor,
    b: torch.Tensor,
    seq_lens: torch.Tensor,
    h0: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ONNX GRU with linear_before_reset=1 (PyTorch's GRU)."""
    y, hn = _reference_layer("GRU", "", x, w, r, b, seq_lens, (h0,))
    return y, hn


@torch.library.custom_op("rnnserve::lstm_layer", mutates_args=())
def lstm_layer(
    x: torch.Tensor,
    w: torch.Tensor,
    r: torch.Tensor,
    b: torch.Tensor,
    seq_lens: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ONNX LSTM without peepholes."""
    y, hn, cn = _reference_layer("LSTM", "", x, w, r, b, seq_lens, (h0, c0))
    return y, hn, cn


def _fake_y(x: torch.Tensor, r: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    return x.new_empty(x.shape[0], x.shape[1], h0.shape[0] * r.shape[-1])


@rnn_layer.register_fake
def _rnn_fake(x, w, r, b, seq_lens, h0, activation):  # type: ignore[no-untyped-def]
    return _fake_y(x, r, h0), torch.empty_like(h0)


@gru_layer.register_fake
def _gru_fake(x, w, r, b, seq_lens, h0):  # type: ignore[no-untyped-def]
    return _fake_y(x, r, h0), torch.empty_like(h0)


@lstm_layer.register_fake
def _lstm_fake(x, w, r, b, seq_lens, h0, c0):  # type: ignore[no-untyped-def]
    return _fake_y(x, r, h0), torch.empty_like(h0), torch.empty_like(c0)


def _direction(w: Any) -> str:
    return "bidirectional" if w.shape[0] == 2 else "forward"


def _flat(y: Any) -> Any:
    # ONNX Y is [T, dirs, B, H]; callers want each step's directions side by side.
    shape = op.Constant(value_ints=[0, 0, -1])
    return op.Reshape(op.Transpose(y, perm=[0, 2, 1, 3]), shape)  # type: ignore[arg-type]


def _rnn_onnx(x, w, r, b, seq_lens, h0, activation: str):  # type: ignore[no-untyped-def]
    hidden = r.shape[-1]
    y, hn = op.RNN(
        x,
        w,
        r,
        b,
        op.Cast(seq_lens, to=6),  # type: ignore[arg-type]
        h0,
        hidden_size=hidden,
        direction=_direction(w),
        activations=[activation] * w.shape[0],
    )
    return _flat(y), hn


def _gru_onnx(x, w, r, b, seq_lens, h0):  # type: ignore[no-untyped-def]
    y, hn = op.GRU(
        x,
        w,
        r,
        b,
        op.Cast(seq_lens, to=6),  # type: ignore[arg-type]
        h0,
        hidden_size=r.shape[-1],
        direction=_direction(w),
        linear_before_reset=1,
    )
    return _flat(y), hn


def _lstm_onnx(x, w, r, b, seq_lens, h0, c0):  # type: ignore[no-untyped-def]
    y, hn, cn = op.LSTM(
        x,
        w,
        r,
        b,
        op.Cast(seq_lens, to=6),  # type: ignore[arg-type]
        h0,
        c0,
        hidden_size=r.shape[-1],
        direction=_direction(w),
    )
    return _flat(y), hn, cn


TRANSLATIONS: dict[Any, Callable[..., Any]] = {
    torch.ops.rnnserve.rnn_layer.default: _rnn_onnx,
    torch.ops.rnnserve.gru_layer.default: _gru_onnx,
    torch.ops.rnnserve.lstm_layer.default: _lstm_onnx,
}
