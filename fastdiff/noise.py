"""Noise schedules of score-entropy (SEDD) and masked (MDLM) diffusion: the total noise ``sigma(t)`` and its
rate ``d sigma / dt`` on the time ``t`` in ``[0, 1]``, where a token is masked at time ``t`` with
probability ``1 - exp(-sigma(t))``.

Built in: ``"loglinear"`` (:class:`LogLinearNoise`, SEDD's and MDLM's default for the absorbing graph) and
:class:`GeometricNoise`. Any object with ``total_noise(t)`` and ``rate_noise(t)`` methods on float
tensors serves as well: SEDD's ``noise_lib`` and MDLM's ``noise_schedule`` objects among them.
"""
from __future__ import annotations

import math
from typing import List, Tuple, Union

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


class NoiseGrid:
    """MDLM's and SEDD's time grid as a :class:`fastdiff.SamplerConfig` ``schedule`` for
    ``unmask="ancestral"``: ``t_i = linspace(1, eps, steps + 1)[i]`` (fp32), a position still masked
    before step ``i`` with probability ``m(t_i) / m(t_0)``, ``m(t) = 1 - exp(-sigma(t))``. So step ``i``
    reveals a masked position with probability ``(m(t_i) - m(t_{i+1})) / m(t_i)`` (MDLM's ``ddpm``), and
    a fraction ``m(eps) / m(1)`` is left for the ``denoise`` step at ``t = eps``. The model's time input
    (``time_conditioning``) is ``t_i`` or ``sigma(t_i)``.

    Args:
        noise: ``"loglinear"`` or a schedule object (see :func:`resolve_noise`).
        eps: the grid's last time, in ``(0, 1)``.

    Example:
        >>> grid = NoiseGrid("loglinear", eps=0.1)
        >>> [round(f, 3) for f in grid.fractions(3)]
        [1.0, 0.7, 0.4, 0.1]
    """

    def __init__(self, noise: Noise = "loglinear", eps: float = 1e-5):
        resolve_noise(noise)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise ValueError(f"NoiseGrid eps must be a number in (0, 1), got {eps!r}")
        self.noise, self.eps = noise, float(eps)

    def times(self, n_steps: int) -> List[float]:
        """``t_0 .. t_steps``: 1 down to ``eps``."""
        return torch.linspace(1, self.eps, n_steps + 1).tolist()

    def fractions(self, n_steps: int) -> List[float]:
        """The masked fraction before each step and after the last, ``m(t_i) / m(t_0)``."""
        sigma = noise_at(self.noise, torch.linspace(1, self.eps, n_steps + 1))[0].double()
        masked = -torch.expm1(-sigma)
        return (masked / masked[0]).tolist()

    def final_fraction(self) -> float:
        """The fraction left masked after the last step, ``m(eps) / m(1)`` (whatever the steps)."""
        return self.fractions(1)[-1]

    def __call__(self, n_tokens: int, n_steps: int) -> List[int]:
        """Counts for the count-based rules: the rounded fractions, what is left to the last step."""
        left = [round(n_tokens * f) for f in self.fractions(n_steps)[:-1]] + [0]
        return [left[i] - left[i + 1] for i in range(n_steps)]

    def __eq__(self, other) -> bool:
        return isinstance(other, NoiseGrid) and (self.noise, self.eps) == (other.noise, other.eps)

    def __hash__(self) -> int:
        return hash((NoiseGrid, id(self.noise) if not isinstance(self.noise, str) else self.noise, self.eps))

    def __repr__(self) -> str:
        return f"NoiseGrid({self.noise!r}, eps={self.eps})"
