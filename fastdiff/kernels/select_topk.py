"""Gumbel top-k selection of the positions to unmask: one program per row, the row in registers.

Reference: :func:`fastdiff.kernels.reference.select_topk_reference`.
"""
import torch
import triton
import triton.language as tl

from fastdiff.kernels.counter_rng import gumbel, position_keys, row_origin
from fastdiff.kernels.utils import STREAM_SELECT, as_device_scalar, row_launch, stream_salt

# order-preserving int32 images of -inf and +inf (see _ordered_key); constexprs, so that kernels may read them
_KEY_NEG_INF = tl.constexpr(-2139095041)
_KEY_POS_INF = tl.constexpr(2139095040)


@triton.jit
def _ordered_key(x):
    # fp32 -> int32 with the same order: positive floats keep their bits, negative floats flip
    # their magnitude bits. x + 0.0 turns -0.0 into +0.0 so that the two zeros tie.
    bits = (x + 0.0).to(tl.int32, bitcast=True)
    return tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF)


@triton.jit
def select_top_keys(keys, tier, k):
    """Mask of the ``k`` largest ``keys`` among the ``tier`` elements, ties to the lowest index.

    ``keys`` fp32 (no NaN), ``tier`` bool, ``k`` a scalar clamped to ``[0, sum(tier)]``.
    """
    okey = _ordered_key(keys)
    # bisection for tau = the k-th largest key: the largest x with #{okey >= x} >= k
    # (k = 0 leaves tau above every key, so nothing is taken)
    lo = tl.full((), _KEY_NEG_INF, tl.int64)
    hi = tl.full((), _KEY_POS_INF + 1, tl.int64)
    for _ in range(32):
        mid = (lo + hi + 1) >> 1
        enough = tl.sum((tier & (okey >= mid)).to(tl.int32), axis=0) >= k
        lo = tl.where(enough, mid, lo)
        hi = tl.where(enough, hi, mid - 1)
    above = tier & (okey > lo)
    ties = tier & (okey == lo)
    need = k - tl.sum(above.to(tl.int32), axis=0)
    tie_rank = tl.cumsum(ties.to(tl.int32), axis=0)  # 1, 2, ... along the row
    return above | (ties & (tie_rank <= need))


@triton.jit
def _select_topk_kernel(
    scores_ptr, stride_sb, eligible_ptr, stride_eb, k_ptr, rng_ptr, tau_ptr, threshold_ptr, out_ptr,
    L,
    HAS_THRESHOLD: tl.constexpr,
    STREAM_SALT: tl.constexpr,
    BLOCK_L: tl.constexpr,
):
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK_L)
    inside = offs < L
    scores = tl.load(scores_ptr + row * stride_sb + offs, mask=inside, other=float("-inf"))
    eligible = (tl.load(eligible_ptr + row * stride_eb + offs, mask=inside, other=0) != 0) & inside
    k = tl.load(k_ptr + row).to(tl.int32)

    keys = tl.where(scores != scores, float("-inf"), scores)  # NaN ranks last
    tau = tl.load(tau_ptr)
    if tau > 0:
        # Gumbel-top-k on score / tau samples k positions without replacement
        key_a, key_b = position_keys(rng_ptr, row, STREAM_SALT)
        keys = keys / tau + gumbel(key_a, key_b, offs - row_origin(rng_ptr, row))

    tier = eligible
    if HAS_THRESHOLD:
        above = eligible & (scores >= tl.load(threshold_ptr))
        n_above = tl.sum(above.to(tl.int32), axis=0)
        if n_above > 0:
            tier = above
            k = tl.minimum(k, n_above)
        else:
            k = tl.minimum(k, 1)
    k = tl.minimum(tl.maximum(k, 0), tl.sum(tier.to(tl.int32), axis=0))
    chosen = select_top_keys(keys, tier, k)
    tl.store(out_ptr + row * L + offs, chosen.to(tl.int8), mask=inside)


def select_topk_triton(scores, eligible, k, rng_state, *, position_temperature=0.0, threshold=None, out=None):
    """Launch the selection kernel; see :func:`fastdiff.ops.select_topk` for the contract.

    ``out`` is an optional preallocated contiguous bool ``[B, L]``; every element is written.
    """
    B, L = scores.shape
    block, warps = row_launch(L, "select_topk")
    if scores.stride(-1) != 1 or eligible.stride(-1) != 1:
        raise ValueError("scores and eligible must be contiguous along L")
    device = scores.device
    if out is None:
        out = torch.empty(B, L, dtype=torch.bool, device=device)
    if out.shape != (B, L) or out.dtype != torch.bool or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous bool [{B}, {L}] tensor")
    if B == 0 or L == 0:
        return out
    _select_topk_kernel[(B,)](
        scores, scores.stride(0), eligible.view(torch.int8), eligible.stride(0), k.to(torch.int32), rng_state,
        as_device_scalar(position_temperature, torch.float32, device, "position_temperature"),
        as_device_scalar(float("-inf") if threshold is None else threshold, torch.float32, device, "threshold"),
        out.view(torch.int8), L,
        HAS_THRESHOLD=threshold is not None,
        STREAM_SALT=stream_salt(STREAM_SELECT),
        BLOCK_L=block,
        num_warps=warps,
    )
    return out
