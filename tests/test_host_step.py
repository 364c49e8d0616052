"""The CPU host step (fastdiff.host_step) against the Denoiser's eager step it stands in for: the same
sequences, confidences, forward counts and EOS flags, call for call, over the rules and options it takes;
the rules it does not take still run on the Denoiser."""
import pytest
import torch
from torch import nn
from transformers import RobertaConfig, RobertaForMaskedLM

import fastdiff.sampler
from fastdiff import Sampler, SamplerConfig, host_step
from fastdiff.noise import NoiseGrid
from time_models import TinySEDD

V, MASK = 97, 96


class ContextLM(nn.Module):
    """A small random bidirectional LM: each position's logits depend on its token, its position and the
    mean of the canvas, so every step sees new logits. ``scale`` sets how peaked they are."""

    def __init__(self, seed, scale=4.0, dim=16, length=64):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embed = nn.Parameter(torch.randn(V, dim, generator=g))
        self.positions = nn.Parameter(torch.randn(length, dim, generator=g))
        self.mix = nn.Parameter(torch.randn(dim, dim, generator=g) / dim ** 0.5)
        self.head = nn.Parameter(torch.randn(dim, V, generator=g) * scale / dim ** 0.5)

    def forward(self, ids, attention_mask=None):
        h = self.embed[ids] + self.positions[: ids.shape[1]]
        h = h + torch.tanh(h.mean(dim=1, keepdim=True) @ self.mix)
        logits = h @ self.head
        logits[..., MASK] = -1e4  # like trained models, never the mask token
        return logits


def _both_paths(monkeypatch, run):
    """``run()`` on the host step, then on the Denoiser (host step switched off)."""
    calls = []
    original = host_step.run_on_host
    monkeypatch.setattr(fastdiff.sampler, "run_on_host", lambda *a, **k: calls.append(1) or original(*a, **k))
    hosted = run()
    assert calls, "the call did not run on the host step"
    monkeypatch.setattr(fastdiff.sampler, "runs_on_host", lambda *args: False)
    return hosted, run()


def _assert_same(hosted, eager):
    assert torch.equal(hosted.sequences, eager.sequences)
    assert torch.equal(hosted.confidences.isnan(), eager.confidences.isnan())
    assert torch.equal(hosted.confidences.nan_to_num(), eager.confidences.nan_to_num())
    assert hosted.nfe == eager.nfe
    assert torch.equal(hosted.stopped_at_eos, eager.stopped_at_eos)
    if eager.history is not None:
        assert len(hosted.history) == len(eager.history)
        assert all(torch.equal(a, b) for a, b in zip(hosted.history, eager.history))


SETTINGS = [
    dict(),
    dict(block_length=4, score_temperature=1.0),
    dict(block_length=4, score_temperature=0.6),  # greedy tokens, confidence at another temperature
    dict(unmask="margin", temperature=0.8, top_k=5, top_p=0.9, position_temperature=0.5),
    dict(unmask="entropy", temperature=1.2, logits_shift=True, block_length=8),
    dict(unmask="random", temperature=1.0),
    dict(unmask="random", temperature=0.5, top_k=3),  # draws every masked position, then chooses
    dict(unmask="ancestral", temperature=1.0, steps=6),
    dict(unmask="ancestral", temperature=0.0, steps=5, block_length=4),
    dict(threshold=0.3, temperature=0.7),
    dict(threshold=0.2, schedule_cap=True, block_length=4, unmask="margin"),
    dict(transfer_counts="binomial", unmask="confidence", temperature=0.9, steps=6),
    dict(eos_token_id=(7, 11), temperature=1.0, steps=12),
    dict(defer_token_ids=(3, 5), suppress_token_ids=(2,), begin_suppress_token_ids=(4, 9)),
    dict(cfg_scale=1.5, temperature=0.6, block_length=6),
    dict(return_history=True, temperature=0.9, steps=5),
]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()) or "default")
@pytest.mark.parametrize("peaked", [False, True], ids=["flat", "peaked"])
def test_host_step_generates_what_the_denoiser_does(settings, peaked, monkeypatch, fresh_seed):
    model = ContextLM(fresh_seed, scale=40.0 if peaked else 4.0)
    prompt = torch.randint(0, MASK, (3, 5), generator=torch.Generator().manual_seed(fresh_seed))
    attention = torch.ones(3, 5, dtype=torch.int64)
    attention[1, :2] = 0  # a left-padded row
    sampler = Sampler(model, MASK, seed=fresh_seed, steps=settings.pop("steps", 10), **settings)
    _assert_same(*_both_paths(monkeypatch, lambda: sampler.generate(prompt, 12, attention_mask=attention)))


def test_host_step_infills_what_the_denoiser_does(monkeypatch, fresh_seed):
    model = ContextLM(fresh_seed)
    g = torch.Generator().manual_seed(fresh_seed)
    canvas = torch.randint(0, MASK, (2, 20), generator=g)
    canvas[torch.rand(2, 20, generator=g) < 0.5] = MASK
    sampler = Sampler(model, MASK, seed=fresh_seed, temperature=0.7, block_length=5, steps=8)
    _assert_same(*_both_paths(monkeypatch, lambda: sampler.infill(canvas)))
    monkeypatch.undo()
    strided = canvas.t().contiguous().t()  # the same canvas in column-major memory: the host step's flat views
    hosted, eager = _both_paths(monkeypatch, lambda: sampler.infill(strided))
    _assert_same(hosted, eager)
    assert torch.equal(hosted.sequences, sampler.infill(canvas).sequences)


def test_host_step_runs_the_masked_row_head_as_the_denoiser_does(monkeypatch, fresh_seed):
    torch.manual_seed(fresh_seed)
    config = RobertaConfig(vocab_size=120, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=40, pad_token_id=1)
    model = RobertaForMaskedLM(config).eval()
    prompt = torch.randint(5, 100, (2, 6))
    for settings in (dict(temperature=0.8, top_k=10), dict(threshold=0.05, unmask="margin"),
                     dict(unmask="random", temperature=1.0), dict(), dict(score_temperature=0.7, threshold=0.3)):
        sampler = Sampler(model, 4, seed=fresh_seed, steps=6, block_length=6, **settings)
        assert sampler.masked_head
        _assert_same(*_both_paths(monkeypatch, lambda: sampler.generate(prompt, 18)))
        monkeypatch.undo()


@pytest.mark.parametrize("settings", [
    dict(unmask="sedd_analytic", steps=8),
    dict(unmask="sedd_euler", steps=6, temperature=0.5),  # draws everywhere, then reveals
    dict(unmask="ancestral", steps=7, time_conditioning="t"),
    dict(unmask="ancestral", steps=5, denoise="argmax", schedule=NoiseGrid("loglinear", 0.05)),
], ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_host_step_runs_time_conditioned_rules_as_the_denoiser_does(settings, monkeypatch, fresh_seed):
    model = TinySEDD(31, 12, seed=fresh_seed)
    settings = dict(time_conditioning="sigma", temperature=1.0) | settings
    sampler = Sampler(model, 31, seed=fresh_seed, **settings)
    _assert_same(*_both_paths(monkeypatch, lambda: sampler.generate(torch.zeros(2, 2, dtype=torch.int64), 10)))


def test_bad_logits_raise_the_same_error_on_both_paths(monkeypatch):
    class Broken(ContextLM):
        def forward(self, ids, attention_mask=None):
            logits = super().forward(ids, attention_mask)
            if (ids == MASK).sum() < 10:  # after a few steps
                logits[1, :, 0] = float("nan")
            return logits

    for settings in (dict(), dict(unmask="random", temperature=1.0)):  # drawing first, choosing first
        sampler = Sampler(Broken(0), MASK, seed=0, steps=12, **settings)
        errors = []
        for path in ("host", "denoiser"):
            if path == "denoiser":
                monkeypatch.setattr(fastdiff.sampler, "runs_on_host", lambda *args: False)
            with pytest.raises(ValueError, match="NaN") as error:
                sampler.generate(torch.zeros(2, 3, dtype=torch.int64), 12)
            errors.append(str(error.value))
        monkeypatch.undo()
        assert errors[0] == errors[1]


@pytest.mark.parametrize("settings", [dict(unmask="resample", temperature=1.0), dict(remask="low_confidence"),
                                      dict(factor=1.0), dict(edit_threshold=0.5)])
def test_rules_that_rewrite_the_canvas_stay_on_the_denoiser(settings):
    config = SamplerConfig(**settings)
    assert not host_step.runs_on_host(config, "torch", torch.device("cpu"), hooked=False)
    assert host_step.runs_on_host(SamplerConfig(), "torch", torch.device("cpu"), hooked=False)
    assert not host_step.runs_on_host(SamplerConfig(), "torch", torch.device("cpu"), hooked=True)


def test_host_step_outputs_and_callbacks_live_outside_inference_mode():
    """The host step runs its loop in inference mode; what it hands out (outputs, the history) and what
    the progress callback makes are ordinary tensors, usable in place and under autograd."""
    made = []

    def progress(step, planned):
        assert not torch.is_inference_mode_enabled()
        made.append(torch.zeros(2))

    sampler = Sampler(ContextLM(0), MASK, steps=4, return_history=True)
    assert host_step.runs_on_host(sampler.config, "torch", torch.device("cpu"), False)
    out = sampler.generate(torch.tensor([[5, 6, 7]]), gen_length=8, progress=progress)
    for tensor in [out.sequences, out.confidences, out.stopped_at_eos, *out.history, *made]:
        assert not tensor.is_inference()
    out.history[0].add_(1)
    out.sequences.add_(1)
    assert len(made) == 4 and made[0].add_(1).sum() == 2
