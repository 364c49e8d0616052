"""Speed of the fastdiff.compat functions against eager loops of the algorithms they replace.

Run with ``pytest benchmarks/ --benchmark-only``. Each scenario times the eager loop and the compat
function at the same settings, one after the other in the same run (same group in pytest-benchmark's
table). The module prints the ratios at the end: eager median / fastdiff median of the two timed
alternately, call by call, for about a second (a shared CPU's load then moves both alike), with the
share of the eager loop's time spent in its model forwards: ``eager / forwards`` is the ratio a
sampler costing nothing would reach with the same forwards (fastdiff's masked-row head can do better
on RoBERTa).

The eager loops are the independent reference implementations of ``tests/test_compat_*.py`` (the
tests prove fastdiff gives their tokens), imported from there, so the loop timed here is the one the
tests check against. Models are small random ones (no download): on the LLaDA-sized vocabulary
(126,464) the model is tiny, so the time is mostly the sampler's.

Torch's thread count is left as it is (``OMP_NUM_THREADS=1`` pins one) and printed with the ratios.

Sizes: small on the CPU (the module takes well under a minute and a half on 2 cores); realistic
lengths and vocabularies on CUDA. On the CPU fastdiff runs its PyTorch reference ops, not the Triton
kernels or CUDA graphs its speed comes from, so CPU ratios say little about GPU ones.
"""
import contextlib
import os
import statistics
import sys
import time
import types

import pytest
import torch
from transformers import RobertaConfig, RobertaForMaskedLM

TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
sys.path.insert(0, TESTS)
try:
    import test_compat_dream as dream_tests
    import test_compat_llada as llada_tests
    import test_compat_roberta_diffusion as roberta_tests
    import time_models
finally:
    sys.path.remove(TESTS)

from fastdiff.compat import dream, llada, mdlm, roberta_diffusion, sedd  # noqa: E402
from fastdiff.noise import LogLinearNoise  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
ROUNDS = 5 if CUDA else 2
ALTERNATING_SECONDS = 1.0  # the alternating timing of each scenario (3 to 25 calls of each)
ROBERTA_VOCAB = 50265 if CUDA else 8192
DREAM_VOCAB = 151936


def _model_seconds(model, fn):
    """Seconds spent inside ``model``'s forward calls during one ``fn()`` (forward hooks)."""
    clock = {"start": 0.0, "total": 0.0}

    def start(module, args):
        clock["start"] = time.perf_counter()

    def stop(module, args, output):
        if CUDA:
            torch.cuda.synchronize()
        clock["total"] += time.perf_counter() - clock["start"]

    handles = [model.register_forward_pre_hook(start), model.register_forward_hook(stop)]
    try:
        _synchronized(fn)()
    finally:
        for handle in handles:
            handle.remove()
    return clock["total"]


def _alternating_medians(first, second, seconds):
    """Median seconds of ``first`` and of ``second`` called alternately, enough pairs to take about
    ``seconds`` (3 to 25)."""
    start = time.perf_counter()
    first(), second()
    pairs = max(3, min(25, int(seconds / max(time.perf_counter() - start, 1e-9))))
    times = ([], [])
    for _ in range(pairs):
        for fn, spent in zip((first, second), times):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def _synchronized(fn):
    def run():
        out = fn()
        if CUDA:
            torch.cuda.synchronize()
        return out
    return run


def _tiny_roberta(vocab_size, max_positions):
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=128, max_position_embeddings=max_positions, pad_token_id=1,
                           initializer_range=0.3)
    model = RobertaForMaskedLM(config).eval().to(DEVICE)
    model.lm_head.bias.data[roberta_tests.MASK_ID] = -1e4
    return model


def _llada(vocab_size, dim, batch, prompt_length, gen_length, block_length):
    """LLaDA's default usage: greedy, low-confidence remasking, one token per step."""
    mask_id = llada.LLADA_MASK_ID if vocab_size > llada.LLADA_MASK_ID else vocab_size - 1
    model = llada_tests.TinyMaskedLM(vocab_size, mask_id, seed=0, dim=dim, layers=2).to(DEVICE)
    prompt = torch.randint(5, min(mask_id, 1000), (batch, prompt_length), device=DEVICE)
    settings = dict(steps=gen_length, gen_length=gen_length, block_length=block_length, mask_id=mask_id)
    return (lambda: llada_tests.llada_reference(model, prompt, **settings),
            lambda: llada.generate(model, prompt, **settings), model)


def _dream(vocab_size, dim, batch, prompt_length, new_tokens):
    """Dream's demo settings: entropy ordering, temperature 0.2, top-p 0.95, one step per token."""
    mask_id = vocab_size - 1
    model = llada_tests.TinyMaskedLM(vocab_size, mask_id, seed=0, dim=dim, layers=2).to(DEVICE)
    prompt = torch.randint(5, 1000, (batch, prompt_length), device=DEVICE)
    settings = dict(max_new_tokens=new_tokens, steps=new_tokens, alg="entropy", temperature=0.2, top_p=0.95)
    return (lambda: dream_tests.dream_reference(model, prompt, mask_token_id=mask_id, **settings),
            lambda: dream.diffusion_generate(model, prompt, mask_token_id=mask_id, **settings), model)


def _roberta_canvas(prefix_length, canvas_length):
    """The drop-in's inputs: prepare_prompt's canvas of a 6-token prompt and a tokenizer stand-in."""
    prompt = [0, 713, 16, 10, 1296, 2]
    canvas = torch.full((1, canvas_length), roberta_tests.MASK_ID, device=DEVICE)
    canvas[:, :prefix_length] = roberta_diffusion.prepare_prefix(prompt, 1, prefix_length)
    return canvas, types.SimpleNamespace(mask_token_id=roberta_tests.MASK_ID)


def _roberta_blog(canvas_length):
    """The blog's resample and re-mask loop against the drop-in generate(..., BlogConfig, ...)."""
    model = _tiny_roberta(ROBERTA_VOCAB, canvas_length + 2)
    canvas, tokenizer = _roberta_canvas(16, canvas_length)
    return (lambda: roberta_tests.blog_reference(model, canvas[:, :16], canvas_length=canvas_length),
            lambda: roberta_diffusion.generate(model, tokenizer, canvas, torch.ones_like(canvas),
                                               roberta_diffusion.BlogConfig(), DEVICE), model)


def _roberta_confident(canvas_length):
    """The repository's confidence loop against the drop-in generate(..., Config, ...)."""
    model = _tiny_roberta(ROBERTA_VOCAB, canvas_length + 2)
    canvas, tokenizer = _roberta_canvas(32, canvas_length)
    return (lambda: roberta_tests.confident_reference(model, canvas[:, :32], canvas_length=canvas_length),
            lambda: roberta_diffusion.generate(model, tokenizer, canvas, torch.ones_like(canvas),
                                               roberta_diffusion.Config(), DEVICE), model)


def _sedd(tokens, dim, batch, length, steps, predictor="analytic"):
    """SEDD's predictor loop (absorbing graph, log-linear noise) against compat.sedd.get_pc_sampler."""
    model = time_models.TinySEDD(tokens, length, seed=0, dim=dim).to(DEVICE)
    graph = types.SimpleNamespace(absorb=True, dim=tokens + 1)
    sample = sedd.get_pc_sampler(graph, LogLinearNoise(), (batch, length), predictor, steps, device=DEVICE)
    return (lambda: time_models.sedd_reference_loop(model, LogLinearNoise(), batch, length, predictor, steps),
            lambda: sample(model), model)


def _mdlm(tokens, dim, batch, length, steps, predictor):
    """MDLM's ddpm / ddpm_cache loop (time-free for the cache, with noise removal) against compat.mdlm.sample."""
    model = time_models.TinyMDLM(0, length, LogLinearNoise(), predictor=predictor, batch=batch, steps=steps,
                                 time_conditioning=predictor != "ddpm_cache", tokens=tokens, dim=dim).to(DEVICE)
    return (lambda: time_models.mdlm_reference_loop(model, steps, cache=predictor == "ddpm_cache"),
            lambda: mdlm.sample(model), model)


if CUDA:
    SCENARIOS = {
        "llada B4 P128 G256 blocks32 vocab126464 dim256": lambda: _llada(126464, 256, 4, 128, 256, 32),
        "llada B1 P64 G128 blocks128 vocab126464 dim64": lambda: _llada(126464, 64, 1, 64, 128, 128),
        "dream B2 P64 G256 vocab151936 dim256": lambda: _dream(DREAM_VOCAB, 256, 2, 64, 256),
        "roberta blog canvas256 vocab50265": lambda: _roberta_blog(256),
        "roberta confident canvas256 vocab50265": lambda: _roberta_confident(256),
        "sedd analytic B4 L256 steps256 vocab50258 dim256": lambda: _sedd(50257, 256, 4, 256, 256),
        "mdlm ddpm B4 L256 steps256 vocab50258 dim256": lambda: _mdlm(50257, 256, 4, 256, 256, "ddpm"),
        "mdlm ddpm_cache B4 L256 steps1000 vocab50258 dim256": lambda: _mdlm(50257, 256, 4, 256, 1000, "ddpm_cache"),
    }
else:
    SCENARIOS = {
        "llada B2 P8 G16 blocks8 vocab2048 dim32": lambda: _llada(2048, 32, 2, 8, 16, 8),
        "llada B1 P8 G16 blocks8 vocab126464 dim16": lambda: _llada(126464, 16, 1, 8, 16, 8),
        "dream B2 P8 G16 vocab2048 dim32": lambda: _dream(2048, 32, 2, 8, 16),
        "roberta blog canvas48 vocab8192": lambda: _roberta_blog(48),
        "roberta confident canvas48 vocab8192": lambda: _roberta_confident(48),
        "sedd analytic B2 L32 steps32 vocab2048 dim32": lambda: _sedd(2047, 32, 2, 32, 32),
        "mdlm ddpm B2 L32 steps32 vocab2048 dim32": lambda: _mdlm(2047, 32, 2, 32, 32, "ddpm"),
        "mdlm ddpm_cache B2 L32 steps128 vocab2048 dim32": lambda: _mdlm(2047, 32, 2, 32, 128, "ddpm_cache"),
    }


@pytest.fixture(scope="module")
def medians(request):
    """Median seconds per (scenario, implementation); the ratios are printed when the module ends."""
    table = {}

    def report():
        plugins = request.config.pluginmanager
        reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
        pairs = [(name, t["eager"], t["fastdiff"]) for name, t in table.items() if {"eager", "fastdiff"} <= set(t)]
        if reporter is None or not pairs:
            return
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            reporter.write_line("")
            reporter.write_sep("-", f"fastdiff.compat vs eager reference loops ({DEVICE.type}, "
                                    f"{torch.get_num_threads()} torch thread(s), medians of alternating calls, "
                                    f"same run)")
            for name, eager, fast in pairs:
                model_s = table[name].get("eager_model")
                ceiling = f"   (model forwards {100 * model_s / eager:.0f}% of eager: a free sampler reaches " \
                          f"x{eager / model_s:.2f})" if model_s else ""
                reporter.write_line(f"{name:<48} eager {eager * 1e3:9.1f} ms   fastdiff {fast * 1e3:9.1f} ms   "
                                    f"speed-up x{eager / fast:.2f}{ceiling}")

    request.addfinalizer(report)
    return table


@pytest.fixture(scope="module")
def runs():
    """The two callables of each scenario, built once (models and prompts shared by both)."""
    return {}


@pytest.mark.parametrize("impl", ["eager", "fastdiff"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_compat_speed(benchmark, scenario, impl, medians, runs):
    if scenario not in runs:
        runs[scenario] = SCENARIOS[scenario]()
    eager, fast, model = runs[scenario]
    fn = _synchronized(eager if impl == "eager" else fast)
    benchmark.group = f"compat: {scenario}"
    benchmark.extra_info["device"] = DEVICE.type
    benchmark.pedantic(fn, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    if benchmark.stats is not None:
        entry = medians.setdefault(scenario, {})
        if impl == "eager":  # the eager loop's own forwards: what no sampler can take away
            entry["eager_model"] = _model_seconds(model, eager)
        else:
            entry["eager"], entry["fastdiff"] = _alternating_medians(_synchronized(eager), fn, ALTERNATING_SECONDS)
            benchmark.extra_info["speedup_vs_eager"] = entry["eager"] / entry["fastdiff"]

