"""Commit + confidence remasking: one launch writes the chosen tokens into the canvas, records their
confidence, and re-masks each row's lowest-confidence committed tokens. One program per row, the row
in registers; positions outside ``editable`` are never written.

Reference: :func:`fastdiff.kernels.reference.commit_remask_reference`.
"""
import torch
import triton
import triton.language as tl

from fastdiff.kernels.counter_rng import gumbel, position_keys, row_origin
from fastdiff.kernels.select_topk import select_top_keys
from fastdiff.kernels.utils import STREAM_REMASK, as_device_scalar, row_launch, stream_salt


@triton.jit
def _commit_remask_kernel(
    canvas_ptr, confidence_ptr, tokens_ptr, scores_ptr, selected_ptr, editable_ptr, n_remask_ptr, rng_ptr,
    tau_ptr, mask_id, L,
    STREAM_SALT: tl.constexpr,
    BLOCK_L: tl.constexpr,
):
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK_L)
    inside = offs < L
    at = row * L + offs
    canvas = tl.load(canvas_ptr + at, mask=inside, other=0)
    confidence = tl.load(confidence_ptr + at, mask=inside, other=0.0)
    editable = (tl.load(editable_ptr + at, mask=inside, other=0) != 0) & inside
    commit = (tl.load(selected_ptr + at, mask=inside, other=0) != 0) & editable
    token = tl.load(tokens_ptr + at, mask=commit, other=-1)
    commit = commit & (token >= 0)  # -1: sample_masked found no token (a NaN / +inf row); it stays masked
    canvas = tl.where(commit, token, canvas)
    confidence = tl.where(commit, tl.load(scores_ptr + at, mask=commit, other=0.0), confidence)

    # re-mask the n least confident committed tokens: the n largest keys -confidence (/ tau + Gumbel)
    candidates = editable & (canvas != mask_id)
    keys = -confidence
    keys = tl.where(keys != keys, float("-inf"), keys)
    tau = tl.load(tau_ptr)
    if tau > 0:
        key_a, key_b = position_keys(rng_ptr, row, STREAM_SALT)
        keys = keys / tau + gumbel(key_a, key_b, offs - row_origin(rng_ptr, row))
    n = tl.load(n_remask_ptr + row).to(tl.int32)
    n = tl.minimum(tl.maximum(n, 0), tl.sum(candidates.to(tl.int32), axis=0))
    chosen = select_top_keys(keys, candidates, n)
    canvas = tl.where(chosen, mask_id, canvas)
    confidence = tl.where(chosen, float("nan"), confidence)
    tl.store(canvas_ptr + at, canvas, mask=editable)
    tl.store(confidence_ptr + at, confidence, mask=editable)


def commit_remask_triton(canvas, confidence, tokens, scores, selected, editable, n_remask, mask_id, rng_state, *,
                         remask_temperature=0.0):
    """Launch the commit/remask kernel in place; see :func:`fastdiff.ops.commit_remask` for the contract."""
    B, L = canvas.shape
    block, warps = row_launch(L, "commit_remask")
    for name, t in (("canvas", canvas), ("confidence", confidence), ("tokens", tokens), ("scores", scores),
                    ("selected", selected), ("editable", editable)):
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous for the triton backend")
    if B == 0 or L == 0:
        return
    _commit_remask_kernel[(B,)](
        canvas, confidence, tokens, scores, selected.view(torch.int8), editable.view(torch.int8),
        n_remask.to(torch.int32), rng_state, as_device_scalar(remask_temperature, torch.float32, canvas.device,
                                                               "remask_temperature"),
        mask_id, L,
        STREAM_SALT=stream_salt(STREAM_REMASK),
        BLOCK_L=block,
        num_warps=warps,
    )
