"""Bare sampling ops for any diffusion sampling loop.

Each op runs on the fused Triton kernel or in PyTorch (the reference's function; sampling through the
fast row sampler of :mod:`fastdiff.kernels.torch_fast`), chosen by ``backend``
(see :mod:`fastdiff.backend`). Both backends draw from the same counter-based random stream, so a seed
gives the same draw on either one (up to floating-point rounding of near ties).

Seeds
-----
``seed`` gives every batch row its own seed, and a row's noise is keyed by that seed and by positions
counted from the row's origin (0 unless set with :func:`make_rng_state`), never by its place in the
batch. It is one of:

* ``None``: a fresh seed from torch's default generator, used as an ``int``;
* an ``int`` ``s``: row ``b`` gets seed ``s + b`` (wrapping in int64), so rows draw different noise;
* a sequence of ``B`` ints, or an int64 tensor ``[B]``: one seed per row;
* an int64 state tensor ``[B, 3]`` of ``(seed, counter, origin)`` rows from :func:`make_rng_state`.

The state tensor is the graph-safe form: it is used as it is (not copied), and the kernels read it
inside the launch, so a captured CUDA graph that advances the counter on the device
(``state[:, 1] += 1``) draws fresh noise at every replay, while an ``int`` would be frozen into the graph.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch

from fastdiff.backend import resolve_backend
from fastdiff.kernels import reference, torch_fast
from fastdiff.kernels.utils import SCORE_KINDS
from fastdiff.validation import (check_bool_mask, check_counts, check_holds_values, check_scalar, check_seed,
                                 check_seeds, check_suppress_ids)

Seed = Union[None, int, Sequence[int], torch.Tensor]
Scalar = Union[float, int, torch.Tensor]


def make_rng_state(seed: Seed, batch: int, device: torch.device, *, counter: int = 0,
                   origin: Union[Sequence[int], torch.Tensor, None] = None) -> torch.Tensor:
    """The int64 ``[batch, 3]`` random state the ops read: one ``(seed, counter, origin)`` row per batch row.

    Args:
        seed: see the module doc. A ``[batch, 3]`` state on ``device`` is returned as it is.
        batch: rows ``B`` of the data.
        device: the data's device.
        counter: the step counter the rows start from (advance it with ``state[:, 1] += 1``).
        origin: int ``[B]``: each row's first real position (its left padding); noise positions count
            from it, so a left-padded row draws what it would draw alone. ``None``: 0.

    Returns:
        int64 ``[batch, 3]`` on ``device``.

    Example:
        >>> state = make_rng_state([7, 8], 2, "cpu", origin=[0, 3])
        >>> state.tolist()
        [[7, 0, 0], [8, 0, 3]]
    """
    device = torch.device(device)
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    if isinstance(seed, bool) or not isinstance(seed, (int, list, tuple, torch.Tensor)):
        raise TypeError(f"seed must be None, an int, a sequence of ints or an int64 tensor, got {type(seed).__name__}")
    if isinstance(seed, torch.Tensor):
        if seed.dtype != torch.int64:
            raise TypeError(f"seed tensor must be int64, got {seed.dtype}")
        if seed.is_meta:
            raise ValueError("seed is on the meta device: it holds no values")
        if seed.dim() == 2:
            if seed.device.type != device.type:
                raise ValueError(f"the seed state is on {seed.device}, the data on {device}")
            if tuple(seed.shape) != (batch, 3) or not seed.is_contiguous():
                raise ValueError(f"a seed state must be a contiguous int64 [{batch}, 3] tensor of (seed, counter, "
                                 f"origin) rows, got shape {tuple(seed.shape)}")
            return seed
        if seed.dim() == 0:
            seeds = seed + torch.arange(batch, device=seed.device)
        elif seed.dim() == 1 and seed.numel() == batch:
            seeds = seed
        else:
            raise ValueError(f"seed tensor must hold one seed or {batch} (one per row), got shape {tuple(seed.shape)}")
        seeds = seeds.to(device)  # seeds elsewhere are copied (a state tensor is not: its counter is shared)
    else:
        if isinstance(seed, int):
            check_seed(seed)
            seed = [_wrap_int64(seed + b) for b in range(batch)]
        elif len(seed) != batch:
            raise ValueError(f"seed must hold one seed per row ({batch}), got {len(seed)}")
        else:
            check_seeds(seed)
        if origin is None:  # the whole state in one tensor
            return torch.tensor([[s, counter, 0] for s in seed], dtype=torch.int64, device=device)
        seeds = torch.tensor(seed, dtype=torch.int64, device=device)
    if origin is None:
        origins = torch.zeros(batch, dtype=torch.int64, device=device)
    else:
        origins = torch.as_tensor(origin, device=device)
        if origins.is_floating_point() or origins.dtype == torch.bool or tuple(origins.shape) != (batch,):
            raise ValueError(f"origin must be {batch} integer positions, got {tuple(origins.shape)} {origins.dtype}")
        origins = origins.to(torch.int64)
    return torch.stack([seeds.reshape(batch), torch.full_like(origins, counter), origins], dim=1)


def _wrap_int64(value: int) -> int:
    return (value + 2**63) % 2**64 - 2**63


def sample_masked(
    logits: torch.Tensor,
    mask: torch.Tensor,
    *,
    temperature: Scalar = 0.0,
    top_k: Union[int, torch.Tensor, None] = None,
    top_p: Union[float, torch.Tensor, None] = None,
    score: str = "confidence",
    suppress_ids: Union[Sequence[int], torch.Tensor, None] = None,
    score_temperature: Optional[Scalar] = None,
    logits_shift: bool = False,
    seed: Seed = None,
    backend: str = "auto",
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Draw a token at every masked position and score it, streaming over the vocabulary.

    Only rows with ``mask`` true are read, and no ``[B, L, V]`` intermediate is built on the
    Triton backend: each masked row is read once (top-p takes extra passes over that row).

    Args:
        logits: ``[B, L, V]`` fp32 / bf16 / fp16; the last dimension contiguous, any row stride.
        mask: bool ``[B, L]``: the positions to sample.
        temperature: ``0`` takes the argmax (ties to the lowest id); ``T > 0`` samples from
            ``softmax(logits / T)`` by Gumbel-max. Float or one-element tensor.
        top_k: keep tokens whose scaled logit is at least the k-th largest (ties kept). ``None``: all.
        top_p: nucleus in ``(0, 1]`` applied after top-k; ``None`` or ``1``: off.
        score: ``"confidence"`` (p of the drawn token), ``"margin"`` (top-1 minus top-2
            probability) or ``"entropy"`` (negative entropy). Measured on ``softmax(logits / T)``
            (``T = 1`` for argmax) restricted to the kept tokens.
        suppress_ids: token ids never drawn (e.g. the mask token).
        score_temperature: measure the score on ``softmax(logits / score_temperature)`` over the same
            kept tokens instead (LLaDA scores untempered: ``1.0``). ``None``: the sampling temperature.
        logits_shift: position ``l`` reads the logits of ``l - 1`` (position 0 its own), for
            AR-initialised models such as Dream; no shifted copy of the logits is made.
        seed: ``None``, an ``int``, ``B`` seeds or a ``[B, 3]`` state (see the module doc).
        backend: ``"auto"``, ``"torch"`` or ``"triton"``.

    Returns:
        ``(tokens, scores)``: int64 and fp32 ``[B, L]``. Unmasked positions get ``-1`` and ``-inf``.
        A masked row with NaN or ``+inf`` logits, or with every token filtered out, gets ``-1`` and
        NaN, so callers can detect bad model output without a host sync.

    Examples:
        >>> logits = torch.randn(2, 8, 100)
        >>> mask = torch.zeros(2, 8, dtype=torch.bool); mask[:, 4:] = True
        >>> tokens, scores = sample_masked(logits, mask, temperature=0.7, top_p=0.9, seed=0)
        >>> tokens.shape, bool((tokens[:, :4] == -1).all())
        (torch.Size([2, 8]), True)
    """
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    check_holds_values(logits, "logits")
    if logits.dim() != 3:
        raise ValueError(f"logits must have shape [B, L, V], got {tuple(logits.shape)}")
    if logits.dtype not in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        raise TypeError(f"logits must be a floating tensor (fp32, bf16, fp16, fp64), got {logits.dtype}")
    B, L, V = logits.shape
    if V < 1:
        raise ValueError("logits must have a non-empty vocabulary dimension")
    check_bool_mask(mask, "mask", (B, L), logits.device)
    check_scalar(temperature, "temperature", low=0.0, high=float("inf"), low_open=False)
    if top_k is not None:
        check_scalar(top_k, "top_k", low=1, high=float("inf"), low_open=False, integer=True)
    if top_p is not None:
        check_scalar(top_p, "top_p", low=0.0, high=1.0, low_open=True)
    if score not in SCORE_KINDS:
        raise ValueError(f"score must be one of {SCORE_KINDS}, got {score!r}")
    if score_temperature is not None:
        check_scalar(score_temperature, "score_temperature", low=0.0, high=float("inf"), low_open=True)
    if not isinstance(logits_shift, bool):
        raise TypeError(f"logits_shift must be a bool, got {type(logits_shift).__name__}")
    suppress = check_suppress_ids(suppress_ids, V, logits.device)
    return dispatch_sample_masked(resolve_backend(backend, logits.device), logits, mask,
                                  make_rng_state(seed, B, logits.device), temperature=temperature, top_k=top_k,
                                  top_p=top_p, score=score, suppress_ids=suppress, score_temperature=score_temperature,
                                  logits_shift=logits_shift)


def _kernel_readable(logits: torch.Tensor) -> torch.Tensor:
    """``logits`` as the sampling kernel reads them: fp64 becomes fp32 (what the torch backend computes
    in as well) and a strided vocabulary dimension is made contiguous; anything else is left as is."""
    if logits.dtype == torch.float64:
        logits = logits.to(torch.float32)
    return logits if logits.stride(-1) == 1 else logits.contiguous()


def dispatch_sample_masked(backend: str, logits, mask, rng_state, *, logits_shift=False, **options):
    """:func:`sample_masked` on a resolved backend, without the argument checks (for samplers that
    checked once up front). ``options``: temperature, top_k, top_p, score, suppress_ids,
    score_temperature."""
    if backend == "triton":
        from fastdiff.kernels.sample_masked import sample_masked_triton

        return sample_masked_triton(_kernel_readable(logits), mask, rng_state, logits_shift=logits_shift, **options)
    return reference.sample_masked_reference(logits, mask, rng_state, logits_shift=logits_shift,
                                             row_sampler=torch_fast.sample_rows, **options)


def dispatch_sample_rows(backend: str, logits_rows, row_ids, rng_state, canvas_length: int, **options):
    """Sampling over gathered rows ``[R, V]`` whose canvas positions ``b * canvas_length + l`` are
    ``row_ids`` (``-1``: padding): what the masked-row LM head feeds. Same options and random stream as
    :func:`dispatch_sample_masked`, so both paths draw the same tokens from the same logits."""
    if backend == "triton":
        from fastdiff.kernels.sample_masked import sample_rows_triton

        return sample_rows_triton(_kernel_readable(logits_rows), row_ids, rng_state, canvas_length, **options)
    return reference.sample_rows_reference(logits_rows, row_ids, rng_state, canvas_length,
                                           row_sampler=torch_fast.sample_rows, **options)


def select_topk(
    scores: torch.Tensor,
    eligible: torch.Tensor,
    k: Union[int, torch.Tensor],
    *,
    position_temperature: Scalar = 0.0,
    threshold: Optional[Scalar] = None,
    seed: Seed = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Pick the positions to unmask: the ``k[b]`` best eligible positions of each row.

    Args:
        scores: fp32 ``[B, L]`` (NaN ranks below every number).
        eligible: bool ``[B, L]``.
        k: int or integer tensor ``[B]`` on the device (per-row counts; clamped to the eligible count).
        position_temperature: ``tau > 0`` ranks by ``score / tau + Gumbel`` (sampling without
            replacement from ``softmax(score / tau)``); ``0`` is plain top-k.
        threshold: pick every eligible position with ``score >= threshold``, at least 1 and at
            most ``k``.
        seed: ``None``, an ``int``, ``B`` seeds or a ``[B, 3]`` state (see the module doc).
        backend: ``"auto"``, ``"torch"`` or ``"triton"``.

    Ties go to the lowest index. The Triton kernel keeps a row in registers: ``L <= 8192``.

    Returns:
        bool ``[B, L]``.

    Examples:
        >>> scores = torch.tensor([[0.1, 0.9, 0.5, 0.9]])
        >>> select_topk(scores, torch.ones(1, 4, dtype=torch.bool), 2).tolist()
        [[False, True, False, True]]
    """
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"scores must be a torch.Tensor, got {type(scores).__name__}")
    check_holds_values(scores, "scores")
    if scores.dim() != 2:
        raise ValueError(f"scores must have shape [B, L], got {tuple(scores.shape)}")
    if scores.dtype != torch.float32:
        raise TypeError(f"scores must be float32, got {scores.dtype}")
    B, L = scores.shape
    check_bool_mask(eligible, "eligible", (B, L), scores.device)
    k = check_counts(k, "k", B, scores.device)
    check_scalar(position_temperature, "position_temperature", low=0.0, high=float("inf"), low_open=False)
    if threshold is not None:
        check_scalar(threshold, "threshold", low=float("-inf"), high=float("inf"), low_open=False)
    return dispatch_select_topk(resolve_backend(backend, scores.device), scores, eligible, k,
                                make_rng_state(seed, B, scores.device), position_temperature=position_temperature,
                                threshold=threshold)


def dispatch_select_topk(backend: str, scores, eligible, k, rng_state, *, position_temperature, threshold):
    """:func:`select_topk` on a resolved backend, without the argument checks."""
    if backend == "triton":
        from fastdiff.kernels.select_topk import select_topk_triton

        return select_topk_triton(scores, eligible, k, rng_state, position_temperature=position_temperature,
                                  threshold=threshold)
    return reference.select_topk_reference(scores, eligible, k, rng_state, position_temperature=position_temperature,
                                           threshold=threshold)


def commit_remask(
    canvas: torch.Tensor,
    confidence: torch.Tensor,
    tokens: torch.Tensor,
    scores: torch.Tensor,
    selected: torch.Tensor,
    editable: torch.Tensor,
    n_remask: Union[int, torch.Tensor],
    mask_id: int,
    *,
    remask_temperature: Scalar = 0.0,
    seed: Seed = None,
    backend: str = "auto",
) -> None:
    """Commit the chosen tokens and re-mask the least confident committed ones, in one pass.

    In place on ``canvas`` and ``confidence``:

    1. where ``selected & editable`` and ``tokens >= 0``: ``canvas = tokens``, ``confidence = scores``
       (the ``-1`` that :func:`sample_masked` returns for a row with no token is never written);
    2. of the ``editable`` positions that now hold a token, the ``n_remask[b]`` with the lowest
       recorded confidence (Gumbel-perturbed ranking when ``remask_temperature > 0``; ties to the
       lowest index) go back to ``mask_id`` with confidence NaN.

    Positions outside ``editable`` (prompt, fixed, pad) are never written.

    Args:
        canvas: int64 ``[B, L]``, modified in place.
        confidence: fp32 ``[B, L]``, modified in place (NaN where nothing is committed).
        tokens: int64 ``[B, L]``; scores: fp32 ``[B, L]`` (from :func:`sample_masked`).
        selected, editable: bool ``[B, L]``.
        n_remask: int or integer tensor ``[B]`` on the device.
        mask_id: the mask token id.
        remask_temperature: ``tau >= 0``.
        seed: ``None``, an ``int``, ``B`` seeds or a ``[B, 3]`` state (see the module doc).
        backend: ``"auto"``, ``"torch"`` or ``"triton"``.

    Examples:
        >>> canvas = torch.tensor([[5, 0, 0]]); conf = torch.full((1, 3), float("nan"))
        >>> commit_remask(canvas, conf, torch.tensor([[-1, 7, 8]]), torch.tensor([[0., .9, .2]]),
        ...               torch.tensor([[False, True, True]]), torch.tensor([[False, True, True]]), 1, 0)
        >>> canvas.tolist()
        [[5, 7, 0]]
    """
    for name, t, dtype in (("canvas", canvas, torch.int64), ("confidence", confidence, torch.float32),
                           ("tokens", tokens, torch.int64), ("scores", scores, torch.float32)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != dtype:
            raise TypeError(f"{name} must be {dtype}, got {t.dtype}")
    check_holds_values(canvas, "canvas")
    if canvas.dim() != 2:
        raise ValueError(f"canvas must have shape [B, L], got {tuple(canvas.shape)}")
    B, L = canvas.shape
    for name, t in (("confidence", confidence), ("tokens", tokens), ("scores", scores)):
        if tuple(t.shape) != (B, L):
            raise ValueError(f"{name} must have shape {(B, L)}, got {tuple(t.shape)}")
    check_bool_mask(selected, "selected", (B, L), canvas.device)
    check_bool_mask(editable, "editable", (B, L), canvas.device)
    n_remask = check_counts(n_remask, "n_remask", B, canvas.device)
    if isinstance(mask_id, bool) or not isinstance(mask_id, int):
        raise TypeError(f"mask_id must be an int, got {type(mask_id).__name__}")
    if mask_id < 0:
        raise ValueError(f"mask_id must be a token id (>= 0), got {mask_id}")
    check_scalar(remask_temperature, "remask_temperature", low=0.0, high=float("inf"), low_open=False)
    dispatch_commit_remask(resolve_backend(backend, canvas.device), canvas, confidence, tokens, scores, selected,
                           editable, n_remask, mask_id, make_rng_state(seed, canvas.shape[0], canvas.device),
                           remask_temperature=remask_temperature)


def dispatch_commit_remask(backend: str, canvas, confidence, tokens, scores, selected, editable, n_remask, mask_id,
                           rng_state, *, remask_temperature):
    """:func:`commit_remask` on a resolved backend, without the argument checks; ``n_remask=None``:
    commit only."""
    if backend == "triton":
        from fastdiff.kernels.commit_remask import commit_remask_triton

        if n_remask is None:
            n_remask = torch.zeros(canvas.shape[0], dtype=torch.int64, device=canvas.device)
        commit_remask_triton(canvas, confidence, tokens, scores, selected, editable, n_remask, mask_id, rng_state,
                             remask_temperature=remask_temperature)
    elif n_remask is None:
        reference.commit_reference(canvas, confidence, tokens, scores, selected, editable)
    else:
        reference.commit_remask_reference(canvas, confidence, tokens, scores, selected, editable, n_remask,
                                          mask_id, rng_state, remask_temperature=remask_temperature)


def reveal(
    eligible: torch.Tensor,
    prob: torch.Tensor,
    *,
    seed: Seed = None,
) -> torch.Tensor:
    """Ancestral (MDLM / SEDD-absorbing) reveal: each eligible position independently with its ``prob``.

    Elementwise and cheap, so it runs as torch ops on every backend (and inside captured graphs).

    Args:
        eligible: bool ``[B, L]``.
        prob: float ``[B]``: the reveal probability ``(t - s) / t`` of each row, or ``[B, L]``: one per
            position (SEDD's ``min(1, a S)``).
        seed: ``None``, an ``int``, ``B`` seeds or a ``[B, 3]`` state (see the module doc).

    Returns:
        bool ``[B, L]``.
    """
    if not isinstance(eligible, torch.Tensor) or eligible.dtype != torch.bool or eligible.dim() != 2:
        raise TypeError("eligible must be a bool tensor [B, L]")
    B = eligible.shape[0]
    if (not isinstance(prob, torch.Tensor) or not prob.is_floating_point()
            or prob.numel() not in (B, eligible.numel())):
        raise TypeError(f"prob must be a float tensor [{B}] or [{B}, {eligible.shape[1]}]")
    return reference.reveal_reference(eligible, prob, make_rng_state(seed, eligible.shape[0], eligible.device))
