"""onnxruntime sessions for the model contract: one `ModelRunner` per model version."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from service.core.binding import BoundRun
from service.core.card import ModelCard
from service.core.providers import (
    DEFAULT_PROVIDERS,
    ProviderConfig,
    check_actual_providers,
    choose_providers,
    device_id_of,
    uses_io_binding,
)
from service.core.state import FloatArray, RecurrentState, SequenceArray
from service.errors import RepositoryError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RnnBatch:
    """One onnxruntime call: padded inputs, each sequence's length, initial state."""

    inputs: SequenceArray
    seq_lens: npt.NDArray[np.int32]
    state: RecurrentState


@dataclass(frozen=True, slots=True)
class RnnResult:
    """Outputs of one call: `y` ([batch, seq, out], or [batch, out] for per_sequence heads)
    and the state after each sequence's last valid step."""

    y: FloatArray
    state: RecurrentState


# onnxruntime's severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal
ORT_FATAL = 4


def silence_onnxruntime_logger() -> None:
    """Keep onnxruntime's process-wide logger to fatal messages.

    It writes ANSI-coloured text lines straight to stderr, which Python logging cannot route:
    a requested CUDA provider that cannot be created prints an error and a warning there (measured
    with onnxruntime-gpu 1.31 on a host without a GPU), whatever the session's own log level.
    rnnserve logs the provider each model got, and load failures, in its own format instead.
    """
    ort.set_default_logger_severity(ORT_FATAL)


__all__ = ["ModelRunner", "RnnBatch", "RnnResult", "choose_providers"]


class ModelRunner:
    """Runs one exported model; `run` is thread-safe (onnxruntime sessions are, and each
    thread binds through its own IOBinding and output buffers)."""

    def __init__(
        self,
        onnx_path: Path,
        card: ModelCard,
        *,
        providers: list[str],
        intra_op_threads: int,
        config: ProviderConfig = DEFAULT_PROVIDERS,
    ) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(onnx_path),
                sess_options=options,
                providers=providers,
                provider_options=config.options_for(providers),
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise RepositoryError(f"{onnx_path}: onnxruntime cannot load the graph: {exc}") from exc
        self.card = card
        actual = self._session.get_providers()
        self.provider: str = actual[0]
        check_actual_providers(
            model=card.name,
            version=card.version,
            requested=list(config.requested) or providers,
            actual=actual,
            config=config,
        )
        self.io_binding = uses_io_binding(config, self.provider)
        self._device_id = device_id_of(config, self.provider)
        self._bound = threading.local()
        self._output_names = ["y", *(s.output for s in card.states)]

    @property
    def graph_inputs(self) -> dict[str, tuple[str, list[Any]]]:
        """Graph input name -> (onnx type string, shape with symbolic dims as strings)."""
        return {i.name: (i.type, list(i.shape)) for i in self._session.get_inputs()}

    @property
    def graph_outputs(self) -> dict[str, tuple[str, list[Any]]]:
        """Graph output name -> (onnx type string, shape)."""
        return {o.name: (o.type, list(o.shape)) for o in self._session.get_outputs()}

    def zero_state(self, batch_size: int) -> RecurrentState:
        """The all-zero initial state PyTorch uses when h0 is not given."""
        return RecurrentState.zeros(self.card.states, batch_size)

    def run(self, batch: RnnBatch) -> RnnResult:
        """One synchronous onnxruntime call; checks that the batch axis survives."""
        if self.io_binding:
            return self.run_bound(batch)
        return self.run_plain(batch)

    def run_plain(self, batch: RnnBatch) -> RnnResult:
        """One call through `session.run`: onnxruntime allocates the outputs."""
        y, *states = self._session.run(self._output_names, self._feeds(batch))
        return self._checked(batch, y, states)

    def run_bound(self, batch: RnnBatch) -> RnnResult:
        """One call through IOBinding: inputs bound once, outputs written into this thread's
        preallocated buffers on the model's device, then copied to the host."""
        y, *states = self._bound_run().run(self._feeds(batch))
        return self._checked(batch, y, states)

    def run_device_states(
        self, inputs: SequenceArray, seq_lens: npt.NDArray[np.int32], states: list[ort.OrtValue]
    ) -> tuple[FloatArray, list[ort.OrtValue]]:
        """One call from states already on the device (the state pool's gather): `y` on the
        host, the new states left on the device until this thread's next run."""
        feeds: dict[str, Any] = {self.card.input_name: inputs, "seq_lens": seq_lens}
        for spec, value in zip(self.card.states, states, strict=True):
            feeds[spec.input] = value
        y, new_states = self._bound_run().run_keeping_states(feeds)
        if y.shape[0] != inputs.shape[0]:
            raise RuntimeError(f"graph returned batch {y.shape[0]} for {inputs.shape[0]}")
        return y, new_states

    @property
    def device_id(self) -> int:
        """The device the model's provider runs on (0 on the CPU)."""
        return self._device_id

    def _bound_run(self) -> BoundRun:
        bound: BoundRun | None = getattr(self._bound, "run", None)
        if bound is None:
            bound = self._bound.run = BoundRun(
                self._session, self.card, provider=self.provider, device_id=self._device_id
            )
        return bound

    def _feeds(self, batch: RnnBatch) -> dict[str, Any]:
        feeds: dict[str, Any] = {self.card.input_name: batch.inputs, "seq_lens": batch.seq_lens}
        for spec, array in zip(self.card.states, batch.state.arrays, strict=True):
            feeds[spec.input] = array
        return feeds

    def _checked(self, batch: RnnBatch, y: FloatArray, states: list[FloatArray]) -> RnnResult:
        if y.shape[0] != batch.inputs.shape[0]:
            raise RuntimeError(f"graph returned batch {y.shape[0]} for {batch.inputs.shape[0]}")
        return RnnResult(y, RecurrentState(tuple(states)))
