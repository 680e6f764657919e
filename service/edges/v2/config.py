"""Triton's model configuration (`GET /v2/models/{m}/config`) derived from a card and the settings.

perf_analyzer reads this before anything else; Triton clients read it to learn the batching.
The batch convention is Triton's implicit batch dimension: `max_batch_size > 0` and every V2
tensor batch-first, so `dims` leave the batch out (`x` is `[seq, features]` per item). The
state tensors, `[rows, batch, width]` in the graph, are batch-first on V2 for that reason
(`service.edges.v2.layout`). `seq_lens` is one number per item, `[batch, 1]` (`dims: [1]`;
perf_analyzer refuses an empty per-item shape; `[batch]` is still accepted). The sequence input
is the only required input; `seq_lens` and every state input are `optional`, so tools generate
only `x` (or `tokens`).

Streamable models declare `sequence_batching` (perf_analyzer then sends sequence parameters),
others `dynamic_batching`; `Settings.v2_sequence_batching = False` declares `dynamic_batching`
for every model, for stateless profiling. Requests with or without sequence parameters are
served either way. The JSON uses protobuf's field names and numbers (Triton's HTTP form);
the gRPC edge parses the same mapping into `ModelConfig`.
"""

from __future__ import annotations

from typing import Any

from service.core.version import LoadedModel
from service.edges.v2.codec import TensorSpec
from service.edges.v2.contract import PLATFORM, contract_specs
from service.settings import Settings

BACKEND = "onnxruntime"
US_PER_MS = 1000
US_PER_S = 1_000_000


def data_type(spec: TensorSpec) -> str:
    """The config's `TYPE_*` name for a V2 datatype (`FP32` -> `TYPE_FP32`)."""
    return f"TYPE_{spec.datatype.value}"


def _tensor(spec: TensorSpec, *, is_input: bool) -> dict[str, Any]:
    # every V2 tensor is batch-first: the config's dims are the per-item shape
    tensor: dict[str, Any] = {
        "name": spec.name,
        "data_type": data_type(spec),
        "dims": list(spec.shape[1:]),
    }
    if is_input:
        tensor["optional"] = spec.optional
    return tensor


def _kind(model: LoadedModel) -> str:
    return "KIND_GPU" if model.runner.provider.startswith("CUDA") else "KIND_CPU"


def model_config(model: LoadedModel, settings: Settings) -> dict[str, Any]:
    """The Triton model configuration of a ready model version."""
    card = model.card
    specs = contract_specs(card)
    config: dict[str, Any] = {
        "name": model.name,
        "platform": PLATFORM,
        "backend": BACKEND,
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": settings.max_batch_size,
        "input": [_tensor(s, is_input=True) for s in specs.inputs.values()],
        "output": [_tensor(s, is_input=False) for s in specs.outputs.values()],
        "instance_group": [{"name": f"{model.name}_0", "kind": _kind(model), "count": 1}],
        "parameters": {"rnnserve_version": {"string_value": str(model.version)}},
    }
    if card.streamable and settings.v2_sequence_batching:
        config["sequence_batching"] = {
            "max_sequence_idle_microseconds": round(settings.session_ttl_s * US_PER_S),
            "oldest": {
                "max_candidate_sequences": settings.max_sessions,
                "preferred_batch_size": [],
                "max_queue_delay_microseconds": round(settings.max_step_delay_ms * US_PER_MS),
            },
        }
    else:
        config["dynamic_batching"] = {
            "preferred_batch_size": [],
            "max_queue_delay_microseconds": round(settings.max_queue_delay_ms * US_PER_MS),
        }
    return config
