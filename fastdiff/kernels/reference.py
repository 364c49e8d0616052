"""Pure-PyTorch references of the per-step sampling ops.

These functions define what the fused Triton kernels in this package compute, and they are what the
``torch`` backend runs (on the CPU the integer hash and the Gumbel logs run on numpy views of the same
tensors, which compute the same bits several times faster there). All selection maths is fp32. They share one counter-based random stream with
the kernels (:func:`uniform_noise`), so a kernel and its reference given the same ``rng_state`` draw the
same noise and can be compared token for token.

Random stream
-------------
``rng_state`` is an int64 tensor ``[B, 3]``: one ``(seed, counter, origin)`` row per batch row (see
:func:`fastdiff.ops.make_rng_state`). A draw is addressed by ``(seed_b, counter_b, stream, index, col)``:

* ``stream`` separates the ops of one step (:data:`STREAM_SAMPLE`, :data:`STREAM_SELECT`, ...);
* for ``sample_masked``, ``index`` is the position ``l - origin_b`` and ``col`` the vocabulary id; for
  the per-position ops (selection, remasking, reveal) ``index`` is 0 and ``col`` is ``l - origin_b``.

A row's noise is therefore a function of its own seed and of positions counted from its origin (its
first real token): it does not depend on the other rows of the batch or on its left padding.

The seed, counter, stream and index are folded into two 32-bit keys, and each column is hashed with
them. This keeps every offset 32-bit however large ``B * L * V`` is, and the counter can be advanced on
the device between CUDA-graph replays. The hash is lowbias32 (a well-mixed 32-bit integer hash); the
torch version below does its 32-bit multiplies in int64 halves so that it never overflows.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch

from fastdiff.kernels.utils import (HASH_MUL1, HASH_MUL2, KEY_B_SALT, SCORE_KINDS, STREAM_REMASK, STREAM_REVEAL,
                                    STREAM_SAMPLE, STREAM_SELECT, stream_salt)

_MASK32 = 0xFFFFFFFF


# --------------------------------------------------------------------------------------------------
# Counter-based random numbers (torch twin of counter_rng.py)
# --------------------------------------------------------------------------------------------------
def _signed32(value: int) -> int:
    """A uint32 constant as the int32 with the same bits."""
    return value - (1 << 32) if value >= 1 << 31 else value


def _to_int32(x: torch.Tensor) -> torch.Tensor:
    """The low 32 bits of int64 values as an int32 tensor (numpy's wrapping cast on the CPU)."""
    if x.device.type == "cpu":
        return torch.from_numpy(np.ascontiguousarray(x.numpy()).astype(np.uint32).view(np.int32))
    return (((x & _MASK32) ^ 0x80000000) - 0x80000000).to(torch.int32)


_HASH_ROUNDS = ((16, HASH_MUL1), (15, HASH_MUL2), (16, None))  # lowbias32: xor-shift, multiply


def _hash32_bits(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 on int32 tensors read as uint32, in place on ``x`` (callers pass a fresh tensor).

    On the CPU the rounds run on numpy's uint32 view of the same memory (:func:`_hash32_host`). Elsewhere
    int32 multiplication wraps mod 2**32 (checked against numpy's uint32 by the tests), and each right
    shift is made logical by masking the sign bits."""
    if x.device.type == "cpu":
        _hash32_host(x.numpy().view(np.uint32))
        return x
    for shift, multiplier in _HASH_ROUNDS:
        x ^= (x >> shift) & ((1 << (32 - shift)) - 1)
        if multiplier is not None:
            x *= _signed32(multiplier)
    return x


def _hash32_host(bits: np.ndarray) -> np.ndarray:
    """lowbias32 in place on a numpy uint32 array: its shifts are logical, its multiplications wrap mod
    2**32, and its loops cost a fraction of torch's per op and per element on the CPU."""
    shifted = np.empty_like(bits)  # one scratch array for the three shifts
    for shift, multiplier in _HASH_ROUNDS:
        bits ^= np.right_shift(bits, np.uint32(shift), out=shifted)
        if multiplier is not None:
            bits *= np.uint32(multiplier)
    return bits


def _hash32_int(x: int) -> int:
    """lowbias32 of one uint32 held in a Python int (the per-row keys of a few rows)."""
    for shift, multiplier in _HASH_ROUNDS:
        x ^= x >> shift
        if multiplier is not None:
            x = (x * multiplier) & _MASK32
    return x


def hash32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 integer hash of uint32 values held in an int64 tensor (returned the same way)."""
    return _hash32_bits(_to_int32(x)).to(torch.int64) & _MASK32


def row_keys(rng_state: torch.Tensor, stream: int, rows: torch.Tensor, index: torch.Tensor):
    """The two 32-bit keys (as int32 bit patterns) of ``(rows, index)`` (broadcast) in ``stream``:
    ``rows`` are batch rows of ``rng_state [B, 3]``."""
    state = rng_state.to(torch.int64)
    seed, counter = state[rows, 0], state[rows, 1]
    # int32 throughout: xor is bitwise, and addition wraps mod 2**32 like the multiplications
    k = _hash32_bits(_to_int32(seed) ^ _signed32(stream_salt(stream)))
    k = _hash32_bits(k ^ _to_int32(seed >> 32))
    k = _hash32_bits(k + _to_int32(counter))
    key_a = _hash32_bits(k ^ _to_int32(index.to(torch.int64)))
    key_b = _hash32_bits(key_a + _signed32(KEY_B_SALT))
    return key_a, key_b


def row_positions(rng_state: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Canvas positions counted from each row's origin: ``positions - origin[rows]`` (broadcast)."""
    if rng_state.device.type == "cpu":  # numpy's indexing costs a fraction of torch's per call
        return torch.from_numpy(positions.numpy() - rng_state.numpy()[:, 2][rows.numpy()])
    return positions.to(torch.int64) - rng_state[:, 2].to(torch.int64)[rows]


def uniform_noise(rng_state: torch.Tensor, stream: int, rows: torch.Tensor, index: torch.Tensor,
                  cols: torch.Tensor) -> torch.Tensor:
    """Uniform fp32 numbers in the open interval (0, 1), one per ``(row, index, col)`` (broadcast).

    ``u = ((hash >> 9) + 0.5) / 2**23``: 23 random bits plus the half, which fp32 holds exactly, so
    ``u`` is never 0 or 1 (24 bits would round the top value up to 1.0).
    """
    if rng_state.device.type == "cpu":
        return torch.from_numpy(_uniform_on_host(rng_state.numpy(), stream, rows.numpy(), index.numpy(), cols.numpy()))
    key_a, key_b = row_keys(rng_state, stream, rows, index)
    bits = _hash32_bits(cols.to(torch.int32) ^ key_a)
    bits = _hash32_bits(bits.add_(key_b))
    return (((bits >> 9) & 0x7FFFFF).to(torch.float32) + 0.5) * (1.0 / 8388608.0)


def _uniform_on_host(state: np.ndarray, stream: int, rows: np.ndarray, index: np.ndarray,
                     cols: np.ndarray) -> np.ndarray:
    """:func:`uniform_noise` in numpy on CPU arrays: the same bits. The keys' seed / counter part
    depends on the batch row only, so it is hashed once per row, in Python ints (a batch has few rows),
    and so are the whole keys when ``index`` is one number (the per-position streams); the rest per
    element, in numpy's uint32."""
    salt = stream_salt(stream)
    row_key = []
    for seed, counter in state[:, :2].tolist():
        k = _hash32_int((seed & _MASK32) ^ salt)
        k = _hash32_int(k ^ ((seed >> 32) & _MASK32))
        row_key.append(_hash32_int((k + counter) & _MASK32))
    if index.ndim == 0:
        row_a = [_hash32_int(k ^ (int(index) & _MASK32)) for k in row_key]
        key_a = np.array(row_a, dtype=np.uint32)[rows]
        key_b = np.array([_hash32_int((k + KEY_B_SALT) & _MASK32) for k in row_a], dtype=np.uint32)[rows]
    else:
        key_a = _hash32_host(np.array(row_key, dtype=np.uint32)[rows] ^ index.astype(np.uint32))
        key_b = _hash32_host(key_a + np.uint32(KEY_B_SALT))
    bits = _hash32_host(cols.astype(np.uint32) ^ key_a)
    bits += key_b
    u = np.right_shift(_hash32_host(bits), np.uint32(9), out=bits).astype(np.float32)
    u += np.float32(0.5)
    u *= np.float32(1.0 / 8388608.0)
    return u


def _gumbel(u: torch.Tensor) -> torch.Tensor:
    """``-log(-log(u))``, in place on a fresh ``u`` (numpy's float32 log on the CPU: several times
    faster than torch's there, and the one the Triton interpreter computes ``tl.log`` with)."""
    if u.device.type == "cpu":
        a = u.numpy()
        np.log(a, out=a)
        np.negative(a, out=a)
        np.log(a, out=a)
        np.negative(a, out=a)
        return u
    return -torch.log(-torch.log(u))


def gumbel_noise(rng_state: torch.Tensor, stream: int, rows: torch.Tensor, index: torch.Tensor,
                 cols: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise ``-log(-log(u))`` from :func:`uniform_noise`."""
    return _gumbel(uniform_noise(rng_state, stream, rows, index, cols))


def position_uniform(rng_state: torch.Tensor, stream: int, B: int, L: int) -> torch.Tensor:
    """Uniform noise ``[B, L]`` of the per-position ops: index 0, column ``l - origin_b``."""
    return uniform_at(rng_state, stream, torch.arange(B, device=rng_state.device)[:, None],
                      torch.arange(L, device=rng_state.device)[None, :])


def uniform_at(rng_state: torch.Tensor, stream: int, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """:func:`position_uniform`'s numbers at the canvas positions ``(rows, positions)`` only (broadcast)."""
    cols = row_positions(rng_state, rows, positions)
    return uniform_noise(rng_state, stream, rows, torch.zeros((), dtype=torch.int64, device=rng_state.device), cols)


def position_gumbel(rng_state: torch.Tensor, stream: int, B: int, L: int) -> torch.Tensor:
    """Gumbel noise ``[B, L]`` from :func:`position_uniform`."""
    return _gumbel(position_uniform(rng_state, stream, B, L))


# --------------------------------------------------------------------------------------------------
# sample_masked
# --------------------------------------------------------------------------------------------------
def _as_float(value, name: str) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        return float(value.item())
    return float(value)


def sample_masked_reference(
    logits: torch.Tensor,
    mask: torch.Tensor,
    rng_state: torch.Tensor,
    *,
    temperature: Union[float, torch.Tensor] = 0.0,
    top_k: Union[int, torch.Tensor, None] = None,
    top_p: Union[float, torch.Tensor, None] = None,
    score: str = "confidence",
    suppress_ids: Optional[Union[Sequence[int], torch.Tensor]] = None,
    score_temperature: Union[float, torch.Tensor, None] = None,
    logits_shift: bool = False,
    row_sampler: Optional[Callable] = None,
):
    """Sample one token at every masked position and score it.

    Args:
        logits: ``[B, L, V]`` float tensor. Only rows where ``mask`` is true are read.
        mask: ``[B, L]`` bool.
        rng_state: int64 ``[B, 3]``: each row's ``(seed, counter, origin)``.
        temperature: ``0`` is argmax; ``T > 0`` samples from ``softmax(logits / T)``.
        top_k: keep the tokens whose logit is at least the k-th largest (ties at the boundary are
            all kept). ``None`` keeps all.
        top_p: after top-k, keep each token whose tokens of strictly larger logit hold less than
            ``top_p`` of the kept probability (the nucleus; tied tokens are kept or dropped together).
        score: ``"confidence"`` (p of the token), ``"margin"`` (p1 - p2) or ``"entropy"``
            (negative entropy, ``sum p log p``).
        suppress_ids: token ids that are never drawn.
        score_temperature: the temperature ``T'`` of the distribution the score is measured on.
            ``None``: the sampling one (``T``, or ``1`` for argmax).
        logits_shift: position ``l`` reads the logits of ``l - 1`` (position 0 its own).
        row_sampler: what samples each chunk of rows; ``None``: this module's definition.
            :func:`fastdiff.kernels.torch_fast.sample_rows` computes the same in fewer passes (the
            torch backend runs it).

    Both filters rank tokens by their logits as given, not by ``logits / T``: dividing by ``T``
    keeps the order, but in fp32 its rounding can tie two different logits. The scores are measured
    on ``q = softmax(logits / T')`` restricted to the kept tokens and renormalised. The noise of
    position ``(b, l)`` is addressed by ``(b, l - origin_b)`` in the random stream.

    Returns:
        ``(tokens, scores)``: int64 and fp32 ``[B, L]``. Unmasked positions get token ``-1`` and score
        ``-inf``. A masked row whose logits hold NaN or ``+inf``, or where every token is filtered out,
        gets token ``-1`` and score NaN.
    """
    B, L, V = logits.shape
    tokens = torch.full((B, L), -1, dtype=torch.int64, device=logits.device)
    scores = torch.full((B, L), float("-inf"), dtype=torch.float32, device=logits.device)
    where = mask.nonzero(as_tuple=False)
    if where.numel():
        b_idx, l_idx = where[:, 0], where[:, 1]
        tok, s = sample_positions(logits, b_idx, l_idx, rng_state, logits_shift=logits_shift, row_sampler=row_sampler,
                                  temperature=temperature, top_k=top_k, top_p=top_p, score=score,
                                  suppress_ids=suppress_ids, score_temperature=score_temperature)
        tokens[b_idx, l_idx] = tok
        scores[b_idx, l_idx] = s
    return tokens, scores


def sample_positions(logits: torch.Tensor, b_idx: torch.Tensor, l_idx: torch.Tensor, rng_state: torch.Tensor, *,
                     logits_shift: bool = False, row_sampler: Optional[Callable] = None, **options):
    """:func:`sample_masked_reference` at the positions ``(b_idx, l_idx)`` (int64 ``[N]`` each, in
    canvas order), with its keywords: ``(tokens, scores)`` of shape ``[N]`` (``N >= 1``)."""
    B, L, V = logits.shape
    address = torch.stack([b_idx, row_positions(rng_state, b_idx, l_idx)], dim=1)
    if logits.is_contiguous():  # index_select on the [B * L, V] view: a plain row copy
        flat, flat_rows = logits.view(B * L, V), source_rows(b_idx, l_idx, L, logits_shift)
        gather = lambda rows: flat.index_select(0, flat_rows[rows])  # noqa: E731
    else:
        source = (l_idx - 1).clamp(min=0) if logits_shift else l_idx
        gather = lambda rows: logits[b_idx[rows], source[rows]]  # noqa: E731
    return _sample_in_chunks(gather, address, V, rng_state, row_sampler or _sample_rows, **options)


def sample_rows_reference(logits_rows: torch.Tensor, row_ids: torch.Tensor, rng_state: torch.Tensor,
                          canvas_length: int, *, row_sampler: Optional[Callable] = None, **kwargs):
    """:func:`sample_masked_reference` on gathered rows (the masked-row LM head).

    ``logits_rows`` is ``[R, V]``; ``row_ids`` int64 ``[R]`` holds each row's canvas position
    ``b * canvas_length + l``, or ``-1`` for bucket padding, which gets ``(-1, -inf)``; the noise is that
    of position ``(b, l)`` of :func:`sample_masked_reference`. Keywords as there (without ``logits_shift``).
    Returns ``(tokens, scores)`` of shape ``[R]``.
    """
    R = logits_rows.shape[0]
    tokens = torch.full((R,), -1, dtype=torch.int64, device=logits_rows.device)
    scores = torch.full((R,), float("-inf"), dtype=torch.float32, device=logits_rows.device)
    valid = (row_ids >= 0).nonzero(as_tuple=False)[:, 0]
    if valid.numel():
        options = dict(temperature=0.0, top_k=None, top_p=None, score="confidence", suppress_ids=None,
                       score_temperature=None)
        options.update(kwargs)
        b_idx, l_idx = row_ids[valid] // canvas_length, row_ids[valid] % canvas_length
        address = torch.stack([b_idx, row_positions(rng_state, b_idx, l_idx)], dim=1)
        tok, s = _sample_in_chunks(lambda rows: logits_rows.index_select(0, valid[rows]), address, logits_rows.shape[1],
                                   rng_state, row_sampler or _sample_rows, **options)
        tokens[valid] = tok
        scores[valid] = s
    return tokens, scores


def source_rows(b_idx, l_idx, L: int, logits_shift: bool = False):
    """The rows of the ``[B * L, V]`` logits that the positions ``(b_idx, l_idx)`` (int64 tensors, or
    numpy arrays: the result is of the same kind) are sampled from: their own, or with ``logits_shift``
    the one before (position 0 its own)."""
    if isinstance(b_idx, np.ndarray):
        return b_idx * L + (np.maximum(l_idx - 1, 0) if logits_shift else l_idx)
    if b_idx.device.type == "cpu":  # numpy: a fraction of torch's cost per call on a few positions
        return torch.from_numpy(source_rows(b_idx.numpy(), l_idx.numpy(), L, logits_shift))
    return b_idx * L + ((l_idx - 1).clamp(min=0) if logits_shift else l_idx)


# rows of fp32 logits handled at once: bounds the [rows, V] temporaries (and keeps them in cache on CPU)
_CHUNK_ELEMENTS = 1 << 20


def _sample_in_chunks(gather, address, V, rng_state, row_sampler, temperature=0.0, top_k=None, top_p=None,
                      score="confidence", suppress_ids=None, score_temperature=None):
    """``row_sampler`` (:func:`_sample_rows` or its fast twin) over ``len(address)`` rows, a chunk of rows
    at a time; ``gather(slice)`` returns those rows of logits."""
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // max(V, 1))
    tokens, scores = [], []
    for start in range(0, len(address), rows_per_chunk):
        rows = slice(start, start + rows_per_chunk)
        tok, s = row_sampler(gather(rows).to(torch.float32), address[rows], rng_state, temperature, top_k, top_p,
                             score, suppress_ids, score_temperature)
        tokens.append(tok)
        scores.append(s)
    if len(tokens) == 1:  # one chunk: no concatenation
        return tokens[0], scores[0]
    return torch.cat(tokens), torch.cat(scores)


def _filter(z: torch.Tensor, raw: torch.Tensor, top_k, top_p) -> torch.Tensor:
    """``z`` (``raw / T``) with the tokens outside top-k, then outside the nucleus, set to ``-inf``."""
    V = z.shape[-1]
    # the thresholds rank the tokens by their logits: dividing by T > 0 keeps that order, but its
    # rounding can tie two different logits. A token that cannot be drawn has z = -inf.
    z = torch.where(torch.isfinite(z), z, torch.full_like(z, float("-inf")))
    order = torch.where(torch.isfinite(z), raw, torch.full_like(raw, float("-inf")))
    k = V if top_k is None else int(_as_float(top_k, "top_k"))
    if k < V:
        kth = torch.topk(order, k, dim=-1).values[:, -1:]
        z = torch.where(order >= kth, z, torch.full_like(z, float("-inf")))

    p = 1.0 if top_p is None else _as_float(top_p, "top_p")
    if p < 1.0:
        candidates = int(torch.isfinite(z).sum(dim=-1).max())  # only these can be in a nucleus
        order = torch.where(torch.isfinite(z), raw, torch.full_like(raw, float("-inf")))
        sorted_order, by_order = torch.topk(order, max(candidates, 1), dim=-1)
        probs = torch.softmax(torch.gather(z, -1, by_order), dim=-1)
        mass_before = torch.cumsum(probs, dim=-1) - probs
        last_kept = (mass_before < p).sum(dim=-1, keepdim=True) - 1
        tau = torch.gather(sorted_order, -1, last_kept.clamp(min=0))
        z = torch.where(order >= tau, z, torch.full_like(z, float("-inf")))
    return z


def _sample_rows(z, address, rng_state, temperature, top_k, top_p, score, suppress_ids, score_temperature):
    """Tokens and scores of fp32 logit rows ``z [M, V]`` whose noise is addressed by ``address [M, 2]``
    (batch row, position from its origin)."""
    M, V = z.shape
    device = z.device
    bad = (torch.isnan(z) | torch.isposinf(z)).any(dim=-1)
    z = torch.where(bad[:, None], torch.zeros_like(z), z)

    if suppress_ids is not None:
        ids = torch.as_tensor(suppress_ids, dtype=torch.int64, device=device).reshape(-1)
        ids = ids[(ids >= 0) & (ids < V)]
        z[:, ids] = float("-inf")

    raw = z
    t = _as_float(temperature, "temperature")
    if t > 0:
        z = z / t

    z = _filter(z, raw, top_k, top_p)

    empty = torch.isneginf(z).all(dim=-1)
    bad = bad | empty
    z = torch.where(bad[:, None], torch.zeros_like(z), z)

    if t > 0:
        keyed = torch.full_like(z, float("-inf"))
        kept = torch.isfinite(z)
        if kept.float().mean() > 0.5:  # dense: noise for the whole row
            noise = gumbel_noise(rng_state, STREAM_SAMPLE, address[:, :1], address[:, 1:],
                                 torch.arange(V, device=device)[None, :])
            keyed = torch.where(kept, z + noise, keyed)
        else:  # filtered: noise only where a token can be drawn (same stream addresses)
            row, col = kept.nonzero(as_tuple=True)
            keyed[row, col] = z[row, col] + gumbel_noise(rng_state, STREAM_SAMPLE, address[row, 0], address[row, 1],
                                                         col)
        tok = torch.argmax(keyed, dim=-1)
    else:
        tok = torch.argmax(z, dim=-1)

    if score_temperature is not None:  # same kept set, scored at another temperature
        z = torch.where(torch.isneginf(z), z, raw / _as_float(score_temperature, "score_temperature"))
    # log q = (z - m) - log sum exp(z - m): shifted first, so a peaked q keeps its precision
    z = z - z.max(dim=-1, keepdim=True).values
    log_q = z - torch.log(torch.exp(z).sum(dim=-1, keepdim=True))
    if score == "confidence":
        s = torch.exp(torch.gather(log_q, -1, tok[:, None])[:, 0])
    elif score == "margin":
        top2 = torch.exp(torch.topk(log_q, min(2, V), dim=-1).values)
        s = top2[:, 0] - top2[:, 1] if V > 1 else top2[:, 0]
    elif score == "entropy":
        q = torch.exp(log_q)
        s = torch.where(q > 0, q * log_q, torch.zeros_like(q)).sum(dim=-1)
    else:
        raise ValueError(f"score must be one of {SCORE_KINDS}, got {score!r}")
    tok = torch.where(bad, torch.full_like(tok, -1), tok)
    s = torch.where(bad, torch.full_like(s, float("nan")), s)
    return tok, s


# --------------------------------------------------------------------------------------------------
# select_topk
# --------------------------------------------------------------------------------------------------
def _first_ranked(keys: torch.Tensor, tier: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """bool ``[B, L]``: the ``n[b]`` first of each row in the order higher tier first, then larger key,
    then lower index (``keys`` fp32 without NaN, ``-0.0`` tied with ``0.0``; ``n`` int64 ``[B]`` within
    ``[0, L]``).

    On the CPU each element gets one unsigned 64-bit key in that order: the tier's bit, the key's
    bits mapped to an order-preserving integer and inverted (larger first), the index; numpy sorts
    the rows (a vectorised sort, a fraction of a stable two-key sort's cost) and the ``n``-th key of
    each row is the bound. Elsewhere :func:`_first_ranked_by_sorts`."""
    L = keys.shape[1]
    if keys.device.type == "cpu":
        bits = (keys.detach().numpy() + np.float32(0.0)).view(np.uint32)  # + 0.0: -0.0 becomes 0.0
        # negative floats: every bit flipped; the others: the sign bit set (an integer order)
        ordered = bits ^ ((bits >> np.uint32(31)) * np.uint32(0x7FFFFFFF) | np.uint32(0x80000000))
        key = (np.logical_not(tier.numpy()).astype(np.uint64) << np.uint64(63)
               | (~ordered).astype(np.uint64) << np.uint64(31) | np.arange(L, dtype=np.uint64))
        counts = n.numpy()
        bound = np.take_along_axis(np.sort(key, axis=-1), np.maximum(counts - 1, 0)[:, None], axis=-1)
        return torch.from_numpy((key <= bound) & (counts[:, None] > 0))
    return _first_ranked_by_sorts(keys, tier, n)


def _first_ranked_by_sorts(keys: torch.Tensor, tier: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """:func:`_first_ranked` on any device: two stable sorts rank the rows."""
    L = keys.shape[1]
    order = torch.sort(keys, dim=-1, descending=True, stable=True).indices
    tier_sorted = torch.gather(tier.to(torch.int8), -1, order)
    order = torch.gather(order, -1, torch.sort(tier_sorted, dim=-1, descending=True, stable=True).indices)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(L, device=order.device).expand_as(order))
    return ranks < n[:, None]


def select_topk_reference(
    scores: torch.Tensor,
    eligible: torch.Tensor,
    k: torch.Tensor,
    rng_state: torch.Tensor,
    *,
    position_temperature: Union[float, torch.Tensor] = 0.0,
    threshold: Union[float, torch.Tensor, None] = None,
    stream: int = STREAM_SELECT,
) -> torch.Tensor:
    """Choose the positions to commit in each row.

    Args:
        scores: fp32 ``[B, L]``. NaN ranks below every number.
        eligible: bool ``[B, L]``.
        k: int ``[B]``: how many to pick per row (clamped to the eligible count).
        rng_state: int64 ``[B, 3]`` (see the module doc).
        position_temperature: ``tau > 0`` ranks by ``score / tau + Gumbel``, which samples ``k``
            positions without replacement from ``softmax(score / tau)``.
        threshold: pick every eligible position whose raw score is ``>= threshold``, at least one
            and at most ``k`` (the best-ranked ones).

    Ties go to the lowest index.

    Returns:
        bool ``[B, L]``.
    """
    B, L = scores.shape
    device = scores.device
    keys = scores.to(torch.float32).nan_to_num(nan=float("-inf"), posinf=float("inf"), neginf=float("-inf"))
    tau = _as_float(position_temperature, "position_temperature")
    if tau > 0:
        keys = keys / tau + position_gumbel(rng_state, stream, B, L)

    k = k.to(device=device, dtype=torch.int64).reshape(B)
    tier = eligible
    if threshold is not None:
        above = eligible & (scores >= _as_float(threshold, "threshold"))
        n_above = above.sum(dim=-1)
        use_above = n_above > 0
        tier = torch.where(use_above[:, None], above, eligible)
        k = torch.minimum(k, torch.where(use_above, n_above, torch.ones_like(n_above)))
    k = torch.minimum(k.clamp(min=0), tier.sum(dim=-1))
    return tier & _first_ranked(keys, tier, k)


# --------------------------------------------------------------------------------------------------
# commit + remask
# --------------------------------------------------------------------------------------------------
def commit_reference(canvas: torch.Tensor, confidence: torch.Tensor, tokens: torch.Tensor, scores: torch.Tensor,
                     selected: torch.Tensor, editable: torch.Tensor) -> None:
    """Step 1 of :func:`commit_remask_reference` alone (no re-masking), in place."""
    commit = selected & editable & (tokens >= 0)
    canvas.copy_(torch.where(commit, tokens, canvas))
    confidence.copy_(torch.where(commit, scores.to(torch.float32), confidence))


def commit_remask_reference(
    canvas: torch.Tensor,
    confidence: torch.Tensor,
    tokens: torch.Tensor,
    scores: torch.Tensor,
    selected: torch.Tensor,
    editable: torch.Tensor,
    n_remask: torch.Tensor,
    mask_id: int,
    rng_state: torch.Tensor,
    *,
    remask_temperature: Union[float, torch.Tensor] = 0.0,
) -> None:
    """Write the chosen tokens into the canvas, then re-mask the least confident committed tokens.

    In place on ``canvas`` (int64 ``[B, L]``) and ``confidence`` (fp32 ``[B, L]``):

    1. at ``selected & editable`` where ``tokens >= 0``: ``canvas = tokens`` and
       ``confidence = scores`` (a ``-1`` token, :func:`sample_masked_reference`'s mark of a row with
       no token, leaves its position as it was);
    2. among ``editable`` positions that now hold a token, the ``n_remask[b]`` with the lowest
       confidence (ranked by ``-confidence / tau + Gumbel`` when ``remask_temperature = tau > 0``;
       ties to the lowest index) get ``canvas = mask_id`` and ``confidence = NaN``.

    Positions outside ``editable`` (prompt, fixed, pad) are never written.
    """
    commit_reference(canvas, confidence, tokens, scores, selected, editable)
    B, L = canvas.shape
    candidates = editable & (canvas != mask_id)
    keys = (-confidence).nan_to_num(nan=float("-inf"), posinf=float("inf"), neginf=float("-inf"))
    tau = _as_float(remask_temperature, "remask_temperature")
    if tau > 0:
        keys = keys / tau + position_gumbel(rng_state, STREAM_REMASK, B, L)
    n = torch.minimum(n_remask.to(device=canvas.device, dtype=torch.int64).reshape(B).clamp(min=0),
                      candidates.sum(dim=-1))
    chosen = candidates & _first_ranked(keys, candidates, n)
    canvas.masked_fill_(chosen, mask_id)
    confidence.masked_fill_(chosen, float("nan"))


def reveal_reference(eligible: torch.Tensor, prob: torch.Tensor, rng_state: torch.Tensor) -> torch.Tensor:
    """Ancestral reveal: each eligible position independently with probability ``prob``, float ``[B]``
    (one per row) or ``[B, L]`` (one per position)."""
    B, L = eligible.shape
    u = position_uniform(rng_state, STREAM_REVEAL, B, L)
    return eligible & (u < prob.to(torch.float32).reshape(B, -1))
