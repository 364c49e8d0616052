"""CUDA graphs of whole denoising steps: capture over static buffers, and a bounded cache of them."""
from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Callable, Dict, Hashable, Optional

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
