"""Triton's classification extension, and the parameters an infer request may carry.

`outputs: [{"name": "y", "parameters": {"classification": k}}]` answers `y` as a BYTES tensor of
the k largest values along its last axis, largest first, each `"value:index"` (value as C's
`%f`), or `"value:index:label"` when the card has labels (Triton's format). Where the class is
read follows the card's head: `per_step` models answer `[batch, seq, k]` (every step),
`last_step` models `[batch, k]` at each sequence's last valid step (what v1 predicts answer by
default), `per_sequence` models `[batch, k]`.

A parameter rnnserve does not act on is a 400 naming it: a client asking for shared memory, a
different classification or an unknown option gets an error, never a different tensor than it
asked for.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.core.card import Head, ModelCard
from service.edges.v2.codec import Datatype, InferRequest, OutputTensor
from service.errors import InvalidInputError

CLASSIFICATION = "classification"
CLASSIFIED_OUTPUT = "y"

# what tritonclient and kserve clients send and rnnserve honours (or, for priority and timeout,
# may ignore without changing the answer: a request is never dropped or reordered for them)
REQUEST_PARAMETERS = frozenset(
    {"binary_data_output", "sequence_id", "sequence_start", "sequence_end", "priority", "timeout"}
)
OUTPUT_PARAMETERS = frozenset({"binary_data", CLASSIFICATION})
SHARED_MEMORY = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")


def check_parameters(request: InferRequest) -> None:
    """400 for any request or output parameter rnnserve would not honour."""
    for key in request.parameters:
        if key not in REQUEST_PARAMETERS:
            raise InvalidInputError(
                f"request parameter {key!r} is not supported (rnnserve takes "
                f"{', '.join(sorted(REQUEST_PARAMETERS))})"
            )
    for output in request.outputs or []:
        for key in output.parameters:
            if key in SHARED_MEMORY:
                raise InvalidInputError(
                    f"output {output.name!r}: the shared memory extension is not supported "
                    "(rnnserve answers tensors in the response body)"
                )
            if key not in OUTPUT_PARAMETERS:
                raise InvalidInputError(
                    f"output {output.name!r}: parameter {key!r} is not supported "
                    f"(rnnserve takes {', '.join(sorted(OUTPUT_PARAMETERS))})"
                )


def classification_k(name: str, parameters: dict[str, Any], card: ModelCard) -> int | None:
    """The requested k, checked; None when the output is not asked as classification."""
    if CLASSIFICATION not in parameters:
        return None
    k = parameters[CLASSIFICATION]
    if name != CLASSIFIED_OUTPUT:
        raise InvalidInputError(
            f"classification applies to {CLASSIFIED_OUTPUT!r} only, not to the state {name!r}"
        )
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= card.output_size:
        raise InvalidInputError(
            f"output {name!r}: classification must be an integer in 1..{card.output_size} "
            f"(the width of {CLASSIFIED_OUTPUT!r}), got {k!r}"
        )
    return k


def classify(
    request: InferRequest, card: ModelCard, lengths: list[int], outputs: list[OutputTensor]
) -> list[OutputTensor]:
    """The answer's tensors with every output asked as classification turned into top-k BYTES."""
    asked = {o.name: o.parameters for o in request.outputs or []}
    answered: list[OutputTensor] = []
    for out in outputs:
        k = classification_k(out.name, asked.get(out.name, {}), card)
        if k is None:
            answered.append(out)
            continue
        scores = out.array
        if card.head is Head.LAST_STEP:
            scores = scores[np.arange(len(lengths)), np.asarray(lengths) - 1]
        answered.append(OutputTensor(out.name, Datatype.BYTES, top_k(scores, k, card), out.binary))
    return answered


def top_k(scores: np.ndarray[Any, Any], k: int, card: ModelCard) -> np.ndarray[Any, Any]:
    """`[..., k]` BYTES: the k largest along the last axis, `value:index[:label]`, largest first."""
    # stable sort of the negated scores: equal scores keep the lower index first, as Triton does
    order = np.argsort(-scores, axis=-1, kind="stable")[..., :k]
    values = np.take_along_axis(scores, order, axis=-1)
    labels = card.labels
    flat = [
        f"{value:f}:{index}:{labels[index]}" if labels else f"{value:f}:{index}"
        for value, index in zip(values.ravel().tolist(), order.ravel().tolist(), strict=True)
    ]
    encoded = np.empty(len(flat), dtype=object)
    encoded[:] = [text.encode() for text in flat]
    return encoded.reshape(order.shape)
