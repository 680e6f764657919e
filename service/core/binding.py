"""One thread's IOBinding for a model: inputs bound once per batch, outputs written into
preallocated buffers on the model's device.

`session.run` lets onnxruntime allocate every output and, on CUDA, copies each input to the
device and each output back as separate steps it arranges itself. With IOBinding the outputs
land in buffers allocated once per output and size bucket (grow-only: a buffer is replaced only
by a larger power-of-two one), so a steady stream of batches allocates nothing on the device.
The same code runs on CPU OrtValues, which is how the CPU suite tests it (bit for bit against
`session.run`).

A buffer is reused by the next batch of the same thread, so results are always copied out to
fresh host arrays before `run` returns: callers keep views of them for as long as they like.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnxruntime as ort

from service.core.card import ModelCard
from service.core.state import FloatArray

CUDA = "CUDAExecutionProvider"
MIN_BUFFER_ELEMENTS = 1024


def device_type_of(provider: str) -> str:
    """onnxruntime's device name for an execution provider's memory."""
    return "cuda" if provider == CUDA else "cpu"


def bucket_of(elements: int) -> int:
    """The buffer size that holds `elements`: the next power of two, at least a minimum."""
    return max(MIN_BUFFER_ELEMENTS, 1 << max(elements - 1, 0).bit_length())


class BoundRun:
    """Runs a model's batches through one IOBinding; one per thread (not thread-safe)."""

    def __init__(
        self,
        session: ort.InferenceSession,
        card: ModelCard,
        *,
        provider: str,
        device_id: int = 0,
    ) -> None:
        self._session = session
        self._card = card
        self._device = device_type_of(provider)
        self._device_id = device_id
        self._binding = session.io_binding()
        self._buffers: dict[str, ort.OrtValue] = {}
        self._capacity: dict[str, int] = {}  # elements of each buffer (shape() costs a call)
        self._output_names = ["y", *(s.output for s in card.states)]

    @property
    def buffer_sizes(self) -> dict[str, int]:
        """Elements held by each output's device buffer (for tests and the bench)."""
        return dict(self._capacity)

    def output_shapes(self, feeds: Mapping[str, Any]) -> list[list[int]]:
        """What each output will hold for these inputs, as the model contract fixes it."""
        inputs = feeds[self._card.input_name]
        batch, steps = int(inputs.shape[0]), int(inputs.shape[1])
        y_shape = [batch, steps] if self._card.answers_per_step else [batch]
        shapes = [[*y_shape, self._card.output_size]]
        shapes += [[s.rows, batch, s.width] for s in self._card.states]
        return shapes

    def run(self, feeds: Mapping[str, Any]) -> list[FloatArray]:
        """One call: `y` and every state output, copied to fresh host arrays."""
        self._run(feeds)
        outputs: list[FloatArray] = self._binding.copy_outputs_to_cpu()
        return outputs

    def run_keeping_states(self, feeds: Mapping[str, Any]) -> tuple[FloatArray, list[ort.OrtValue]]:
        """One call: `y` copied to the host, the state outputs left on the device (views of
        this thread's buffers: valid until its next run, so scatter them before that)."""
        self._run(feeds)
        y, *states = self._binding.get_outputs()
        # on the CPU `numpy()` is a view of this thread's buffer, which the next run overwrites
        host_y: FloatArray = np.array(y.numpy(), copy=True)
        return host_y, states

    def _run(self, feeds: Mapping[str, Any]) -> None:
        binding = self._binding
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        for name, value in feeds.items():
            if isinstance(value, ort.OrtValue):
                binding.bind_ortvalue_input(name, value)
            else:
                # contiguous host memory; onnxruntime copies it to the device inside the run
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name, shape in zip(self._output_names, self.output_shapes(feeds), strict=True):
            buffer = self._buffer(name, math.prod(shape))
            binding.bind_output(
                name, self._device, self._device_id, np.float32, shape, buffer.data_ptr()
            )
        binding.synchronize_inputs()
        self._session.run_with_iobinding(binding)
        binding.synchronize_outputs()

    def _buffer(self, name: str, elements: int) -> ort.OrtValue:
        if self._capacity.get(name, 0) >= elements:
            return self._buffers[name]
        size = bucket_of(elements)
        buffer = ort.OrtValue.ortvalue_from_shape_and_type(
            [size], np.float32, self._device, self._device_id
        )
        self._buffers[name], self._capacity[name] = buffer, size
        return buffer
