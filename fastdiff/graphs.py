"""CUDA graphs of whole denoising steps: capture over static buffers, a bounded cache of them, and the
runner that replays a call's steps (falling back to eager steps when capture fails)."""
from __future__ import annotations

import dataclasses
import warnings
from collections import OrderedDict
from typing import Callable, Dict, Hashable, List, Optional, Tuple

import torch

from fastdiff.model import keep_flash_attention_under_capture


def capture_step(step: Callable[[], None], pool) -> Callable[[], None]:
    """Capture ``step`` in a CUDA graph and return its replay.

    ``step`` runs once eagerly on a side stream first, so that Triton compiles and autotunes, cuBLAS
    picks its kernels and the caching allocator warms up outside the capture. That run changes the
    static buffers: the caller reloads them before replaying.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with keep_flash_attention_under_capture(), torch.cuda.graph(graph, pool=pool):
        step()
    return graph.replay


def new_pool():
    """A private memory pool shared by the graphs of one cache entry."""
    return torch.cuda.graph_pool_handle() if torch.cuda.is_available() else None


def static_copy(value):
    """A copy of a dataclass of tensors (the static buffers a graph is captured over)."""
    return dataclasses.replace(value, **{
        f.name: _clone(getattr(value, f.name)) for f in dataclasses.fields(value)
    })


def load_into(static, fresh) -> None:
    """Copy every tensor of ``fresh`` into the same field of ``static`` (same shapes), in place."""
    for f in dataclasses.fields(static):
        target, source = getattr(static, f.name), getattr(fresh, f.name)
        if isinstance(target, torch.Tensor):
            target.copy_(source)
        elif isinstance(target, dict):
            for name, tensor in target.items():
                tensor.copy_(source[name])
        elif target is not None or source is not None:
            setattr(static, f.name, source)


def _clone(value):
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, dict):
        return {name: _clone(tensor) for name, tensor in value.items()}
    return value


@dataclasses.dataclass
class GraphEntry:
    """The static state and plan of one graph-cache key, and the replays captured over them (one per
    row bucket of the masked-row head, or one for the full head)."""

    state: object
    plan: object
    pool: object
    replays: Dict[Optional[int], Callable[[], None]] = dataclasses.field(default_factory=dict)


class GraphCache:
    """A least-recently-used map of :class:`GraphEntry`; dropping an entry frees its graphs and buffers."""

    def __init__(self, capacity: int):
        if isinstance(capacity, bool) or not isinstance(capacity, int):
            raise TypeError(f"graph_cache_size must be an int, got {type(capacity).__name__}")
        if capacity < 1:
            raise ValueError(f"graph_cache_size must be >= 1, got {capacity}")
        self.capacity = capacity
        self._entries: "OrderedDict[Hashable, GraphEntry]" = OrderedDict()

    def get(self, key: Hashable) -> Optional[GraphEntry]:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: Hashable, entry: GraphEntry) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


# With early stopping possible (EOS, threshold), a graphed run reads the device "work left" flag every
# this many steps: one host synchronisation per check.
GRAPH_CHECK_EVERY = 4


class GraphRunner:
    """Runs a call's steps as replays of captured graphs.

    One :class:`GraphEntry` per key (batch, canvas length, dtype, backend and config structure) is kept
    in an LRU :class:`GraphCache` of ``capacity`` entries and reused across calls with other values. A
    key whose capture failed warns once and is run eagerly from then on.
    """

    def __init__(self, capacity: int):
        self.cache = GraphCache(capacity)
        self.failures = set()

    def __len__(self) -> int:
        return len(self.cache)

    def run(self, key: Hashable, state, plan, step: Callable, buckets: List[Optional[int]], *,
            keep_history: bool, can_stop: bool, progress: Optional[Callable[[int, int], None]]
            ) -> Optional[Tuple[object, Optional[List[torch.Tensor]]]]:
        """Replay ``step(state, plan, bucket)`` for each planned step; returns the static state after the
        last replay and the canvas history, or ``None`` when capture failed (the caller runs eagerly)."""
        if key in self.failures:
            return None
        entry = self.cache.get(key)
        if entry is None:
            entry = GraphEntry(state=static_copy(state), plan=static_copy(plan), pool=new_pool())
        load_into(entry.state, state)
        load_into(entry.plan, plan)
        for bucket in sorted(set(buckets) - set(entry.replays), key=lambda b: -1 if b is None else b):
            try:
                entry.replays[bucket] = capture_step(lambda bucket=bucket: step(entry.state, entry.plan, bucket),
                                                     entry.pool)
            except Exception as error:  # noqa: BLE001 - any capture failure falls back to eager
                warnings.warn(f"fastdiff: CUDA graph capture failed, running eagerly: {type(error).__name__}: "
                              f"{error}", RuntimeWarning, stacklevel=5)
                self.failures.add(key)
                return None
            load_into(entry.state, state)  # the warm-up run moved the static state on
        self.cache.put(key, entry)

        history = [] if keep_history else None
        for i in range(plan.num_steps):
            entry.replays[buckets[i]]()
            if history is not None:
                history.append(entry.state.canvas.clone())
            if progress is not None:
                progress(i + 1, plan.num_steps)
            if can_stop and (i + 1) % GRAPH_CHECK_EVERY == 0 and not bool(entry.state.work_left):
                break
        if history is not None:
            del history[int(entry.state.nfe):]
        return entry.state, history


def graph_key(state, plan, config, backend: str, uses_head: bool, model) -> Hashable:
    """What a captured step depends on: shapes, device, model dtype, backend and the config's structure
    (which options are set; their values are device scalars and may change between replays)."""
    dtype = next((p.dtype for p in model.parameters()), None) if isinstance(model, torch.nn.Module) else None
    structure = (config.unmask, config.threshold is None, config.factor is None, config.schedule_cap, config.edits,
                 config.remask is None,
                 config.cfg_scale > 0,
                 config.logits_shift, config.top_k is None, config.top_p is None,
                 config.score_temperature is None, len(state.suppress_ids),
                 None if state.defer_ids is None else len(state.defer_ids),
                 None if state.eos_ids is None else len(state.eos_ids),
                 None if state.begin_suppress_ids is None else (state.begin_position, len(state.begin_suppress_ids)))
    return (tuple(state.canvas.shape), str(state.canvas.device), dtype, backend, state.attention_mask is not None,
            len(plan.step_block), tuple(plan.block_masks.shape), uses_head, structure)
