"""A small random-init, time-conditioned SEDD-style model for the tests and benchmarks: a DiT-like
transformer whose blocks are modulated (adaLN: shift, scale, gate) by an embedding of the noise level
sigma, returning absorbing-state log-scores as SEDD's models do (the mask token is the last id; scaled by
sigma; the current token's log-score set to 0). Written for fastdiff; no SEDD code."""
import math

import torch
from torch import nn


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
