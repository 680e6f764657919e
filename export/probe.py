"""Learn how a user's module is called by calling it: its input, its extra parameters, its layout.

Nothing here trusts names alone: the input's kind comes from the modules that read it, the
layout from the recurrent layers (or from how often the cells run), the head from output shapes
at two lengths.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from export.errors import UnsupportedModuleError, describe
from export.refusal import source_of

LENGTH_NAMES = ("lengths", "lens", "seq_lens", "seq_len", "text_lengths", "length", "x_lengths")
STATE_NAMES = ("h0", "hx", "hidden", "h", "state", "initial_state", "hidden_state", "h_0", "hc")


@dataclass(frozen=True)
class InputKind:
    """The graph's sequence input: int64 token ids of a vocabulary, or float feature vectors."""

    tokens: bool
    size: int

    def sample(self, batch: int, seq: int, *, seed: int = 0) -> torch.Tensor:
        """A batch-first random input of this kind."""
        generator = torch.Generator().manual_seed(seed)
        if self.tokens:
            return torch.randint(0, self.size, (batch, seq), generator=generator)
        return torch.randn(batch, seq, self.size, generator=generator)


@dataclass(frozen=True)
class Signature:
    """How forward takes its arguments beyond the sequence."""

    lengths_arg: str | None
    required_state_arg: str | None


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Run the block with `module` in eval mode and no autograd, then restore its mode."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


def read_signature(module: nn.Module, lengths_arg: str | None) -> Signature:
    """Sort forward's parameters after the first into lengths, state and defaulted ones.

    A required parameter that is neither gets a refusal naming it and its line.
    """
    params = list(inspect.signature(module.forward).parameters.values())[1:]
    found_lengths: str | None = None
    required_state: str | None = None
    for param in params:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if param.name == lengths_arg or (lengths_arg is None and param.name in LENGTH_NAMES):
            found_lengths = param.name
        elif param.default is not param.empty:
            continue
        elif param.name in STATE_NAMES:
            required_state = param.name
        else:
            raise UnsupportedModuleError(
                f"a second input it cannot interpret: forward's parameter {param.name!r} has no "
                f"default and is not a lengths or initial-state argument ({source_of(module)}); "
                f"name the lengths argument with --lengths-arg {param.name} if it is one"
            )
    if lengths_arg is not None and found_lengths is None:
        raise UnsupportedModuleError(
            f"--lengths-arg {lengths_arg}: forward has no parameter of that name "
            f"({source_of(module)})"
        )
    return Signature(lengths_arg=found_lengths, required_state_arg=required_state)


def find_input(module: nn.Module, signature: Signature) -> InputKind:
    """Tokens when an nn.Embedding reads the raw input, else float features of the width the
    first parametrised module reads (a forward probe confirms it)."""
    candidates: list[InputKind] = []
    for sub in module.modules():
        if isinstance(sub, nn.Embedding):
            candidates.append(InputKind(tokens=True, size=sub.num_embeddings))
        elif isinstance(sub, nn.RNNBase | nn.RNNCellBase):
            candidates.append(InputKind(tokens=False, size=sub.input_size))
        elif isinstance(sub, nn.Linear):
            candidates.append(InputKind(tokens=False, size=sub.in_features))
        elif isinstance(sub, nn.LayerNorm):
            candidates.append(InputKind(tokens=False, size=sub.normalized_shape[-1]))
        elif isinstance(sub, nn.Conv1d):
            candidates.append(InputKind(tokens=False, size=sub.in_channels))
    seen: list[InputKind] = []
    for kind in candidates:
        if kind not in seen:
            seen.append(kind)
    return _first_that_runs(module, seen, signature)


def _first_that_runs(module: nn.Module, kinds: list[InputKind], signature: Signature) -> InputKind:
    if not kinds:
        raise UnsupportedModuleError(
            f"found no recurrent layer or cell in {type(module).__name__} ({source_of(module)}); "
            "supported: nn.RNN/nn.LSTM/nn.GRU layers or cells stepped over time"
        )
    failures = []
    for kind in kinds:
        for batch_first in (True, False):
            sample = kind.sample(2, 3)
            try:
                with eval_mode(module):
                    laid_out = sample if batch_first else sample.transpose(0, 1)
                    call(module, laid_out, torch.full((2,), 3, dtype=torch.int64), signature)
            except Exception as exc:
                failures.append(exc)
                continue
            return kind
    raise UnsupportedModuleError(
        f"{type(module).__name__}.forward failed on every input tried (token ids, float features "
        f"of the first layer's width): {describe(failures[0])} ({source_of(module, failures[0])})"
    )


def call(
    module: nn.Module,
    inputs: torch.Tensor,
    lengths: torch.Tensor | None,
    signature: Signature | None = None,
    state: Any = None,
) -> Any:
    """Call forward as its user would: the sequence, then the lengths argument if it has one."""
    kwargs: dict[str, Any] = {}
    if signature is not None and signature.lengths_arg is not None:
        kwargs[signature.lengths_arg] = lengths
    if signature is not None and signature.required_state_arg is not None:
        kwargs[signature.required_state_arg] = state
    return module(inputs, **kwargs)


_VALUE_READS = frozenset(
    {
        torch.Tensor.__bool__,
        torch.Tensor.__int__,
        torch.Tensor.__float__,
        torch.Tensor.__index__,
        torch.Tensor.item,
        torch.Tensor.tolist,
    }
)


class ValueReads(TorchFunctionMode):
    """Counts the times code turns a tensor's value into a Python value (an `if` on a tensor,
    `.item()`): forward then depends on data in a way no fixed graph follows."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func in _VALUE_READS:
            self.count += 1
        return func(*args, **(kwargs or {}))


def first_tensor(out: Any) -> torch.Tensor:
    """The answer of a forward: the tensor itself, or the first tensor of a tuple/list."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, tuple | list):
        for item in out:
            if isinstance(item, torch.Tensor):
                return item
    raise UnsupportedModuleError(f"forward returned {type(out).__name__}, not a tensor")
