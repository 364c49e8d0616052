"""The torch backend's row sampler: the function of :func:`fastdiff.kernels.reference._sample_rows` in
fewer passes over the vocabulary, for the CPU (and any device without the Triton kernels).

Same tokens for the same seed, and the same scores up to the order of fp32 sums:

* the scores come from one softmax (``q_max = 1 / S`` gives ``log S``), with no ``isfinite`` pass and
  no materialised ``log softmax``;
* with ``top_k``, everything after the threshold works on the ``k`` candidates ``torch.topk`` returns,
  and Gumbel noise is drawn only there (the stream addresses are the reference's, so the draws are too);
* ties go to the lowest vocabulary index, as in the reference.

Rows the fast path does not cover exactly are sampled by the reference itself: rows with NaN / +inf
logits or no drawable token, rows whose ``logits / T`` leaves the fp32 range, rows with a tie at the
``k``-th logit, and top-p without top-k (its nucleus needs the sorted row).
"""
from __future__ import annotations

import torch

from fastdiff.kernels import reference
from fastdiff.kernels.utils import STREAM_SAMPLE


def sample_rows(z, address, rng_state, temperature, top_k, top_p, score, suppress_ids, score_temperature):
    """Tokens and scores of fp32 logit rows ``z [M, V]`` (modified in place) whose noise is addressed by
    ``address [M, 2]``; the contract of :func:`fastdiff.kernels.reference._sample_rows`."""
    M, V = z.shape
    t = reference._as_float(temperature, "temperature")
    k = V if top_k is None else min(int(reference._as_float(top_k, "top_k")), V)
    p = 1.0 if top_p is None else reference._as_float(top_p, "top_p")
    score_t = None if score_temperature is None else reference._as_float(score_temperature, "score_temperature")
    options = (temperature, top_k, top_p, score, suppress_ids, score_temperature)
    if p < 1.0 and k == V:
        return reference._sample_rows(z, address, rng_state, *options)
    ids = None
    if suppress_ids is not None:
        ids = torch.as_tensor(suppress_ids, dtype=torch.int64, device=z.device).reshape(-1)
        ids = ids[(ids >= 0) & (ids < V)]
        suppressed = z[:, ids]  # kept for the reference, which reads a NaN there as a bad row
        z[:, ids] = float("-inf")
    # NaN / +inf logits, or nothing drawable (amax propagates NaN)
    leftover = ~torch.isfinite(z.amax(dim=1))
    if ids is not None:
        leftover |= (torch.isnan(suppressed) | torch.isposinf(suppressed)).any(dim=1)
    zt = z / t if t > 0 else z
    # logits / T beyond the fp32 range: the reference reads them as undrawable
    if 0 < t < 1:
        leftover |= torch.isposinf(zt.amax(dim=1))
    if score_t is not None and score_t < 1:
        leftover |= torch.isposinf((z / score_t).amax(dim=1))
    columns, raw = None, z
    if k < V:
        values, columns = torch.topk(z, k + 1, dim=1)  # sorted: the threshold is the k-th
        leftover |= torch.isneginf(values[:, k - 1]) | (values[:, k] == values[:, k - 1])  # too few, or a tie
        raw, columns = values[:, :k], columns[:, :k]
        zt = zt.gather(1, columns)
    if not bool(leftover.any()):
        return _sample_candidates(zt, raw, columns, address, rng_state, t, p, score, score_t, V)
    tokens = torch.empty(M, dtype=torch.int64, device=z.device)
    scores = torch.empty(M, dtype=torch.float32, device=z.device)
    fast = (~leftover).nonzero()[:, 0]
    if len(fast):
        tokens[fast], scores[fast] = _sample_candidates(
            zt[fast], raw[fast], None if columns is None else columns[fast], address[fast], rng_state, t, p,
            score, score_t, V)
    rows = leftover.nonzero()[:, 0]
    given = z[rows]
    if ids is not None:
        given[:, ids] = suppressed[rows]
    tokens[rows], scores[rows] = reference._sample_rows(given, address[rows], rng_state, *options)
    return tokens, scores


def _sample_candidates(zt, raw, columns, address, rng_state, t, p, score, score_t, V):
    """Draw and score among candidate columns: ``zt`` the tempered logits, ``raw`` the logits (both
    ``[M, C]``, every row with a drawable token and nothing above +inf), ``columns`` their vocabulary
    ids (``None``: all ``V``, in order; else sorted by logit, largest first, as ``torch.topk`` gives them).
    The scores come from one softmax: ``q_max = 1 / S`` gives ``log S`` for the entropy."""
    dense = columns is None
    if p < 1.0:  # the nucleus of the candidates, the reference's cumulative-mass rule
        probs = torch.softmax(zt, dim=1)
        last_kept = ((torch.cumsum(probs, dim=1) - probs) < p).sum(dim=1, keepdim=True) - 1
        outside = raw < torch.gather(raw, 1, last_kept.clamp(min=0))
        zt = zt.masked_fill(outside, float("-inf"))
        raw = raw.masked_fill(outside, float("-inf"))
    keyed = zt
    if t > 0:
        ids = torch.arange(V, device=zt.device)[None, :] if dense else columns
        keyed = zt + reference.gumbel_noise(rng_state, STREAM_SAMPLE, address[:, :1], address[:, 1:], ids)
    if dense:
        at = keyed.argmax(dim=1, keepdim=True)  # the first of tied maxima: the lowest id
        tokens = at
    else:  # candidates are sorted by logit, not by id: ties go to the lowest id explicitly
        best = keyed.amax(dim=1, keepdim=True)
        tokens = torch.where(keyed == best, columns, V).amin(dim=1, keepdim=True)
        at = (columns == tokens).to(torch.int64).argmax(dim=1, keepdim=True)
    zs = zt if score_t is None else raw / score_t  # raw is -inf wherever zt is
    q = torch.softmax(zs, dim=1)
    tokens = tokens[:, 0]
    if score == "confidence":
        return tokens, q.gather(1, at)[:, 0]
    top = q.amax(dim=1)
    if score == "margin":
        if q.shape[1] < 2:
            return tokens, top
        if not dense:  # sorted candidates: the two largest come first
            return tokens, top - q[:, 1]
        first = at if (t == 0 and score_t is None) else q.argmax(dim=1, keepdim=True)
        return tokens, top - q.scatter(1, first, -1.0).amax(dim=1)
    # entropy score: sum q log q = sum q (z - m) - log S, and q_max = 1 / S
    shifted = (zs - zs.amax(dim=1, keepdim=True)).clamp_(min=-3e38)  # -inf: q = 0, keep 0 * shift finite
    return tokens, (q * shifted).sum(dim=1) + torch.log(top)
