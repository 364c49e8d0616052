"""SEDD's absorbing-state samplers on fastdiff (``unmask="sedd_euler"`` / ``"sedd_analytic"``, time
conditioning, ``fastdiff.compat.sedd``), against an independent implementation of SEDD's update rules.

``step_weights`` writes SEDD's absorbing-graph operators (staggered score, transposed transition, reverse
rate) as the matrices they define, for one position; ``exact_law`` runs them over every canvas a
two-position generation can reach, so the law of the canvas after each step is known exactly and
fastdiff's frequencies are compared with it by chi-square. The model is ``TinySEDD``, a random
time-conditioned DiT-like model returning log-scores.
"""
import itertools
import math

import pytest
import torch

from fastdiff import Sampler
from fastdiff.compat import sedd
from fastdiff.noise import GeometricNoise, LogLinearNoise
from fastdiff.step import sedd_move_probability
from time_models import TinySEDD, sedd_reference_loop
from test_redraw_rules import _chi_square_p

TOKENS = 4
MASK = TOKENS  # the absorbing state is the last id
V = TOKENS + 1


def step_weights(log_score, x, kind, value):
    """SEDD's categorical weights over the V states for one position holding ``x``.

    kind "euler": ``onehot(x) + value * R`` with R the reverse rate (``value = dt * sigma'(t)``);
    "analytic": staggered score (``value = dsigma``) times the transposed transition; "denoise": the same
    at ``value = sigma``, the mask's weight dropped. Weights may be negative (SEDD's sampler never picks
    those)."""
    score = log_score.double().exp()
    onehot = torch.nn.functional.one_hot(torch.tensor(x), V).double()
    if kind == "euler":
        transp_rate = -onehot + (1.0 if x == MASK else 0.0)  # the row Q[x, :] of the absorbing rate matrix
        rate = transp_rate * score
        rate[x] = 0.0
        rate[x] = -rate.sum()
        return onehot + value * rate
    e = math.exp(value)
    staggered = score * e
    staggered[MASK] += (1 - e) * score.sum()
    transition = math.exp(-value) * onehot + ((1 - math.exp(-value)) if x == MASK else 0.0)
    weights = staggered * transition
    if kind == "denoise":
        weights[MASK] = 0.0
    return weights


def _law(weights):
    """The law SEDD's ``sample_categorical`` (argmax of weights / Exp(1) noise) draws from."""
    positive = weights.clamp(min=0.0)
    return positive / positive.sum()


def exact_law(model, prompt, noise, predictor, steps, eps, denoise):
    """The law of the two generated positions after each step: a list of {(a, b): probability}."""
    grid = torch.linspace(1, eps, steps + 1)
    dt = (1 - eps) / steps
    plan = []
    for i in range(steps):
        t = grid[i:i + 1]
        sigma = noise.total_noise(t)
        if predictor == "euler":
            value = float(dt * noise.rate_noise(t))
        else:
            value = float(sigma - noise.total_noise(t - dt))
        plan.append((float(sigma), predictor, value))
    if denoise:
        sigma = float(noise.total_noise(grid[-1:]))
        plan.append((sigma, "denoise", sigma))
    law, laws = {(MASK, MASK): 1.0}, []
    for sigma, kind, value in plan:
        after = {}
        for state, p in law.items():
            canvas = torch.tensor([list(prompt) + list(state)])
            with torch.no_grad():
                log_score = model(canvas, torch.tensor([sigma]))[0, len(prompt):]
            per_position = [_law(step_weights(log_score[l], state[l], kind, value)) for l in range(2)]
            for a, b in itertools.product(range(V), repeat=2):
                q = p * float(per_position[0][a] * per_position[1][b])
                if q > 0:
                    after[a, b] = after.get((a, b), 0.0) + q
        law = after
        laws.append(law)
    return laws


def _frequencies(canvases, prompt_length):
    counts = {}
    for pair in canvases[:, prompt_length:].tolist():
        counts[tuple(pair)] = counts.get(tuple(pair), 0) + 1
    return counts


@pytest.mark.parametrize("predictor,noise,denoise", [
    ("analytic", LogLinearNoise(), True),
    ("euler", LogLinearNoise(), True),
    ("analytic", GeometricNoise(1e-3, 4.0), False),
    ("euler", GeometricNoise(1e-3, 4.0), True),
])
def test_every_step_has_seddss_law(predictor, noise, denoise, fresh_seed):
    model = TinySEDD(TOKENS, 3, seed=fresh_seed)
    prompt, steps, eps, rows = (2,), 3, 1e-5, 4000
    laws = exact_law(model, prompt, noise, predictor, steps, eps, denoise)
    out = Sampler(model, MASK, unmask=f"sedd_{predictor}", time_conditioning="sigma", noise=noise, steps=steps,
                  eps=eps, denoise="sample" if denoise else "none", temperature=1.0, return_history=True).generate(
        torch.tensor([prompt] * rows), gen_length=2, seed=fresh_seed)
    assert len(laws) == steps + int(denoise) and 1 <= len(out.history) <= len(laws)
    # a step after every row is filled is not run: it could change nothing (absorbing states stay)
    canvases = out.history + [out.sequences] * (len(laws) - len(out.history))
    if len(out.history) < len(laws):
        assert sum(p for pair, p in laws[len(out.history) - 1].items() if MASK in pair) < 1e-3
    for law, canvas in zip(laws, canvases):
        counts = _frequencies(canvas, 1)
        assert all(law.get(pair, 0.0) > 0 for pair in counts), "a canvas of probability zero was reached"
        assert _chi_square_p(counts, law, rows) > 1e-4
    if denoise:
        assert not bool((out.sequences == MASK).any())


def test_the_model_gets_each_steps_sigma_per_row(fresh_seed):
    """time_conditioning="sigma": the model is called with sigma(t_i) of SEDD's grid, one per row, as a
    float32 tensor [B]; with "t", the time itself; ancestral unmasking gets its masked fraction."""
    model = TinySEDD(TOKENS, 10, seed=fresh_seed)
    seen = []

    def recording(x, time):
        seen.append(time.clone())
        return model(x, time)

    noise = LogLinearNoise()
    Sampler(recording, MASK, unmask="sedd_analytic", time_conditioning="sigma", steps=4, eps=1e-3,
            temperature=1.0).generate(torch.tensor([[0, 1]] * 3), gen_length=4, seed=fresh_seed)
    grid = torch.linspace(1, 1e-3, 5)
    assert len(seen) >= 1 and all(t.shape == (3,) and t.dtype == torch.float32 for t in seen)
    for i, time in enumerate(seen):
        assert torch.allclose(time, noise.total_noise(grid[i]).expand(3))
    seen.clear()
    Sampler(recording, MASK, unmask="ancestral", time_conditioning="t", steps=4, temperature=1.0).generate(
        torch.tensor([[0, 1]] * 2), gen_length=8, seed=fresh_seed)
    assert [round(float(t[0]), 6) for t in seen] == [1.0, 0.75, 0.5, 0.25][:len(seen)]


def test_time_conditioning_refuses_padding_and_rules_without_a_grid():
    model = TinySEDD(TOKENS, 6)
    with pytest.raises(ValueError, match="attention_mask"):
        Sampler(model, MASK, unmask="sedd_euler", time_conditioning="sigma", temperature=1.0).generate(
            torch.tensor([[0, 1], [1, 2]]), gen_length=2, attention_mask=torch.tensor([[0, 1], [1, 1]]))
    with pytest.raises(ValueError, match="time_conditioning"):
        Sampler(model, MASK, time_conditioning="sigma")
    with pytest.raises(ValueError, match="block_length"):
        Sampler(model, MASK, unmask="sedd_euler", block_length=2)
    with pytest.raises(TypeError, match="noise"):
        Sampler(model, MASK, unmask="sedd_euler", noise="cosine")


# ------------------------------------------------------------------------------------------------
# the drop-in: fastdiff.compat.sedd.get_pc_sampler
# ------------------------------------------------------------------------------------------------
class AbsorbingGraph:
    """What get_pc_sampler reads of SEDD's graph_lib.Absorbing: ``dim`` (tokens + 1) and ``absorb``."""
    absorb = True

    def __init__(self, tokens):
        self.dim = tokens + 1


class UniformGraph:
    absorb = False
    dim = TOKENS


def test_get_pc_sampler_keeps_seddss_signature_and_law(fresh_seed):
    model = TinySEDD(TOKENS, 2, seed=fresh_seed)
    noise = LogLinearNoise()
    rows = 4000
    sample = sedd.get_pc_sampler(AbsorbingGraph(TOKENS), noise, (rows, 2), "analytic", 3,
                                 device=torch.device("cpu"))
    torch.manual_seed(fresh_seed)
    x = sample(model)
    assert x.shape == (rows, 2) and x.dtype == torch.int64 and not bool((x == MASK).any())
    law = exact_law(model, (), noise, "analytic", 3, 1e-5, True)[-1]
    assert _chi_square_p(_frequencies(x, 0), law, rows) > 1e-4


def test_get_pc_sampler_maps_proj_fun_to_infill(fresh_seed):
    """SEDD's conditional sampling re-projects fixed positions before each step: here they are the
    infill's fixed tokens, never changed, and the other positions end filled."""
    model = TinySEDD(TOKENS, 6, seed=fresh_seed)
    fixed = torch.tensor([0, 2, 5])
    values = torch.tensor([3, 1, 0])

    def proj_fun(x):
        return x.index_copy(1, fixed, values.expand(x.shape[0], -1))

    x = sedd.get_pc_sampler(AbsorbingGraph(TOKENS), LogLinearNoise(), (8, 6), "euler", 6, proj_fun=proj_fun)(model)
    assert torch.equal(x[:, fixed], values.expand(8, -1)) and not bool((x == MASK).any())
    every = torch.arange(6)
    full = sedd.get_pc_sampler(AbsorbingGraph(TOKENS), LogLinearNoise(), (2, 6), "euler", 3,
                               proj_fun=lambda x: x.index_copy(1, every, torch.ones(2, 6, dtype=torch.long)))(model)
    assert bool((full == 1).all())  # nothing left to sample: the projection itself

    def not_a_projection(x):  # moves every filled token: no fixed positions to map
        return torch.where(x == MASK, x, (x + 1) % TOKENS)

    with pytest.raises(ValueError, match="proj_fun"):
        sedd.get_pc_sampler(AbsorbingGraph(TOKENS), LogLinearNoise(), (2, 6), "euler", 4,
                            proj_fun=not_a_projection)(model)


def test_get_pc_sampler_refuses_what_it_cannot_run():
    with pytest.raises(ValueError, match="absorbing"):
        sedd.get_pc_sampler(UniformGraph(), LogLinearNoise(), (2, 4), "euler", 4)
    with pytest.raises(ValueError, match="predictor"):
        sedd.get_pc_sampler(AbsorbingGraph(TOKENS), LogLinearNoise(), (2, 4), "leapfrog", 4)
    with pytest.raises(ValueError, match="batch_dims"):
        sedd.get_pc_sampler(AbsorbingGraph(TOKENS), LogLinearNoise(), (2, 4, 3), "euler", 4)
    with pytest.raises(TypeError, match="noise"):
        sedd.get_pc_sampler(AbsorbingGraph(TOKENS), object(), (2, 4), "euler", 4)


@pytest.mark.parametrize("predictor", ["euler", "analytic"])
def test_the_reference_loop_has_the_same_law(predictor, fresh_seed):
    model = TinySEDD(TOKENS, 2, seed=fresh_seed)
    torch.manual_seed(fresh_seed)
    x = sedd_reference_loop(model, LogLinearNoise(), 4000, 2, predictor, 3)
    law = exact_law(model, (), LogLinearNoise(), predictor, 3, 1e-5, True)[-1]
    assert _chi_square_p(_frequencies(x, 0), law, 4000) > 1e-4


def test_the_move_probability_is_torch_logsumexps_to_the_bit(fresh_seed):
    """``min(1, rate * S)`` over the tokens, the mask left out: torch.logsumexp's own steps, in place on
    one copy, so the same bits on random rows and on rows of -inf, +inf and NaN; the scores untouched."""
    g = torch.Generator().manual_seed(fresh_seed)
    scores = torch.randn(8, 50, generator=g) * 4
    scores[1, :49] = float("-inf")  # nothing but the mask: S = 0
    scores[2, 3] = float("inf")
    scores[3, 4] = float("nan")
    scores[4, 49] = 1e30  # the mask's own score never counts
    given = scores.clone()
    for rate in (0.07, 3.0, float("inf")):
        rate = torch.tensor(rate)
        got = sedd_move_probability(rate, scores, 49)
        log_total = torch.logsumexp(scores.index_fill(-1, torch.tensor([49]), float("-inf")), dim=-1)
        expected = torch.exp((torch.log(rate) + log_total).clamp(max=0.0))
        torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(scores.nan_to_num(), given.nan_to_num())
