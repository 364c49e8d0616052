"""MDLM's ddpm / ddpm_cache / analytic samplers on fastdiff (``fastdiff.compat.mdlm``, ``NoiseGrid``),
against the law of MDLM's update written here from its definitions, by exact enumeration of a
two-position generation and chi-square; and the ddpm_cache equivalence: fastdiff runs no forward at a
step that reveals nothing, and never more forwards than ddpm_cache on the same trajectory."""
import itertools
import types

import pytest
import torch

from fastdiff import Sampler
from fastdiff.compat import mdlm
from fastdiff.noise import GeometricNoise, LogLinearNoise, NoiseGrid
from time_models import TinyMDLM, mdlm_reference_loop
from test_redraw_rules import _chi_square_p

TOKENS = 4
MASK = TOKENS
V = TOKENS + 1


def exact_law(model, steps, eps, removal):
    """The law of the 2-position canvas after each MDLM ddpm step (and the noise removal): each masked
    position moves with probability (m(t) - m(s)) / m(t), m = 1 - exp(-sigma), to a token of p(x0) at
    sigma(t); the removal takes the argmax of p(x0) at sigma(eps)."""
    grid = torch.linspace(1, eps, steps + 1)
    law, laws = {(MASK, MASK): 1.0}, []
    for i in range(steps + int(removal)):
        after = {}
        t = grid[i:i + 1]
        sigma = model.noise.total_noise(t)
        for state, p in law.items():
            with torch.no_grad():
                p_x0 = model(torch.tensor([list(state)]), sigma)[0].double().exp()
            per_position = []
            for l in range(2):
                if state[l] != MASK:
                    per_position.append({state[l]: 1.0})
                elif i == steps:  # noise removal
                    per_position.append({int(torch.argmax(p_x0[l])): 1.0})
                else:
                    m_t = float(-torch.expm1(-sigma.double()))
                    m_s = float(-torch.expm1(-model.noise.total_noise(grid[i + 1:i + 2]).double()))
                    move = (m_t - m_s) / m_t
                    law_l = {j: move * float(p_x0[l, j]) for j in range(TOKENS)}
                    law_l[MASK] = 1 - move
                    per_position.append(law_l)
            for (a, pa), (b, pb) in itertools.product(per_position[0].items(), per_position[1].items()):
                if pa * pb > 0:
                    after[a, b] = after.get((a, b), 0.0) + p * pa * pb
        law = after
        laws.append(law)
    return laws


def _frequencies(canvases):
    counts = {}
    for pair in canvases.tolist():
        counts[tuple(pair)] = counts.get(tuple(pair), 0) + 1
    return counts


@pytest.mark.parametrize("noise,time_conditioning,removal", [
    (LogLinearNoise(), True, True), (LogLinearNoise(), False, True), (GeometricNoise(1e-3, 3.0), True, False)])
def test_every_step_has_mdlms_ddpm_law(noise, time_conditioning, removal, fresh_seed):
    model = TinyMDLM(fresh_seed, 2, noise, time_conditioning=time_conditioning)
    steps, eps, rows = 3, 0.05, 4000  # a large eps leaves positions for the noise removal
    laws = exact_law(model, steps, eps, removal)
    out = Sampler(model, MASK, unmask="ancestral", schedule=NoiseGrid(noise, eps), time_conditioning="sigma",
                  noise=noise, steps=steps, denoise="argmax" if removal else "none", temperature=1.0,
                  return_history=True).infill(torch.full((rows, 2), MASK), seed=fresh_seed)
    assert len(out.history) == len(laws)  # with 4000 rows every step reveals something somewhere
    for law, canvas in zip(laws, out.history):
        counts = _frequencies(canvas)
        assert all(law.get(pair, 0.0) > 0 for pair in counts), "a canvas of probability zero was reached"
        assert _chi_square_p(counts, law, rows) > 1e-4
    if not removal:
        assert bool((out.sequences == MASK).any())  # eps = 0.05 leaves some masked, as MDLM does


@pytest.mark.parametrize("predictor", ["ddpm", "ddpm_cache", "analytic"])
def test_sample_is_mdlms_entry(predictor, fresh_seed):
    """compat.mdlm.sample(diffusion): MDLM's batch and length, no mask left with noise removal, and the
    final law of the exact enumeration (analytic: its sampled removal, so only the predictor steps are
    compared by law)."""
    noise = LogLinearNoise()
    model = TinyMDLM(fresh_seed, 2, noise, predictor=predictor, batch=4000, steps=3)
    torch.manual_seed(fresh_seed)
    x = mdlm.sample(model, eps=0.05)
    assert x.shape == (4000, 2) and x.dtype == torch.int64 and not bool((x == MASK).any())
    if predictor != "analytic":
        law = exact_law(model, 3, 0.05, True)[-1]
        assert _chi_square_p(_frequencies(x), law, 4000) > 1e-4


def test_fastdiff_runs_no_forward_that_ddpm_cache_would_not(fresh_seed):
    """ddpm_cache runs the model at step 0 and after every step that changed the canvas; fastdiff at the
    steps that reveal something. On fastdiff's own trajectory (steps read from the sigma the model gets),
    every forward revealed a position and the count is ddpm_cache's, or one fewer when the last reveal
    came before the last step."""
    noise = LogLinearNoise()
    model = TinyMDLM(fresh_seed, 6, noise, time_conditioning=False)
    steps, eps = 40, 1e-5
    grid_sigma = noise.total_noise(torch.linspace(1, eps, steps + 1))
    called = []

    def recording(x, sigma):
        called.append(int(torch.argmin((grid_sigma - sigma[0]).abs())))
        return model(x, sigma)

    out = Sampler(recording, MASK, unmask="ancestral", schedule=NoiseGrid(noise, eps), time_conditioning="sigma",
                  noise=noise, steps=steps, denoise="none", temperature=1.0, return_history=True).infill(
        torch.full((1, 6), MASK), seed=fresh_seed)
    assert called == sorted(set(called)) and len(called) == out.nfe < steps
    before = torch.full((1, 6), MASK)
    for canvas in out.history:
        assert not torch.equal(canvas, before)  # the forward revealed something
        before = canvas
    changed_at = called  # the canvas changes exactly at the steps fastdiff ran
    cache_forwards = 1 + sum(1 for i in changed_at if i + 1 < steps)
    assert len(called) == cache_forwards - 1 + int(changed_at[-1] == steps - 1)


def test_sample_refuses_what_mdlm_would_not_run():
    model = TinyMDLM(0, 2, GeometricNoise(1e-3, 3.0), predictor="ddpm_cache")
    with pytest.raises(ValueError, match="loglinear"):
        mdlm.sample(model)
    model = TinyMDLM(0, 2, LogLinearNoise(), predictor="semi_ar")
    with pytest.raises(ValueError, match="predictor"):
        mdlm.sample(model)
    model = TinyMDLM(0, 2, LogLinearNoise())
    model.parameterization = "sedd"
    with pytest.raises(ValueError, match="SUBS"):
        mdlm.sample(model)
    with pytest.raises(TypeError, match="MDLM Diffusion"):
        mdlm.sample(types.SimpleNamespace(parameterization="subs"))


@pytest.mark.parametrize("cache", [False, True])
def test_the_reference_loop_has_the_same_law(cache, fresh_seed):
    model = TinyMDLM(fresh_seed, 2, LogLinearNoise(), time_conditioning=False)
    torch.manual_seed(fresh_seed)
    x, forwards = mdlm_reference_loop(model, 3, eps=0.05, cache=cache)
    law = exact_law(model, 3, 0.05, True)[-1]
    assert _chi_square_p(_frequencies(x), law, 4000) > 1e-4
    assert forwards == 4 if not cache else 2 <= forwards <= 4
