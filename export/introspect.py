"""Turn a torch module into a `RecurrentSpec`: its one recurrent layer and what surrounds it.

Accepted: a bare nn.RNN/nn.LSTM/nn.GRU; or a module holding exactly one of them, optionally an
nn.Embedding in front and one nn.Linear head (per step or on the last step), plus any dropout or
parameter-free modules, which are ignored. A module's input and per-step output follow its
recurrent layer's `batch_first`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import torch
from torch import nn

from export.errors import UnsupportedModuleError, describe
from export.probe import eval_mode


class Cell(StrEnum):
    """The recurrent cell family."""

    RNN = "rnn"
    LSTM = "lstm"
    GRU = "gru"


class Nonlinearity(StrEnum):
    """nn.RNN's nonlinearity; LSTM and GRU have fixed gates."""

    TANH = "tanh"
    RELU = "relu"


class Head(StrEnum):
    """Whether the model's answer is every step's output or the last valid step's."""

    PER_STEP = "per_step"
    LAST_STEP = "last_step"


_CELL_BY_MODE: dict[str, tuple[Cell, Nonlinearity | None]] = {
    "RNN_TANH": (Cell.RNN, Nonlinearity.TANH),
    "RNN_RELU": (Cell.RNN, Nonlinearity.RELU),
    "LSTM": (Cell.LSTM, None),
    "GRU": (Cell.GRU, None),
}
_SUPPORTED = (
    "supported: one nn.RNN, nn.LSTM or nn.GRU, an optional nn.Embedding in front of it, "
    "an optional nn.Linear head, and any dropout or parameter-free modules"
)
# Sample sizes for the probing forward pass: distinct, so the output's axes can be told apart.
_SAMPLE_BATCH = 2
_SAMPLE_SEQ = 5


@dataclass(frozen=True)
class RecurrentSpec:
    """What the ONNX builder and the parity check need to know about a recurrent module."""

    cell: Cell
    rnn_name: str
    rnn: nn.RNNBase
    embedding: nn.Embedding | None
    linear: nn.Linear | None
    head: Head
    batch_first: bool
    bidirectional: bool
    num_layers: int
    hidden_size: int
    nonlinearity: Nonlinearity | None
    bias: bool
    input_size: int | None
    vocab_size: int | None
    embedding_dim: int | None
    output_size: int

    @property
    def num_directions(self) -> int:
        """2 for bidirectional layers, else 1."""
        return 2 if self.bidirectional else 1

    @property
    def state_rows(self) -> int:
        """Leading axis of h0/hn (and c0/cn): layers x directions."""
        return self.num_layers * self.num_directions

    @property
    def takes_tokens(self) -> bool:
        """True when an embedding turns int64 token ids into the recurrent layer's input."""
        return self.embedding is not None


@dataclass(frozen=True)
class _Parts:
    rnn_name: str
    rnn: nn.RNNBase
    embedding: nn.Embedding | None
    linear_name: str
    linear: nn.Linear | None


def introspect(module: nn.Module, *, head: Head | str | None = None) -> RecurrentSpec:
    """Describe `module`, or raise UnsupportedModuleError saying what was found and what fits.

    `head` wins when given; otherwise a sample forward pass decides: an output with a seq axis
    means per_step, one without means last_step.
    """
    if not isinstance(module, nn.Module):
        raise UnsupportedModuleError(f"expected a torch nn.Module, got {type(module).__name__}")
    explicit_head = _parse_head(head)
    parts = _find_parts(module)
    cell, nonlinearity = _check_recurrent(parts)
    rnn = parts.rnn
    dirs = 2 if rnn.bidirectional else 1
    if parts.linear is not None and parts.linear.in_features != dirs * rnn.hidden_size:
        raise UnsupportedModuleError(
            f"nn.Linear {parts.linear_name} has in_features={parts.linear.in_features} but "
            f"{parts.rnn_name} outputs {dirs}*{rnn.hidden_size}={dirs * rnn.hidden_size} "
            "features per step; supported: one nn.Linear head reading the recurrent output"
        )
    output_size = parts.linear.out_features if parts.linear is not None else dirs * rnn.hidden_size
    detected_head = _probe_head(module, parts, output_size)
    embedding = parts.embedding
    return RecurrentSpec(
        cell=cell,
        rnn_name=parts.rnn_name,
        rnn=rnn,
        embedding=embedding,
        linear=parts.linear,
        head=explicit_head or detected_head,
        batch_first=rnn.batch_first,
        bidirectional=rnn.bidirectional,
        num_layers=rnn.num_layers,
        hidden_size=rnn.hidden_size,
        nonlinearity=nonlinearity,
        bias=rnn.bias,
        input_size=None if embedding is not None else rnn.input_size,
        vocab_size=embedding.num_embeddings if embedding is not None else None,
        embedding_dim=embedding.embedding_dim if embedding is not None else None,
        output_size=output_size,
    )


def _parse_head(head: Head | str | None) -> Head | None:
    if head is None:
        return None
    try:
        return Head(head)
    except ValueError:
        choices = ", ".join(h.value for h in Head)
        raise UnsupportedModuleError(f"unknown head {head!r}; supported: {choices}") from None


def _find_parts(module: nn.Module) -> _Parts:
    recurrent: list[tuple[str, nn.RNNBase]] = []
    embeddings: list[tuple[str, nn.Embedding]] = []
    linears: list[tuple[str, nn.Linear]] = []
    others: list[str] = []
    for name, sub in module.named_modules():
        label = name or "the module itself"
        if isinstance(sub, nn.RNNBase):
            recurrent.append((label, sub))
        elif isinstance(sub, nn.Embedding):
            embeddings.append((label, sub))
        elif isinstance(sub, nn.Linear):
            linears.append((label, sub))
        elif any(True for _ in sub.parameters(recurse=False)) or any(
            True for _ in sub.buffers(recurse=False)
        ):
            others.append(f"{label} ({type(sub).__name__})")
    if not recurrent:
        raise UnsupportedModuleError(
            f"found no recurrent layer in {type(module).__name__}; "
            "supported: exactly one nn.RNN, nn.LSTM or nn.GRU"
        )
    if len(recurrent) > 1:
        found = ", ".join(f"{n} ({type(m).__name__})" for n, m in recurrent)
        raise UnsupportedModuleError(
            f"found {len(recurrent)} recurrent layers: {found}; "
            "supported: exactly one, use num_layers to stack"
        )
    if others:
        raise UnsupportedModuleError(
            f"found unsupported modules with parameters or buffers: {', '.join(others)}; "
            + _SUPPORTED
        )
    for kind, found_modules, role in (
        ("nn.Embedding", embeddings, "in front of the recurrent layer"),
        ("nn.Linear", linears, "the head after the recurrent layer"),
    ):
        if len(found_modules) > 1:
            names = ", ".join(n for n, _ in found_modules)
            raise UnsupportedModuleError(
                f"found {len(found_modules)} {kind} modules: {names}; "
                f"supported: at most one, {role}"
            )
    rnn_name, rnn = recurrent[0]
    linear_name, linear = linears[0] if linears else ("", None)
    return _Parts(rnn_name, rnn, embeddings[0][1] if embeddings else None, linear_name, linear)


def _check_recurrent(parts: _Parts) -> tuple[Cell, Nonlinearity | None]:
    rnn, name = parts.rnn, parts.rnn_name
    if rnn.mode not in _CELL_BY_MODE:
        raise UnsupportedModuleError(
            f"{name} has unknown recurrent mode {rnn.mode!r}; {_SUPPORTED}"
        )
    if rnn.proj_size:
        raise UnsupportedModuleError(
            f"{name} is an LSTM with proj_size={rnn.proj_size}; supported: proj_size=0"
        )
    odd = [n for n, p in rnn.named_parameters() if p.dtype != torch.float32]
    if odd:
        raise UnsupportedModuleError(
            f"{name} has non-float32 parameters ({', '.join(odd)}); call module.float() first"
        )
    embedding = parts.embedding
    if embedding is not None:
        if embedding.embedding_dim != rnn.input_size:
            raise UnsupportedModuleError(
                f"nn.Embedding gives {embedding.embedding_dim} features but {name} takes "
                f"input_size={rnn.input_size}: an embedding mixed into float features is not "
                "supported; supported: token ids -> nn.Embedding -> the recurrent layer"
            )
        if embedding.max_norm is not None:
            raise UnsupportedModuleError(
                "nn.Embedding with max_norm rewrites its rows at lookup; supported: max_norm=None"
            )
    return _CELL_BY_MODE[rnn.mode]


def _probe_head(module: nn.Module, parts: _Parts, output_size: int) -> Head:
    rnn = parts.rnn
    layout = (_SAMPLE_BATCH, _SAMPLE_SEQ) if rnn.batch_first else (_SAMPLE_SEQ, _SAMPLE_BATCH)
    generator = torch.Generator().manual_seed(0)
    device = next(rnn.parameters()).device
    if parts.embedding is not None:
        vocab = parts.embedding.num_embeddings
        sample = torch.randint(0, vocab, layout, generator=generator).to(device)
    else:
        sample = torch.randn(*layout, rnn.input_size, generator=generator).to(device)
    with eval_mode(module):
        try:
            out = module(sample)
        except Exception as exc:
            kind = "int64 token ids" if parts.embedding is not None else "float32 features"
            raise UnsupportedModuleError(
                f"{type(module).__name__}.forward failed on {kind} of shape {list(layout)}: "
                f"{describe(exc)}; supported: forward(x) -> y or forward(x, h0=None) -> (y, h_n)"
            ) from exc
    y = out[0] if isinstance(out, tuple | list) else out
    if isinstance(y, torch.Tensor) and y.ndim == 3 and tuple(y.shape[:2]) == layout:
        head = Head.PER_STEP
    elif isinstance(y, torch.Tensor) and y.ndim == 2 and y.shape[0] == _SAMPLE_BATCH:
        head = Head.LAST_STEP
    else:
        shape = list(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise UnsupportedModuleError(
            f"forward returned y of shape {shape} for input of shape {list(sample.shape)}; "
            "supported: [batch, seq, out] per step or [batch, out] for the last step "
            "(seq first when batch_first=False)"
        )
    if y.shape[-1] != output_size:
        if parts.linear is None:
            raise UnsupportedModuleError(
                f"forward returns outputs of width {y.shape[-1]} but no nn.Linear head was "
                f"found and {parts.rnn_name} alone gives {output_size}; "
                "supported: one nn.Linear head"
            )
        raise UnsupportedModuleError(
            f"forward returns outputs of width {y.shape[-1]} but head {parts.linear_name} gives "
            f"{output_size}; supported: the head's output returned as is"
        )
    return head
