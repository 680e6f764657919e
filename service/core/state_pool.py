"""Live sessions' recurrent states held on the model's device, one slot per session.

On CUDA, a batched step that starts from host states copies every session's state host ->
device and the new one back; for single steps of a 2x128 RNN that is most of the bytes moved.
The pool keeps each live session's state in device tensors (`[slots, rows, width]`, one per
state tensor of the card) and a batch gathers its rows by slot index into the model's
`[rows, batch, width]` input and scatters the new state back into the same slots, so the step
copies only its inputs and outputs. Gather, scatter and growth run as three tiny onnxruntime
graphs (service/core/graphs/, built by export/pool_graphs.py) on the model's own provider:
the same code runs on CPU OrtValues, which is how the CPU suite tests it.

A slot is trusted only for the exact stored write it was made from: its `StateTag` (seq, last
digest, expiry: every write moves the expiry, so the three name one write) must equal the
record's. A step whose compare-and-set then loses leaves a slot tagged with a write that never
happened, which no record matches: the next step misses and reloads from the record. Reset,
import and other replicas' writes are caught the same way. The pool is a cache in front of the
store, never the authority; eviction (least recently used, at `max_slots`) hands the state back
as a host copy.

Not thread-safe: one pool per model, used from one thread at a time (the step batcher's).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from service.core.binding import device_type_of
from service.core.card import StateSpec
from service.core.sessions.record import SessionRecord
from service.core.state import RecurrentState

GRAPHS = Path(__file__).parent / "graphs"
MIN_SLOTS = 16


@dataclass(frozen=True, slots=True)
class StateTag:
    """The stored write a slot's state belongs to."""

    seq: int
    digest: bytes
    expires_at: float

    @staticmethod
    def of(record: SessionRecord) -> StateTag:
        """The tag of the state `record` holds."""
        return StateTag(record.seq, record.last_digest, record.expires_at)


@dataclass(frozen=True, slots=True)
class PoolKey:
    """A session step's identity for the pool: the write it starts from and the one it makes
    if its compare-and-set wins."""

    session_id: str
    tag: StateTag
    new_tag: StateTag


def pool_key(record: SessionRecord, *, steps: int, digest: bytes, expires_at: float) -> PoolKey:
    """The key of a step of `steps` steps on `record` that, if applied, is stored with this
    digest and expiry (what `sessions.record.advanced` writes)."""
    return PoolKey(
        record.session_id,
        StateTag.of(record),
        StateTag(record.seq + steps, digest, expires_at),
    )


@dataclass(frozen=True, slots=True)
class Evicted:
    """A state pushed out of the pool, as a host copy, with the write it belongs to."""

    session_id: str
    tag: StateTag
    state: RecurrentState


@dataclass(slots=True)
class _Slot:
    index: int
    tag: StateTag


class PoolGraphs:
    """The gather, scatter and grow graphs, as sessions on one provider and device."""

    def __init__(self, *, provider: str, device_id: int = 0) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        providers = (
            [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
        )
        provider_options = [
            {"device_id": str(device_id)} if p != "CPUExecutionProvider" else {} for p in providers
        ]

        def load(name: str) -> ort.InferenceSession:
            return ort.InferenceSession(
                str(GRAPHS / name), options, providers=providers, provider_options=provider_options
            )

        self._gather, self._scatter, self._grow = (
            load(f"state_{n}.onnx") for n in ("gather", "scatter", "grow")
        )
        self.device = device_type_of(provider)
        self.device_id = device_id

    def zeros(self, slots: int, rows: int, width: int) -> ort.OrtValue:
        """A zero pool tensor on the device."""
        return ort.OrtValue.ortvalue_from_numpy(
            np.zeros((slots, rows, width), np.float32), self.device, self.device_id
        )

    def gather(self, pool: ort.OrtValue, slots: npt.NDArray[np.int64]) -> ort.OrtValue:
        """`[rows, n, width]` on the device: the pool's rows at `slots`, in order."""
        binding = self._gather.io_binding()
        binding.bind_ortvalue_input("pool", pool)
        binding.bind_cpu_input("slots", slots)
        binding.bind_output("state", self.device, self.device_id)
        self._gather.run_with_iobinding(binding)
        # the model's session reads it next, on its own CUDA stream: finish writing it first
        binding.synchronize_outputs()
        out: ort.OrtValue = binding.get_outputs()[0]
        return out

    def scatter(
        self,
        pool: ort.OrtValue,
        slots: npt.NDArray[np.int64],
        updates: ort.OrtValue | npt.NDArray[np.float32],
    ) -> None:
        """Write `updates` ([rows, n, width], device or host) into the pool's `slots`, in place."""
        binding = self._scatter.io_binding()
        binding.bind_ortvalue_input("pool", pool)
        binding.bind_cpu_input("slots", slots)
        if isinstance(updates, ort.OrtValue):
            binding.bind_ortvalue_input("updates", updates)
        else:
            binding.bind_cpu_input("updates", np.ascontiguousarray(updates, np.float32))
        # the output is the pool's own buffer: ScatterElements skips its full copy when the
        # input and output are the same memory, so only the n slots are written
        binding.bind_output(
            "pool_out", self.device, self.device_id, np.float32, pool.shape(), pool.data_ptr()
        )
        self._scatter.run_with_iobinding(binding)
        binding.synchronize_outputs()

    def grow(self, pool: ort.OrtValue, slots: int) -> ort.OrtValue:
        """A new pool tensor with `slots` slots: the old ones, then zeros."""
        extra = slots - pool.shape()[0]
        pads = np.array([0, 0, 0, extra, 0, 0], np.int64)
        binding = self._grow.io_binding()
        binding.bind_ortvalue_input("pool", pool)
        binding.bind_cpu_input("pads", pads)
        binding.bind_output("grown", self.device, self.device_id)
        self._grow.run_with_iobinding(binding)
        binding.synchronize_outputs()
        grown: ort.OrtValue = binding.get_outputs()[0]
        return grown


class StatePool:
    """Device-resident states of live sessions, by session id (a cache in front of the store)."""

    def __init__(
        self,
        specs: Sequence[StateSpec],
        graphs: PoolGraphs,
        *,
        max_slots: int,
        initial_slots: int = MIN_SLOTS,
        on_evict: Callable[[Evicted], None] | None = None,
        on_lookups: Callable[[int, int], None] | None = None,
    ) -> None:
        self._specs = list(specs)
        self._graphs = graphs
        self._max_slots = max_slots
        capacity = max(1, min(initial_slots, max_slots))
        self._tensors = [graphs.zeros(capacity, s.rows, s.width) for s in self._specs]
        self._slots: OrderedDict[str, _Slot] = OrderedDict()  # least recently used first
        self._free = list(range(capacity - 1, -1, -1))
        self._on_evict = on_evict
        self._on_lookups = on_lookups

    def count_lookups(self, hits: int, misses: int) -> None:
        """Report a batch's hits and misses (to the metrics, when the owner asked for them)."""
        if self._on_lookups is not None:
            self._on_lookups(hits, misses)

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._slots

    @property
    def capacity(self) -> int:
        """Slots allocated on the device (grows by doubling up to `max_slots`)."""
        return int(self._tensors[0].shape()[0]) if self._tensors else 0

    def tag_of(self, session_id: str) -> StateTag | None:
        """The write the pooled state of a session belongs to, or None when not pooled."""
        slot = self._slots.get(session_id)
        return None if slot is None else slot.tag

    def holds(self, session_id: str, tag: StateTag) -> bool:
        """True when the pool has this session's state of exactly that write (a hit)."""
        slot = self._slots.get(session_id)
        if slot is None or slot.tag != tag:
            return False
        self._slots.move_to_end(session_id)
        return True

    def put(self, session_id: str, tag: StateTag, state: RecurrentState) -> None:
        """Load a host state (batch 1) into the session's slot: open, reset, import, a miss."""
        self.put_many([session_id], [tag], [state])

    def put_many(
        self, session_ids: Sequence[str], tags: Sequence[StateTag], states: Sequence[RecurrentState]
    ) -> None:
        """Load several host states in one scatter per state tensor."""
        if not session_ids:
            return
        slots = self._claim(session_ids, tags)
        for k, tensor in enumerate(self._tensors):
            stacked = np.concatenate([s.arrays[k] for s in states], axis=1)
            self._graphs.scatter(tensor, slots, stacked)

    def gather(self, session_ids: Sequence[str]) -> list[ort.OrtValue]:
        """The batch's states on the device, one `[rows, n, width]` per state tensor; every id
        must be pooled (check with `holds`, load with `put`)."""
        slots = self._indices(session_ids)
        return [self._graphs.gather(tensor, slots) for tensor in self._tensors]

    def scatter(
        self,
        session_ids: Sequence[str],
        tags: Sequence[StateTag],
        states: Sequence[ort.OrtValue | npt.NDArray[np.float32]],
    ) -> None:
        """Store a batch's new states (one `[rows, n, width]` per state tensor, on the device)
        as the writes `tags` name; ids not pooled any more (evicted meanwhile) get a slot."""
        slots = self._claim(session_ids, tags)
        for tensor, state in zip(self._tensors, states, strict=True):
            self._graphs.scatter(tensor, slots, state)

    def export(self, session_id: str) -> RecurrentState:
        """A host copy of one session's pooled state (batch 1)."""
        slots = self._indices([session_id])
        # copied while the gathered OrtValue is alive: on the CPU `numpy()` is a view of it
        return RecurrentState(
            tuple(
                np.array(self._graphs.gather(tensor, slots).numpy(), copy=True)
                for tensor in self._tensors
            )
        )

    def drop(self, session_id: str) -> None:
        """Forget a session (deleted, expired): its slot is free again."""
        slot = self._slots.pop(session_id, None)
        if slot is not None:
            self._free.append(slot.index)

    def _indices(self, session_ids: Sequence[str]) -> npt.NDArray[np.int64]:
        for session_id in session_ids:
            self._slots.move_to_end(session_id)
        return np.fromiter((self._slots[s].index for s in session_ids), np.int64, len(session_ids))

    def _claim(self, session_ids: Sequence[str], tags: Sequence[StateTag]) -> npt.NDArray[np.int64]:
        if len(set(session_ids)) != len(session_ids):
            raise ValueError("a batch holds one step per session")
        if len(session_ids) > self._max_slots:
            raise ValueError(f"a batch of {len(session_ids)} exceeds the pool's {self._max_slots}")
        keep = set(session_ids)
        for session_id, tag in zip(session_ids, tags, strict=True):
            slot = self._slots.get(session_id)
            if slot is None:
                slot = self._slots[session_id] = _Slot(self._free_slot(keep), tag)
            slot.tag = tag
            self._slots.move_to_end(session_id)
        return self._indices(session_ids)

    def _free_slot(self, keep: set[str]) -> int:
        if not self._free and self.capacity < self._max_slots:
            self._grow(min(self._max_slots, 2 * self.capacity))
        if not self._free:
            self._evict_oldest(keep)
        return self._free.pop()

    def _grow(self, capacity: int) -> None:
        old = self.capacity
        self._tensors = [self._graphs.grow(t, capacity) for t in self._tensors]
        self._free = list(range(capacity - 1, old - 1, -1)) + self._free

    def _evict_oldest(self, keep: set[str]) -> None:
        victim = next(s for s in self._slots if s not in keep)
        state = self.export(victim)
        tag = self._slots[victim].tag
        self.drop(victim)
        if self._on_evict is not None:
            self._on_evict(Evicted(victim, tag, state))
