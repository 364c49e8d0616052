"""Masked logit gathering and sampling: one program per canvas position, streaming over the vocabulary.

A program whose position is not masked writes ``(-1, -inf)`` and reads nothing else, so the time
falls with the masked fraction. A masked row is read in chunks of ``BLOCK_V``, keeping an online
max / log-sum-exp and a running Gumbel-max; no softmax or ``[B, L, V]`` tensor is built. Each row is
read from the 16-byte-aligned element at or before its start, so that every chunk inside the row
is a 128-bit vector load whatever the vocabulary size (50,265 included); only the first and last
chunks of a row are masked.

Passes over each masked row (counted through the interpreter by ``tests/test_pass_count.py``):

=========================  ======
mode                       passes
=========================  ======
greedy, temperature        1
top-k                      34: the max, 32 bisection steps on the order-preserving integer key, the draw
top-p                      35: the max, the kept mass, 32 bisection steps, the draw
top-k + top-p              67
=========================  ======

Reference: :func:`fastdiff.kernels.reference.sample_masked_reference`.
"""
import torch
import triton
import triton.language as tl

from fastdiff.kernels.counter_rng import gumbel, row_keys, stream_salt
from fastdiff.kernels.reference import SCORE_KINDS, STREAM_SAMPLE
from fastdiff.kernels.select_topk import _KEY_NEG_INF, _KEY_POS_INF, _as_device_scalar, _ordered_key

_SCORE_CODES = {kind: code for code, kind in enumerate(SCORE_KINDS)}  # confidence 0, margin 1, entropy 2
_NO_INDEX = tl.constexpr(2**31 - 1)  # above every vocabulary index


@triton.jit
def _load_chunk(row_base, start, lead, V, suppress_ptr, n_suppress, BLOCK_V: tl.constexpr):
    """One chunk of a row read from its aligned base (``lead`` elements before the row starts).

    Returns the chunk's vocabulary ids, raw fp32 logits, whether each is a drawable id, and whether
    any is NaN / +inf. A chunk wholly inside the row is read without a mask, so that its loads are
    128-bit vectors whatever the vocabulary size; only the first and last chunks are masked.
    """
    idx = start + tl.arange(0, BLOCK_V)
    cols = idx - lead
    inside = (cols >= 0) & (cols < V)
    if (start >= lead) & (start + BLOCK_V <= V + lead):
        raw = tl.load(row_base + idx).to(tl.float32)
    else:
        raw = tl.load(row_base + idx, mask=inside, other=float("-inf")).to(tl.float32)
    bad = tl.max(((raw != raw) | (raw == float("inf"))).to(tl.int32), axis=0)
    allowed = inside
    for i in range(n_suppress):
        allowed = allowed & (cols != tl.load(suppress_ptr + i))
    return cols, raw, allowed, bad


@triton.jit
def _count_at_least(row_base, lead, V, suppress_ptr, n_suppress, t, key, BLOCK_V: tl.constexpr):
    # #{drawable v : key(z_v) >= key}, z = raw / t
    count = tl.zeros((), tl.int32)
    for start in range(0, V + lead, BLOCK_V):
        _, raw, allowed, _ = _load_chunk(row_base, start, lead, V, suppress_ptr, n_suppress, BLOCK_V)
        z = raw / t
        count += tl.sum((allowed & (z > float("-inf")) & (_ordered_key(z) >= key)).to(tl.int32), axis=0)
    return count


@triton.jit
def _mass_above(row_base, lead, V, suppress_ptr, n_suppress, t, m, floor_key, key, BLOCK_V: tl.constexpr):
    # sum of exp(z - m) over drawable v with key(z_v) >= floor_key and key(z_v) > key
    mass = tl.zeros((), tl.float32)
    for start in range(0, V + lead, BLOCK_V):
        _, raw, allowed, _ = _load_chunk(row_base, start, lead, V, suppress_ptr, n_suppress, BLOCK_V)
        z = raw / t
        zkey = _ordered_key(z)
        kept = allowed & (z > float("-inf")) & (zkey >= floor_key) & (zkey > key)
        mass += tl.sum(tl.where(kept, tl.exp(z - m), 0.0), axis=0)
    return mass


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
    BLOCK_V: tl.constexpr,
    VECTOR: tl.constexpr,
):
    pid = tl.program_id(0)
    if HAS_ROW_IDS:
        # gathered rows [R, V]: row_ids holds each row's canvas position b * L + l, -1 for padding
        row = tl.load(row_ids_ptr + pid)
        masked = row >= 0
        row_start = pid.to(tl.int64) * stride_lb
    else:
        # the canvas [B, L, V]: position (b, l) reads row (b, l - SHIFT), clamped at 0
        b = pid // L
        l = pid % L
        row = pid
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
        bad = tl.zeros((), tl.int32)

        # thresholds of the kept set {key(z) >= floor_key}, z = raw / t
        floor_key = tl.full((), _KEY_NEG_INF, tl.int64)
        if HAS_TOP_K or HAS_TOP_P:
            m = tl.full((), float("-inf"), tl.float32)
            for start in range(0, V + lead, BLOCK_V):
                _, raw, allowed, chunk_bad = _load_chunk(row_base, start, lead, V, suppress_ptr, n_suppress, BLOCK_V)
                bad = tl.maximum(bad, chunk_bad)
                m = tl.maximum(m, tl.max(tl.where(allowed, raw / t, float("-inf")), axis=0))
            if HAS_TOP_K:
                # k-th largest z: the largest key x with #{key(z) >= x} >= k (ties all kept)
                k = tl.load(top_k_ptr)
                lo = tl.full((), _KEY_NEG_INF, tl.int64)
                hi = tl.full((), _KEY_POS_INF, tl.int64)
                for _ in range(32):
                    mid = (lo + hi + 1) >> 1
                    enough = _count_at_least(row_base, lead, V, suppress_ptr, n_suppress, t, mid, BLOCK_V) >= k
                    lo = tl.where(enough, mid, lo)
                    hi = tl.where(enough, hi, mid - 1)
                floor_key = lo
            if HAS_TOP_P:
                # nucleus: keep z whose strictly larger kept z hold less than top_p of the kept mass,
                # i.e. key(z) >= the smallest x with mass(key > x) < top_p * mass(all kept)
                total = _mass_above(row_base, lead, V, suppress_ptr, n_suppress, t, m, floor_key, floor_key - 1,
                                    BLOCK_V)
                target = tl.load(top_p_ptr) * total
                lo = floor_key
                hi = tl.full((), _KEY_POS_INF, tl.int64)
                for _ in range(32):
                    mid = (lo + hi) >> 1
                    small = _mass_above(row_base, lead, V, suppress_ptr, n_suppress, t, m, floor_key, mid,
                                        BLOCK_V) < target
                    hi = tl.where(small, mid, hi)
                    lo = tl.where(small, lo, mid + 1)
                floor_key = hi

        key_a = tl.zeros((), tl.uint32)
        key_b = tl.zeros((), tl.uint32)
        if sampling:
            key_a, key_b = row_keys(rng_ptr, row, STREAM_SALT)
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
            offs, raw, allowed, chunk_bad = _load_chunk(row_base, start, lead, V, suppress_ptr, n_suppress, BLOCK_V)
            bad = tl.maximum(bad, chunk_bad)
            z = raw / t
            kept = allowed & (z > float("-inf")) & (_ordered_key(z) >= floor_key)
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
        failed = (bad != 0) | (best_idx < 0)
        tl.store(tokens_ptr + pid, tl.where(failed, -1, best_idx).to(tl.int64))
        tl.store(scores_ptr + pid, tl.where(failed, float("nan"), score))
    else:
        tl.store(tokens_ptr + pid, tl.full((), -1, tl.int64))
        tl.store(scores_ptr + pid, tl.full((), float("-inf"), tl.float32))


def default_block_v(vocab: int) -> int:
    """Chunk of the vocabulary each loop iteration loads: 4096 covers a row of 50k in 13 steps."""
    return min(triton.next_power_of_2(vocab), 4096)


def sample_masked_triton(logits, mask, rng_state, *, logits_shift=False, block_v=None, out=None, **options):
    """Launch the sampling kernel over a canvas; see :func:`fastdiff.ops.sample_masked` for the contract.

    ``options``: temperature, top_k, top_p, score, suppress_ids, score_temperature. ``block_v``
    overrides the vocabulary chunk (a power of two). ``out`` is an optional pair of preallocated
    contiguous ``(tokens int64 [B, L], scores fp32 [B, L])``; every element is written.
    """
    B, L, V = logits.shape
    return _launch(logits, logits.stride(0), logits.stride(1), (B, L), rng_state, options, block_v, out,
                   mask=mask, shift=logits_shift)


def sample_rows_triton(logits_rows, row_ids, rng_state, *, block_v=None, out=None, **options):
    """Launch the sampling kernel over gathered rows ``[R, V]`` (the masked-row LM head).

    ``row_ids`` int64 ``[R]``: the canvas position ``b * L + l`` of each row, or ``-1`` for padding.
    Returns ``(tokens, scores)`` of shape ``[R]``; see
    :func:`fastdiff.kernels.reference.sample_rows_reference`.
    """
    R, V = logits_rows.shape
    return _launch(logits_rows, logits_rows.stride(0), 0, (R,), rng_state, options, block_v, out,
                   row_ids=row_ids.contiguous())


def _launch(logits, stride_rows, stride_cols, shape, rng_state, options, block_v, out, mask=None, row_ids=None,
            shift=False):
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
    programs = tokens.numel()
    if programs == 0:
        return tokens, scores
    block = block_v or default_block_v(V)
    if block & (block - 1):
        raise ValueError(f"block_v must be a power of two, got {block}")
    suppress_ids = options.get("suppress_ids")
    if suppress_ids is None:
        suppress_ids = torch.empty(0, dtype=torch.int64, device=device)
    top_k, top_p = options.get("top_k"), options.get("top_p")
    score_temperature = options.get("score_temperature")
    mask_arg = mask.view(torch.int8) if mask is not None else tokens
    _sample_masked_kernel[(programs,)](
        logits, stride_rows, stride_cols,
        mask_arg, mask.stride(0) if mask is not None else 0, mask.stride(1) if mask is not None else 0,
        row_ids if row_ids is not None else tokens,
        rng_state, suppress_ids, suppress_ids.numel(),
        _as_device_scalar(options.get("temperature", 0.0), torch.float32, device, "temperature"),
        _as_device_scalar(top_k if top_k is not None else V, torch.int32, device, "top_k"),
        _as_device_scalar(top_p if top_p is not None else 1.0, torch.float32, device, "top_p"),
        _as_device_scalar(score_temperature if score_temperature is not None else 1.0, torch.float32, device,
                          "score_temperature"),
        tokens, scores,
        shape[-1] if mask is not None else 1, V,
        SCORE=_SCORE_CODES[options.get("score", "confidence")],
        HAS_TOP_K=top_k is not None,
        HAS_TOP_P=top_p is not None,
        HAS_SCORE_TEMPERATURE=score_temperature is not None,
        HAS_ROW_IDS=row_ids is not None,
        SHIFT=1 if shift else 0,
        STREAM_SALT=stream_salt(STREAM_SAMPLE),
        BLOCK_V=block,
        VECTOR=16 // logits.element_size(),
        num_warps=4 if block <= 1024 else 8,
    )
    return tokens, scores
