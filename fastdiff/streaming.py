"""Streaming a generation to a transformers streamer (``put`` / ``end``): the prompt first, then each
semi-autoregressive block as soon as every position in it is filled, then ``end()``."""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import torch

from fastdiff.config import SamplerConfig


class BlockStream:
    """The stream of one :meth:`fastdiff.Sampler.generate` call.

    Args:
        streamer: an object with ``put(token_ids)`` and ``end()`` (``transformers.TextStreamer``,
            ``TextIteratorStreamer`` or your own).
        prompt: int64 ``[1, P]``: the prompt, put first (a ``TextStreamer(skip_prompt=True)`` drops it).
        region: ``(P, L)``: the generated span of the canvas.
        config: the call's settings; ``block_length`` cuts the span into the blocks streamed one by one
            (``None``: the whole span at the end).

    Raises:
        TypeError: ``streamer`` has no ``put`` / ``end`` methods.
        ValueError: more than one row (transformers' streamers take batch size 1).
    """

    def __init__(self, streamer, prompt: torch.Tensor, region: Tuple[int, int], config: SamplerConfig):
        if not (callable(getattr(streamer, "put", None)) and callable(getattr(streamer, "end", None))):
            raise TypeError(f"streamer must have put() and end() methods (a transformers streamer), got "
                            f"{type(streamer).__name__}")
        if prompt.shape[0] != 1:
            raise ValueError(f"streamer takes one prompt (batch size 1, as transformers' streamers do), got "
                             f"{prompt.shape[0]}")
        self.streamer = streamer
        self.prompt = prompt.cpu()
        start, end = region
        step = config.block_length or (end - start)
        self.blocks: List[Tuple[int, int]] = [(s, min(s + step, end)) for s in range(start, end, step)]
        self.sent = 0  # blocks put so far
        self.canvas: Optional[torch.Tensor] = None
        self.mask_token_id: Optional[int] = None

    def start(self, canvas: torch.Tensor, mask_token_id: int) -> None:
        """Put the prompt; ``canvas`` (``[1, L]``, updated in place by the steps) is watched from now on."""
        self.canvas, self.mask_token_id = canvas, mask_token_id
        self.streamer.put(self.prompt)

    def wrap(self, progress: Optional[Callable[[int, int], None]]) -> Callable[[int, int], None]:
        """A per-step host callback that calls ``progress`` and puts the blocks completed so far."""
        def after_step(step: int, planned: int) -> None:
            if progress is not None:
                progress(step, planned)
            if self.sent < len(self.blocks) - 1:  # the last block goes out with finish()
                self._put_completed(self.canvas[0].cpu())

        return after_step

    def finish(self, sequences: torch.Tensor) -> None:
        """Put every block not yet put, from the final ``sequences [1, L]``, then ``end()``."""
        row = sequences[0].cpu()
        for start, end in self.blocks[self.sent:]:
            self.streamer.put(row[start:end])
        self.sent = len(self.blocks)
        self.streamer.end()

    def _put_completed(self, row: torch.Tensor) -> None:
        while self.sent < len(self.blocks) - 1:
            start, end = self.blocks[self.sent]
            if bool((row[start:end] == self.mask_token_id).any()):
                return
            self.streamer.put(row[start:end])
            self.sent += 1
