"""Time-conditioned models and the samplers' own loops, for the tests and the benchmarks (this module
imports no conftest, so benchmarks can import it):

* ``TinySEDD``: a small random-init SEDD-style model, a DiT-like transformer whose blocks are modulated
  (adaLN: shift, scale, gate) by an embedding of the noise level sigma, returning absorbing-state
  log-scores as SEDD's models do (the mask token is the last id; scaled by sigma; the current token's
  log-score set to 0);
* ``TinyMDLM``: an MDLM ``Diffusion`` stand-in with the SUBS parameterization on that backbone;
* ``sedd_reference_loop`` / ``mdlm_reference_loop``: SEDD's and MDLM's sampler loops over full
  ``[B, L, V]`` tensors, the eager references of the benchmarks (their laws are tested).

Written for fastdiff from the papers' and repositories' definitions; no SEDD or MDLM code.
"""
import math
import types

import torch
from torch import nn

from fastdiff.noise import LogLinearNoise



def _sigma_features(sigma: torch.Tensor, width: int) -> torch.Tensor:
    """Sinusoidal features of sigma ``[B]`` -> ``[B, width]``."""
    half = width // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=sigma.device) / half)
    angles = sigma.float()[:, None] * freqs[None, :]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class _Block(nn.Module):
    def __init__(self, dim, heads, cond):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.modulation = nn.Linear(cond, 6 * dim)

    def forward(self, h, c):
        B, L, D = h.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c)[:, None, :].chunk(6, dim=-1)
        x = self.norm1(h) * (1 + scale1) + shift1
        q, k, v = self.qkv(x).reshape(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        attended = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D // self.heads), dim=-1) @ v
        h = h + gate1 * self.out(attended.transpose(1, 2).reshape(B, L, D))
        x = self.norm2(h) * (1 + scale2) + shift2
        return h + gate2 * self.mlp(x)


class TinySEDD(nn.Module):
    """``model(indices [B, L], sigma [B]) -> log-scores [B, L, tokens + 1]``; the mask id is ``tokens``.

    Args:
        tokens: the vocabulary without the mask token.
        length: the longest sequence.
        seed: initialisation seed (weights drawn large enough to make the scores differ by position,
            context and sigma).
    """

    def __init__(self, tokens, length, seed=0, dim=32, heads=2, layers=2, cond=16, scale_by_sigma=True):
        super().__init__()
        self.mask_id = tokens
        self.scale_by_sigma = scale_by_sigma
        self.embed = nn.Embedding(tokens + 1, dim)
        self.positions = nn.Parameter(torch.zeros(length, dim))
        self.sigma_map = nn.Sequential(nn.Linear(32, cond), nn.SiLU(), nn.Linear(cond, cond))
        self.blocks = nn.ModuleList(_Block(dim, heads, cond) for _ in range(layers))
        self.final_norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.final_modulation = nn.Linear(cond, 2 * dim)
        self.head = nn.Linear(dim, tokens + 1)
        generator = torch.Generator().manual_seed(seed)
        for param in self.parameters():
            param.data = torch.randn(param.shape, generator=generator) * (0.5 if param.dim() > 1 else 0.2)
        # log-scores near SEDD's scale: the reveal probabilities then spread over the steps
        self.head.weight.data *= 0.1
        self.head.bias.data -= 0.3
        self.eval()

    def forward(self, indices, sigma):
        sigma = sigma.reshape(-1)
        h = self.embed(indices) + self.positions[: indices.shape[1]]
        c = torch.nn.functional.silu(self.sigma_map(_sigma_features(sigma, 32)))
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_modulation(c)[:, None, :].chunk(2, dim=-1)
        scores = self.head(self.final_norm(h) * (1 + scale) + shift)
        if self.scale_by_sigma:  # log-scores of the absorbing graph are about -log(e^sigma - 1) / (V - 1)
            scale_log = torch.log(torch.expm1(sigma.float()))[:, None, None]
            scores = scores - scale_log - math.log(scores.shape[-1] - 1)
        return torch.scatter(scores, -1, indices[..., None], torch.zeros_like(scores[..., :1]))


class TinyMDLM(nn.Module):
    """An MDLM ``Diffusion`` stand-in: a random time-conditioned backbone with MDLM's SUBS
    parameterization (mask logit -inf, log-softmax, filled positions fixed), sigma zeroed for time-free
    models, and the config fields ``compat.mdlm.sample`` reads."""

    def __init__(self, seed, length, noise, predictor="ddpm", time_conditioning=True, noise_removal=True,
                 batch=4000, steps=3, tokens=4, dim=32):
        super().__init__()
        self.backbone = TinySEDD(tokens, length, seed=seed, dim=dim, scale_by_sigma=False)
        self.backbone.head.weight.data *= 8.0  # peaked enough that tokens differ by context and time
        self.mask_index, self.noise, self.parameterization = tokens, noise, "subs"
        self.time_conditioning = time_conditioning
        self.config = types.SimpleNamespace(
            sampling=types.SimpleNamespace(predictor=predictor, steps=steps, noise_removal=noise_removal),
            loader=types.SimpleNamespace(eval_batch_size=batch), model=types.SimpleNamespace(length=length),
            noise=types.SimpleNamespace(type="loglinear" if isinstance(noise, LogLinearNoise) else "geometric"))

    def forward(self, x, sigma):
        sigma = sigma.reshape(-1) if self.time_conditioning else torch.zeros_like(sigma.reshape(-1))
        logits = self.backbone(x, sigma)
        logits[..., self.mask_index] = -torch.inf
        logits = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
        filled = x != self.mask_index
        logits[filled] = -torch.inf
        logits[filled, x[filled]] = 0.0
        return logits


def _categorical(weights):
    """Draw from non-negative-where-it-matters weights as SEDD does: argmax of weights / Exp(1)."""
    exponential = 1e-10 - torch.log(torch.rand_like(weights) + 1e-10)
    return torch.argmax(weights / exponential, dim=-1)


@torch.no_grad()
def sedd_reference_loop(model, noise, batch, length, predictor, steps, eps=1e-5, denoise=True):
    """SEDD's predictor loop on the absorbing graph over full [B, L, V] tensors: the Euler or analytic
    update each step, then the denoising step. Returns the samples."""
    mask = model.mask_id
    x = torch.full((batch, length), mask, dtype=torch.long)
    grid = torch.linspace(1, eps, steps + 1)
    dt = (1 - eps) / steps
    for i in range(steps + int(denoise)):
        t = grid[i] * torch.ones(batch)
        is_mask = (x == mask)[..., None].to(torch.float32)
        onehot = torch.nn.functional.one_hot(x, mask + 1).to(torch.float32)
        if i == steps or predictor == "analytic":
            sigma = noise.total_noise(t)
            change = sigma if i == steps else sigma - noise.total_noise(t - dt)
            score = model(x, sigma).exp()
            staggered = score * change.exp()[:, None, None]
            staggered[..., mask] += (1 - change.exp())[:, None] * score.sum(dim=-1)
            kept = torch.exp(-change)[:, None, None]
            weights = staggered * (kept * onehot + (1 - kept) * is_mask)
            if i == steps:
                weights = weights[..., :mask]
        else:
            score = model(x, noise.total_noise(t)).exp()
            rate = (is_mask - onehot) * score  # row x of the absorbing rate matrix, times the score
            rate = rate.scatter(-1, x[..., None], 0.0)
            rate = rate.scatter(-1, x[..., None], -rate.sum(dim=-1, keepdim=True))
            weights = onehot + (dt * noise.rate_noise(t))[:, None, None] * rate
        x = _categorical(weights)
    return x


@torch.no_grad()
def mdlm_reference_loop(model, steps, eps=1e-5, cache=False):
    """MDLM's ddpm (or ddpm_cache) loop with noise removal over full [B, L, V] tensors, as the benchmark's
    eager reference. Returns (samples, forward passes)."""
    batch, length = model.config.loader.eval_batch_size, model.config.model.length
    mask = model.mask_index
    x = torch.full((batch, length), mask, dtype=torch.long)
    grid = torch.linspace(1, eps, steps + 1)
    dt = (1 - eps) / steps
    p_x0, forwards = None, 0
    for i in range(steps):
        t = grid[i] * torch.ones(batch)
        sigma_t, sigma_s = model.noise.total_noise(t), model.noise.total_noise(t - dt)
        move_t, move_s = -torch.expm1(-sigma_t), -torch.expm1(-sigma_s)
        if p_x0 is None:
            p_x0 = model(x, sigma_t).exp()
            forwards += 1
        weights = p_x0 * (move_t - move_s)[:, None, None]
        weights[..., mask] = move_s[:, None]
        exponential = 1e-10 - torch.log(torch.rand_like(weights) + 1e-10)
        drawn = torch.argmax(weights / exponential, dim=-1)
        new = torch.where(x != mask, x, drawn)
        if not cache or not torch.equal(new, x):
            p_x0 = None
        x = new
    forwards += 1
    return model(x, model.noise.total_noise(grid[-1:] * torch.ones(batch))).argmax(dim=-1), forwards
