"""Masked logit gathering and sampling: one program per canvas position, streaming over the vocabulary.

A program whose position is not masked writes ``(-1, -inf)`` and reads nothing else, so the time
falls with the masked fraction. A masked row is read in chunks of ``BLOCK_V``, keeping an online
max / log-sum-exp and a running Gumbel-max; no softmax or ``[B, L, V]`` tensor is built. Each row is
read from the 16-byte-aligned element at or before its start, so that every chunk inside the row
is a 128-bit vector load whatever the vocabulary size (50,265 included); only the first and last
chunks of a row are masked.

Top-k and top-p thresholds are found by radix selection on the logits' own bits: each logit maps to
an integer key with the same order (16 bits for bf16 / fp16, 32 for fp32), and one pass per 8-bit
digit, most significant first, histograms the next digit of the keys that share the digits chosen so
far. Top-k picks the digit where the count from the top reaches ``k``; top-p the digit where the
probability mass from the top reaches ``top_p`` of the kept mass, from histograms of
``exp(z - max)`` (an exact three-piece tf32 matrix product with one-hot digits, which counts as well).
On the last digit every key is one exact logit, so its mass is ``count * exp(z - max)`` from a plain
count. With ``top_k`` and ``top_p`` both set, the nucleus search reuses the top-k histograms while
its digits follow the top-k threshold's, and reads the row again only from the digit where they part.
Ties at either threshold are all kept. The top-k threshold is exact; the nucleus is the
reference's up to the rounding of its fp32 mass sums, which are added in another order.

Passes over each masked row (counted through the interpreter by ``tests/test_pass_count.py``): one
per digit, then the draw.

=========================  ===========  ======
mode                       bf16, fp16   fp32
=========================  ===========  ======
greedy, temperature        1            1
top-k                      3            5
top-p                      3            5
top-k + top-p              3 or 4       5 to 8
=========================  ===========  ======

Reference: :func:`fastdiff.kernels.reference.sample_masked_reference`.
"""
from typing import Optional

import torch
import triton
import triton.language as tl

from fastdiff.kernels.counter_rng import gumbel, row_keys, row_origin
from fastdiff.kernels.radix_select import kept_floor, load_chunk
from fastdiff.kernels.utils import SCORE_KINDS, STREAM_SAMPLE, as_device_scalar, stream_salt

_SCORE_CODES = {kind: code for code, kind in enumerate(SCORE_KINDS)}  # confidence 0, margin 1, entropy 2
_KEY_KINDS = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}  # the bits a logit's key is made from
_NO_INDEX = tl.constexpr(2**31 - 1)  # above every vocabulary index
_MASS_BLOCK = 128  # logits per weighted-histogram product (the K of a [64, K] x [K, 16] tf32 product)


@triton.jit
def _draw(row_base, lead, V, suppress_ptr, n_suppress, t, score_t, floor_key, key_a, key_b, sampling,
          SCORE: tl.constexpr, HAS_SCORE_TEMPERATURE: tl.constexpr, KEY: tl.constexpr, BLOCK_V: tl.constexpr):
    """The last pass over a row: the token drawn among the kept keys, its score, and whether the row
    holds NaN / +inf (then the token is -1)."""
    bad = tl.zeros((), tl.int32)
    # one pass: online log-sum-exp of the score distribution zs = raw / score_t over the kept set,
    # running second-largest zs (margin), sum of exp(zs - m) * (zs - m) (entropy: shifted by the
    # running max m so that a peaked distribution keeps its precision), and the Gumbel-max
    m_s = tl.full((), float("-inf"), tl.float32)
    sum_s = tl.zeros((), tl.float32)
    sum_sz = tl.zeros((), tl.float32)
    second = tl.full((), float("-inf"), tl.float32)
    best = tl.full((), float("-inf"), tl.float32)
    best_idx = tl.full((), -1, tl.int32)
    best_zs = tl.full((), float("-inf"), tl.float32)
    for start in range(0, V + lead, BLOCK_V):
        offs, raw, z, key, drawable, chunk_bad = load_chunk(row_base, start, lead, V, suppress_ptr, n_suppress, t,
                                                             KEY, BLOCK_V)
        bad = tl.maximum(bad, chunk_bad)
        kept = drawable & (key >= floor_key.to(key.dtype))
        zs = z
        if HAS_SCORE_TEMPERATURE:
            zs = raw / score_t
        zs = tl.where(kept, zs, float("-inf"))

        chunk_max = tl.max(zs, axis=0)
        new_m = tl.maximum(m_s, chunk_max)
        safe_m = tl.where(new_m == float("-inf"), 0.0, new_m)
        alpha = tl.exp(m_s - safe_m)
        e = tl.exp(zs - safe_m)
        sum_s_old = sum_s
        sum_s = sum_s * alpha + tl.sum(e, axis=0)
        if SCORE == 2:
            # sum e (z - m'): the old terms become alpha * (sum_sz + (m - m') * sum_s)
            shift = tl.where(sum_s_old > 0, (m_s - safe_m) * sum_s_old, 0.0)
            sum_sz = alpha * (sum_sz + shift) + tl.sum(e * tl.where(kept, zs - safe_m, 0.0), axis=0)
        if SCORE == 1:
            first_at = tl.min(tl.where(zs == chunk_max, offs, _NO_INDEX), axis=0)
            chunk_second = tl.max(tl.where(offs == first_at, float("-inf"), zs), axis=0)
            second = tl.maximum(tl.minimum(m_s, chunk_max), tl.maximum(second, chunk_second))
        m_s = new_m

        key = z
        if sampling:
            key = z + gumbel(key_a, key_b, offs)  # argmax(z + g) ~ softmax(z)
        key = tl.where(kept, key, float("-inf"))
        chunk_best = tl.max(key, axis=0)
        chunk_idx = tl.min(tl.where(kept & (key == chunk_best), offs, _NO_INDEX), axis=0)
        take = chunk_best > best  # strict: an earlier chunk keeps its ties
        best_zs = tl.where(take, tl.max(tl.where(offs == chunk_idx, zs, float("-inf")), axis=0), best_zs)
        best_idx = tl.where(take, chunk_idx, best_idx)
        best = tl.where(take, chunk_best, best)

    lse = m_s + tl.log(sum_s)
    if SCORE == 0:
        score = tl.exp(best_zs - lse)
    elif SCORE == 1:
        score = tl.exp(m_s - lse) - tl.exp(second - lse)
    else:
        score = sum_sz / sum_s - tl.log(sum_s)  # sum q (z - m) - log sum exp(z - m)
    return best_idx, score, bad


@triton.jit
def _sample_masked_kernel(
    logits_ptr, stride_lb, stride_ll,
    mask_ptr, stride_mb, stride_ml, row_ids_ptr,
    rng_ptr, suppress_ptr, n_suppress,
    temperature_ptr, top_k_ptr, top_p_ptr, score_temperature_ptr,
    tokens_ptr, scores_ptr,
    L, V,
    SCORE: tl.constexpr,
    HAS_TOP_K: tl.constexpr,
    HAS_TOP_P: tl.constexpr,
    HAS_SCORE_TEMPERATURE: tl.constexpr,
    HAS_ROW_IDS: tl.constexpr,
    SHIFT: tl.constexpr,
    STREAM_SALT: tl.constexpr,
    KEY: tl.constexpr,
    BLOCK_V: tl.constexpr,
    MASS_BLOCK: tl.constexpr,
    VECTOR: tl.constexpr,
):
    pid = tl.program_id(0)
    if HAS_ROW_IDS:
        # gathered rows [R, V]: row_ids holds each row's canvas position b * L + l, -1 for padding
        position = tl.load(row_ids_ptr + pid)
        masked = position >= 0
        b = (tl.maximum(position, 0) // L).to(tl.int32)
        l = (tl.maximum(position, 0) % L).to(tl.int32)
        row_start = pid.to(tl.int64) * stride_lb
    else:
        # the canvas [B, L, V]: position (b, l) reads row (b, l - SHIFT), clamped at 0
        b = pid // L
        l = pid % L
        masked = tl.load(mask_ptr + b * stride_mb + l * stride_ml) != 0
        row_start = b.to(tl.int64) * stride_lb + tl.maximum(l - SHIFT, 0).to(tl.int64) * stride_ll
    if masked:
        # the row is read from the VECTOR-aligned element before it (VECTOR elements = 16 bytes)
        lead = (row_start % VECTOR).to(tl.int32)
        row_base = logits_ptr + tl.multiple_of(row_start - lead, VECTOR)
        t = tl.load(temperature_ptr)
        sampling = t > 0
        t = tl.where(sampling, t, 1.0)  # argmax scores on softmax(logits)
        score_t = t
        if HAS_SCORE_TEMPERATURE:
            score_t = tl.load(score_temperature_ptr)

        # the kept set is {key >= floor_key}: top-k, then the nucleus of what it keeps
        floor_key = kept_floor(row_base, lead, V, suppress_ptr, n_suppress, t, top_k_ptr, top_p_ptr,
                               HAS_TOP_K, HAS_TOP_P, KEY, BLOCK_V, MASS_BLOCK)
        key_a = tl.zeros((), tl.uint32)
        key_b = tl.zeros((), tl.uint32)
        if sampling:
            # the noise of (b, l) is keyed by the position from the row's origin, not by its place in the batch
            key_a, key_b = row_keys(rng_ptr, b, l - row_origin(rng_ptr, b), STREAM_SALT)
        best_idx, score, bad = _draw(row_base, lead, V, suppress_ptr, n_suppress, t, score_t, floor_key, key_a, key_b,
                                     sampling, SCORE, HAS_SCORE_TEMPERATURE, KEY, BLOCK_V)
        failed = (bad != 0) | (best_idx < 0)
        tl.store(tokens_ptr + pid, tl.where(failed, -1, best_idx).to(tl.int64))
        tl.store(scores_ptr + pid, tl.where(failed, float("nan"), score))
    else:
        tl.store(tokens_ptr + pid, tl.full((), -1, tl.int64))
        tl.store(scores_ptr + pid, tl.full((), float("-inf"), tl.float32))


def launch_shape(vocab: int, filtering: bool, block_v: Optional[int] = None) -> dict:
    """The kernel's chunk sizes and warps for a vocabulary: ``BLOCK_V`` logits per iteration of a
    counting or drawing pass (4096 covers a row of 50k in 13 steps; ``block_v`` overrides it),
    ``MASS_BLOCK`` per weighted-histogram product, and ``num_warps``. With ``filtering`` (top-k or
    top-p) the kernel runs at 4 warps: a weighted-histogram product maps one logit to a thread, and
    the digit histograms cost fewer SASS instructions per logit than at 8 (sm_90, V = 50,265: top-k
    246 against 346 under Triton 3.9, 347 against 432 under 3.6), at up to 255 registers, unspilled."""
    block = block_v or min(triton.next_power_of_2(vocab), 4096)
    if block & (block - 1):
        raise ValueError(f"block_v must be a power of two, got {block}")
    return dict(BLOCK_V=block, MASS_BLOCK=max(16, min(_MASS_BLOCK, block)),
                num_warps=4 if filtering or block <= 1024 else 8)


def sample_masked_triton(logits, mask, rng_state, *, logits_shift=False, block_v=None, out=None, **options):
    """Launch the sampling kernel over a canvas; see :func:`fastdiff.ops.sample_masked` for the contract.

    ``options``: temperature, top_k, top_p, score, suppress_ids, score_temperature. ``block_v``
    overrides the vocabulary chunk (a power of two). ``out`` is an optional pair of preallocated
    contiguous ``(tokens int64 [B, L], scores fp32 [B, L])``; every element is written.
    """
    B, L, V = logits.shape
    return _launch(logits, logits.stride(0), logits.stride(1), (B, L), rng_state, options, block_v, out,
                   mask=mask, shift=logits_shift)


def sample_rows_triton(logits_rows, row_ids, rng_state, canvas_length, *, block_v=None, out=None, **options):
    """Launch the sampling kernel over gathered rows ``[R, V]`` (the masked-row LM head).

    ``row_ids`` int64 ``[R]``: the canvas position ``b * canvas_length + l`` of each row, or ``-1`` for
    padding.
    Returns ``(tokens, scores)`` of shape ``[R]``; see
    :func:`fastdiff.kernels.reference.sample_rows_reference`.
    """
    R, V = logits_rows.shape
    return _launch(logits_rows, logits_rows.stride(0), 0, (R,), rng_state, options, block_v, out,
                   row_ids=row_ids.contiguous(), canvas_length=canvas_length)


def _launch(logits, stride_rows, stride_cols, shape, rng_state, options, block_v, out, mask=None, row_ids=None,
            canvas_length=1, shift=False):
    V = logits.shape[-1]
    if logits.stride(-1) != 1:
        raise ValueError("logits must be contiguous along the vocabulary (stride 1 in the last dimension)")
    if logits.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(f"the triton backend reads fp32, bf16 or fp16 logits, got {logits.dtype}")
    device = logits.device
    if out is None:
        out = (torch.empty(shape, dtype=torch.int64, device=device), torch.empty(shape, dtype=torch.float32, device=device))
    tokens, scores = out
    if tokens.shape != shape or scores.shape != shape or not (tokens.is_contiguous() and scores.is_contiguous()):
        raise ValueError(f"out must be two contiguous {list(shape)} tensors")
    if tokens.dtype != torch.int64 or scores.dtype != torch.float32:
        raise TypeError("out must be (int64 tokens, float32 scores)")
    top_k, top_p = options.get("top_k"), options.get("top_p")
    blocks = launch_shape(V, top_p is not None or top_k is not None, block_v)
    programs = tokens.numel()
    if programs == 0:
        return tokens, scores
    suppress_ids = options.get("suppress_ids")
    if suppress_ids is None:
        suppress_ids = torch.empty(0, dtype=torch.int64, device=device)
    score_temperature = options.get("score_temperature")
    mask_arg = mask.view(torch.int8) if mask is not None else tokens
    _sample_masked_kernel[(programs,)](
        logits, stride_rows, stride_cols,
        mask_arg, mask.stride(0) if mask is not None else 0, mask.stride(1) if mask is not None else 0,
        row_ids if row_ids is not None else tokens,
        rng_state, suppress_ids, suppress_ids.numel(),
        as_device_scalar(options.get("temperature", 0.0), torch.float32, device, "temperature"),
        as_device_scalar(top_k if top_k is not None else V, torch.int32, device, "top_k"),
        as_device_scalar(top_p if top_p is not None else 1.0, torch.float32, device, "top_p"),
        as_device_scalar(score_temperature if score_temperature is not None else 1.0, torch.float32, device,
                          "score_temperature"),
        tokens, scores,
        shape[-1] if mask is not None else canvas_length, V,
        SCORE=_SCORE_CODES[options.get("score", "confidence")],
        HAS_TOP_K=top_k is not None,
        HAS_TOP_P=top_p is not None,
        HAS_SCORE_TEMPERATURE=score_temperature is not None,
        HAS_ROW_IDS=row_ids is not None,
        SHIFT=1 if shift else 0,
        STREAM_SALT=stream_salt(STREAM_SAMPLE),
        KEY=_KEY_KINDS[logits.dtype],
        VECTOR=16 // logits.element_size(),
        **blocks,
    )
    return tokens, scores
