"""Noise schedules of score-entropy (SEDD) and masked (MDLM) diffusion: the total noise ``sigma(t)`` and its
rate ``d sigma / dt`` on the time ``t`` in ``[0, 1]``, where a token is masked at time ``t`` with
probability ``1 - exp(-sigma(t))``.

Built in: ``"loglinear"`` (:class:`LogLinearNoise`, SEDD's and MDLM's default for the absorbing graph) and
:class:`GeometricNoise`. Any object with ``total_noise(t)`` and ``rate_noise(t)`` methods on float
tensors serves as well: SEDD's ``noise_lib`` and MDLM's ``noise_schedule`` objects among them.
"""
from __future__ import annotations

import math
from typing import Tuple, Union

import torch


class LogLinearNoise:
    """``sigma(t) = -log(1 - (1 - eps) t)``: the masked fraction ``1 - exp(-sigma)`` is ``(1 - eps) t``,
    linear in ``t``.

    Args:
        eps: keeps ``sigma(1)`` finite (SEDD and MDLM use ``1e-3``).
    """

    def __init__(self, eps: float = 1e-3):
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise ValueError(f"LogLinearNoise eps must be a number in (0, 1), got {eps!r}")
        self.eps = float(eps)

    def total_noise(self, t: torch.Tensor) -> torch.Tensor:
        return -torch.log1p(-(1 - self.eps) * t)

    def rate_noise(self, t: torch.Tensor) -> torch.Tensor:
        return (1 - self.eps) / (1 - (1 - self.eps) * t)

    def __repr__(self) -> str:
        return f"LogLinearNoise(eps={self.eps})"


class GeometricNoise:
    """``sigma(t) = sigma_min^(1 - t) sigma_max^t``.

    Args:
        sigma_min, sigma_max: the total noise at ``t = 0`` and ``t = 1`` (``0 < sigma_min < sigma_max``).
    """

    def __init__(self, sigma_min: float = 1e-3, sigma_max: float = 1.0):
        for name, value in (("sigma_min", sigma_min), ("sigma_max", sigma_max)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"GeometricNoise {name} must be a positive number, got {value!r}")
        if not sigma_min < sigma_max:
            raise ValueError(f"GeometricNoise needs sigma_min < sigma_max, got {sigma_min} and {sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)

    def total_noise(self, t: torch.Tensor) -> torch.Tensor:
        return self.sigma_min ** (1 - t) * self.sigma_max ** t

    def rate_noise(self, t: torch.Tensor) -> torch.Tensor:
        return self.total_noise(t) * math.log(self.sigma_max / self.sigma_min)

    def __repr__(self) -> str:
        return f"GeometricNoise(sigma_min={self.sigma_min}, sigma_max={self.sigma_max})"


NOISES = ("loglinear",)
Noise = Union[str, LogLinearNoise, GeometricNoise, object]


def resolve_noise(noise: Noise):
    """The schedule object ``noise`` names: ``"loglinear"``, or an object with ``total_noise`` and
    ``rate_noise``. Raises ``TypeError`` naming ``noise`` otherwise."""
    if noise == "loglinear":
        return LogLinearNoise()
    if isinstance(noise, str) or not (callable(getattr(noise, "total_noise", None))
                                      and callable(getattr(noise, "rate_noise", None))):
        raise TypeError(f"noise must be 'loglinear' or an object with total_noise(t) and rate_noise(t) "
                        f"(fastdiff.noise.GeometricNoise, SEDD's or MDLM's noise objects), got {noise!r}")
    return noise


def noise_at(noise: Noise, t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(sigma(t), d sigma / dt)`` as float32 CPU tensors shaped like ``t``, checked finite and
    non-negative (the schedule is the caller's)."""
    schedule = resolve_noise(noise)
    with torch.no_grad():
        total = torch.as_tensor(schedule.total_noise(t)).detach().float().cpu().reshape(t.shape)
        rate = torch.as_tensor(schedule.rate_noise(t)).detach().float().cpu().reshape(t.shape)
    for name, values in (("total_noise", total), ("rate_noise", rate)):
        if not bool(torch.isfinite(values).all()) or bool((values < 0).any()):
            raise ValueError(f"noise.{name}(t) must be finite and >= 0 on the sampler's times, got {values.tolist()}")
    return total, rate
