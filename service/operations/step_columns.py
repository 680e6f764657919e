"""Steps for many sessions, column-wise: what a multi-session request carries in, and what
becomes of each of its records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from service.core.state import FloatArray, SequenceArray
from service.errors import RnnServeError
from service.operations.step_rules import NO_SEQ


@dataclass(frozen=True, slots=True)
class StepColumns:
    """Steps for many distinct sessions, column-wise (as a binary frame carries them).

    Record i applies its `counts[i]` steps to session `session_ids[i]` from `seqs[i]`; the
    steps of every record lie back to back in `inputs`, already the model's dtype and width
    (float32 `[steps, input_size]`, or int64 `[steps]` token ids).
    """

    session_ids: Sequence[str]
    seqs: Sequence[int] | npt.NDArray[np.uint64]
    counts: npt.NDArray[np.integer[Any]]
    inputs: npt.NDArray[Any]

    @staticmethod
    def of(
        session_ids: Sequence[str],
        seqs: Sequence[int] | npt.NDArray[np.uint64],
        sequences: Sequence[SequenceArray],
    ) -> StepColumns:
        """Columns from one array per record (each the model's dtype and width)."""
        counts = np.fromiter((len(s) for s in sequences), np.int64, len(sequences))
        return StepColumns(session_ids, seqs, counts, np.concatenate(sequences))

    def sequences(self) -> list[npt.NDArray[Any]]:
        """Each record's own steps (views into `inputs`)."""
        ends = np.cumsum(self.counts, dtype=np.int64).tolist()
        return [self.inputs[a:b] for a, b in zip([0, *ends[:-1]], ends, strict=True)]


@dataclass(frozen=True, slots=True)
class StepAnswers:
    """What became of each record of a StepColumns, column-wise.

    `answered[i]`: record i was applied, or (`replayed[i]`) answered again from the session's
    stored answer; its `answer_rows[i]` rows of `outputs` follow those of the answered records
    before it. Otherwise `errors[i]` says why nothing happened. `next_seqs[i]` is the
    session's next expected seq, -1 when the session could not be read.
    """

    next_seqs: npt.NDArray[np.int64]
    answered: npt.NDArray[np.bool_]
    replayed: npt.NDArray[np.bool_]
    errors: dict[int, RnnServeError]
    outputs: FloatArray
    answer_rows: npt.NDArray[np.int64]

    def outputs_of(self, index: int) -> FloatArray | None:
        """Record `index`'s answer rows, None when it was not answered."""
        if not self.answered[index]:
            return None
        start = int(self.answer_rows[:index].sum())
        return self.outputs[start : start + int(self.answer_rows[index])]

    @staticmethod
    def of(items: Sequence[ItemResult]) -> StepAnswers:
        """Column-wise answers from one result per record."""
        answered = [r.error is None for r in items]
        outputs = [r.outputs for r in items if r.error is None and r.outputs is not None]
        return StepAnswers(
            next_seqs=np.fromiter(
                (NO_SEQ if r.next_seq is None else r.next_seq for r in items), np.int64
            ),
            answered=np.array(answered, np.bool_),
            replayed=np.array([r.replayed for r in items], np.bool_),
            errors={i: r.error for i, r in enumerate(items) if r.error is not None},
            outputs=rows_together(outputs),
            answer_rows=np.fromiter(
                (len(r.outputs) if r.error is None and r.outputs is not None else 0 for r in items),
                np.int64,
            ),
        )


def rows_together(parts: Sequence[FloatArray]) -> FloatArray:
    """Answer rows of several records, one after another."""
    if not parts:
        return np.zeros((0, 0), np.float32)
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([p.reshape(len(p), -1) for p in parts])


@dataclass(frozen=True, slots=True)
class ItemResult:
    """What became of one item.

    `error` None: the steps were applied (or, `replayed`, answered again from the stored
    outputs) and `outputs` holds their answer. Otherwise `error` says why nothing happened.
    `next_seq` is the session's next expected seq when the session was read, else None.
    """

    next_seq: int | None
    outputs: FloatArray | None = None
    replayed: bool = False
    error: RnnServeError | None = None
