"""SEDD's ``sampling.get_pc_sampler`` (louaaron/Score-Entropy-Discrete-Diffusion) on fastdiff.

``get_pc_sampler(graph, noise, batch_dims, predictor, steps, denoise=True, eps=1e-5, device, proj_fun)``
returns ``pc_sampler(model) -> x``, as SEDD's does. SEDD's own ``graph`` and ``noise`` objects work (duck
typed: the graph's ``absorb`` and ``dim``, the noise's ``total_noise(t)`` / ``rate_noise(t)``); only the
absorbing graph is supported. The model is called as SEDD calls it, ``model(x, sigma)`` with ``sigma``
float32 ``[B]``, and returns log-scores ``[B, L, dim]`` whose last id is the absorbing (mask) state.

The update rules are SEDD's, run by :class:`fastdiff.Sampler` with ``unmask="sedd_euler"`` /
``"sedd_analytic"``: on ``t_i = linspace(1, eps, steps + 1)[i]`` each masked position moves to a token
with probability ``min(1, a_i S)`` (``S`` the sum of its token scores; ``a_i = dt sigma'(t_i)`` for
Euler, ``expm1(sigma(t_i) - sigma(t_i - dt))`` for the analytic predictor) and draws the token from
``softmax(log-scores)``; ``denoise`` adds the step at ``t = eps`` that fills every position left. This is
SEDD's categorical over ``{tokens: a s_j, mask: 1 - a S}``, whose negative mask weight (``a S > 1``)
its sampler never picks. What differs on purpose:

* the random streams are fastdiff's (seeded from torch's generator, so ``torch.manual_seed`` makes
  runs repeat): the same law, not the same samples;
* steps after every position is filled are not run (an absorbing state never moves again, so they
  change nothing), and the model runs in the dtype it has (SEDD's transformer casts to bf16 itself);
* ``proj_fun`` must be a projection that sets fixed positions to fixed tokens (SEDD's conditional
  sampling, ``run_sample_cond.py``): it is applied once to the all-mask canvas, the positions it sets
  are the infill's fixed tokens (which SEDD's absorbing updates never change either), and the result is
  checked to be one ``proj_fun`` leaves alone; other functions raise ``ValueError``;
* ``predictor="none"`` (SEDD's no-op predictor) is not offered.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from fastdiff.compat import WeakModelRunner, cached_sampler
from fastdiff.noise import resolve_noise
from fastdiff.validation import check_flag, check_positive_int

PREDICTORS = ("euler", "analytic")


def get_pc_sampler(graph, noise, batch_dims: Sequence[int], predictor: str, steps: int, denoise: bool = True,
                   eps: float = 1e-5, device=torch.device("cpu"), proj_fun: Callable = lambda x: x):
    """SEDD's predictor(-corrector) sampler for the absorbing graph, on fastdiff.

    Args:
        graph: SEDD's ``graph_lib.Absorbing`` (or an object with ``absorb = True`` and ``dim``, the
            tokens plus the mask state).
        noise: SEDD's noise (``noise_lib.LogLinearNoise`` / ``GeometricNoise``), fastdiff's, or any
            object with ``total_noise(t)`` and ``rate_noise(t)``.
        batch_dims: ``(B, L)``.
        predictor: ``"euler"`` or ``"analytic"``.
        steps: predictor steps.
        denoise: end with SEDD's denoising step (every position filled).
        eps: the last time of the grid.
        device: where the samples are drawn (the model's device).
        proj_fun: SEDD's projection of fixed positions (see the module docstring).

    Returns:
        ``pc_sampler(model) -> x``: int64 ``[B, L]`` on ``device`` (mask ids left where ``denoise=False``
        left positions masked).

    Example:
        >>> sampler = get_pc_sampler(graph, noise, (4, 1024), "analytic", 1024, device="cuda")  # doctest: +SKIP
        >>> samples = sampler(model)                                                              # doctest: +SKIP
    """
    if not getattr(graph, "absorb", False):
        raise ValueError("graph: fastdiff runs SEDD's absorbing graph only (graph.absorb is not true; the "
                         "uniform graph moves every token, which is not masked diffusion)")
    mask_id = getattr(graph, "dim", None)
    if isinstance(mask_id, bool) or not isinstance(mask_id, int) or mask_id < 2:
        raise TypeError(f"graph.dim must be an int >= 2 (tokens + the absorbing state), got {mask_id!r}")
    mask_id -= 1
    resolve_noise(noise)
    if predictor not in PREDICTORS:
        raise ValueError(f"predictor must be one of {PREDICTORS}, got {predictor!r}")
    batch_dims = tuple(batch_dims)
    if len(batch_dims) != 2:
        raise ValueError(f"batch_dims must be (B, L), got {batch_dims!r}")
    for value, name in zip(batch_dims, ("batch_dims[0]", "batch_dims[1]")):
        check_positive_int(value, name)
    check_positive_int(steps, "steps")
    check_flag(denoise, "denoise")
    if not callable(proj_fun):
        raise TypeError(f"proj_fun must be callable, got {type(proj_fun).__name__}")
    settings = dict(unmask=f"sedd_{predictor}", time_conditioning="sigma", noise=noise, steps=steps, eps=eps,
                    denoise="sample" if denoise else "none", temperature=1.0)

    @torch.no_grad()
    def pc_sampler(model):
        canvas = proj_fun(torch.full(batch_dims, mask_id, dtype=torch.int64, device=device))
        if not isinstance(canvas, torch.Tensor) or tuple(canvas.shape) != batch_dims:
            raise ValueError(f"proj_fun must return a tensor of shape {batch_dims}")
        canvas = canvas.to(torch.int64)
        if not bool((canvas == mask_id).any()):  # the projection fixed every position
            return canvas
        sampler = cached_sampler(model, "sedd", lambda: WeakModelRunner(model), mask_id, settings)
        x = sampler.infill(canvas).sequences
        if not torch.equal(proj_fun(x), x):
            raise ValueError("proj_fun changed a filled canvas: fastdiff maps only projections that set fixed "
                             "positions to fixed tokens (SEDD's conditional sampling) to its infill")
        return x

    return pc_sampler


__all__ = ["get_pc_sampler", "PREDICTORS"]
