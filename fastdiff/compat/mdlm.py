"""MDLM's sampler entry (kuleshov-group/mdlm, ``diffusion.py``: ``Diffusion._sample``) on fastdiff.

``sample(diffusion, num_steps=None, eps=1e-5)`` draws ``config.loader.eval_batch_size`` sequences of
``config.model.length`` tokens from an MDLM ``Diffusion`` module, as ``diffusion._sample(num_steps, eps)``
does, with the predictor its config names (``config.sampling.predictor``):

* ``"ddpm"``: on ``t_i = linspace(1, eps, steps + 1)[i]``, each masked position is revealed with
  probability ``(m(t_i) - m(t_i - dt)) / m(t_i)``, ``m(t) = 1 - exp(-sigma(t))``, drawing its token from
  the model's ``p(x0)`` at ``sigma(t_i)`` (``diffusion.forward(x, sigma)``, the SUBS parameterization);
* ``"ddpm_cache"``: the same law; MDLM reuses ``p(x0)`` while the canvas has not changed (time-free
  models). fastdiff runs no forward at a step that reveals nothing, which is the same saving seen from
  the other side: it runs the model once per canvas it reveals from, MDLM once per canvas it visits
  before the last step, so fastdiff's count is MDLM's or one fewer, and with a time-conditioned model
  (where MDLM turns its cache off) the skipped forwards are still exact: their output is never used;
* ``"analytic"``: MDLM's SEDD-style update on the SUBS scores reveals with probability
  ``expm1(sigma(t_i) - sigma(t_i - dt)) / expm1(sigma(t_i))``, which is the same number, so it is run as
  ``ddpm``, with the sampled (not argmax) denoising step MDLM uses for it.

``config.sampling.noise_removal`` adds MDLM's last step at ``t = eps``: the argmax of ``p(x0)`` at every
position left (``"analytic"``: a draw). This is :class:`fastdiff.Sampler` with ``unmask="ancestral"``,
``schedule=fastdiff.noise.NoiseGrid(diffusion.noise, eps)`` and ``time_conditioning="sigma"`` (MDLM's
forward zeroes sigma itself for time-free models). What differs on purpose:

* the random streams are fastdiff's (seeded from torch's generator): the same law, not the same
  samples; the per-row reveal counts are drawn when the call is planned, the positions uniformly,
  which is the law of MDLM's independent reveals;
* the step after ``t_i`` is the grid's ``t_{i+1}`` (MDLM computes ``t_i - dt``; they differ by fp32
  rounding only);
* ``parameterization`` other than ``"subs"`` (``"ar"``, ``"sedd"``, ``"d3pm"``) is refused, and the EMA
  swap of ``restore_model_and_sample`` is the caller's.
"""
from __future__ import annotations

from typing import Optional

import torch

from fastdiff.compat import WeakModelRunner, cached_sampler
from fastdiff.noise import NoiseGrid
from fastdiff.validation import check_positive_int

PREDICTORS = ("ddpm", "ddpm_cache", "analytic")


def _setting(diffusion, path: str):
    value = diffusion
    for name in path.split("."):
        value = getattr(value, name, None)
        if value is None:
            raise TypeError(f"diffusion must be an MDLM Diffusion module: it has no {path}")
    return value


@torch.no_grad()
def sample(diffusion, num_steps: Optional[int] = None, eps: float = 1e-5) -> torch.Tensor:
    """MDLM's ``Diffusion._sample``: unconditional samples from ``diffusion`` (see the module docstring).

    Args:
        diffusion: an MDLM ``Diffusion`` module (or any object with ``forward(x, sigma)`` returning SUBS
            log-probabilities, ``mask_index``, ``noise``, ``parameterization`` and MDLM's ``config`` fields
            ``sampling.predictor``, ``sampling.steps``, ``sampling.noise_removal``,
            ``loader.eval_batch_size``, ``model.length``, ``noise.type``).
        num_steps: denoising steps; ``None``: ``config.sampling.steps``.
        eps: the grid's last time.

    Returns:
        int64 ``[eval_batch_size, model.length]`` on the module's device.

    Example:
        >>> samples = sample(diffusion, num_steps=1000)   # doctest: +SKIP
    """
    predictor = _setting(diffusion, "config.sampling.predictor")
    if predictor not in PREDICTORS:
        raise ValueError(f"config.sampling.predictor must be one of {PREDICTORS}, got {predictor!r}")
    if getattr(diffusion, "parameterization", None) != "subs":
        raise ValueError(f"fastdiff runs MDLM's SUBS parameterization, not {getattr(diffusion, 'parameterization', None)!r}")
    if predictor == "ddpm_cache" and _setting(diffusion, "config.noise.type") != "loglinear":
        raise ValueError("ddpm_cache needs config.noise.type == 'loglinear' (as MDLM asserts)")
    steps = num_steps if num_steps is not None else _setting(diffusion, "config.sampling.steps")
    check_positive_int(steps, "num_steps")
    batch = _setting(diffusion, "config.loader.eval_batch_size")
    length = _setting(diffusion, "config.model.length")
    mask_id = _setting(diffusion, "mask_index")
    removal = bool(getattr(diffusion.config.sampling, "noise_removal", False))
    denoise = ("sample" if predictor == "analytic" else "argmax") if removal else "none"
    settings = dict(unmask="ancestral", schedule=NoiseGrid(diffusion.noise, eps), time_conditioning="sigma",
                    noise=diffusion.noise, steps=steps, denoise=denoise, temperature=1.0)
    sampler = cached_sampler(diffusion, "mdlm", lambda: WeakModelRunner(diffusion), mask_id, settings)
    canvas = torch.full((batch, length), mask_id, dtype=torch.int64, device=sampler.runner.device)
    return sampler.infill(canvas).sequences


__all__ = ["sample", "PREDICTORS"]
