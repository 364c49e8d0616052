"""The fast path: CUDA-graph dispatch and caching, the masked-row LM head, torch.compile.

Capture itself needs CUDA. On the CPU the graph runner is driven with a stand-in capture that
replays the step eagerly, which exercises everything around it: static buffers reloaded between
calls, row buckets, reuse, the LRU bound, early stopping, and the fallback when capture fails.
"""
import warnings

import pytest
import torch
import transformers

from conftest import MASK_ID, OracleModel, requires_cuda
from fastdiff import Sampler, graphs, sampler as sampler_module
from fastdiff.model import ModelRunner, keep_flash_attention_under_capture
from time_models import TinySEDD


class FakeCapture:
    """Stands in for graphs.capture_step: warms the step up once (as the real one does), then replays
    it eagerly; counts captures."""

    def __init__(self, fail=False):
        self.captures, self.fail = 0, fail

    def __call__(self, step, pool):
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        self.captures += 1
        step()
        return step


@pytest.fixture
def fake_graphs(monkeypatch):
    capture = FakeCapture()
    monkeypatch.setattr(graphs, "capture_step", capture)
    monkeypatch.setattr(sampler_module.Sampler, "_graphs_wanted",
                        lambda self, hooks, device, backend, streaming: self.cuda_graphs is not False)
    return capture


def _tiny(cls, config_cls, **extra):
    torch.manual_seed(0)
    base = dict(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                max_position_embeddings=80)
    base.update(extra)
    return cls(config_cls(**base)).eval()


MODELS = {
    "roberta": lambda: _tiny(transformers.RobertaForMaskedLM, transformers.RobertaConfig),
    "bert": lambda: _tiny(transformers.BertForMaskedLM, transformers.BertConfig),
    "distilbert": lambda: transformers.DistilBertForMaskedLM(transformers.DistilBertConfig(
        vocab_size=300, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=80)).eval(),
    "modernbert": lambda: _tiny(transformers.ModernBertForMaskedLM, transformers.ModernBertConfig, pad_token_id=0,
                                bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2),
    "electra": lambda: _tiny(transformers.ElectraForMaskedLM, transformers.ElectraConfig, embedding_size=32),
}


# ------------------------------------------------------------------------------------------------
# masked-row LM head
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MODELS))
def test_masked_head_logits_equal_the_full_head(name, fresh_seed):
    model = MODELS[name]()
    runner = ModelRunner(model)
    assert runner.has_head
    ids = torch.randint(5, 300, (2, 12), generator=torch.Generator().manual_seed(fresh_seed))
    rows = torch.tensor([0, 5, 13, 23])
    with torch.no_grad():
        full = runner(ids, None).reshape(24, -1)[rows]
        hidden = runner.encode(ids, None)
        gathered = runner.head(hidden.reshape(24, -1)[rows])
    assert torch.equal(gathered, full)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("overrides", [
    dict(),
    dict(temperature=1.0, cfg_scale=1.0),
    dict(logits_shift=True, temperature=0.8, block_length=4),
    dict(threshold=0.01, remask="low_confidence", remask_ratio=0.5),
])
def test_masked_head_sampler_equals_full_model(name, overrides, fresh_seed):
    model = MODELS[name]()
    prompt = torch.randint(5, 300, (2, 4), generator=torch.Generator().manual_seed(fresh_seed))
    a = Sampler(model, 4, steps=6, masked_head=True, seed=fresh_seed, **overrides).generate(prompt, gen_length=12)
    b = Sampler(model, 4, steps=6, masked_head=False, seed=fresh_seed, **overrides).generate(prompt, gen_length=12)
    assert torch.equal(a.sequences, b.sequences) and a.nfe == b.nfe


def test_masked_head_only_for_known_heads_and_switch_off():
    assert not ModelRunner(OracleModel(torch.randn(4, 8))).has_head

    class DreamLikeRunner(ModelRunner):
        def __call__(self, input_ids, attention_mask, position_ids=None):
            return super().__call__(input_ids, attention_mask, position_ids)

    assert not DreamLikeRunner(MODELS["roberta"]()).has_head  # a custom call convention keeps the full model
    model = MODELS["roberta"]()
    shapes = []
    model.lm_head.register_forward_hook(lambda module, inputs, output: shapes.append(tuple(output.shape)))
    Sampler(model, 4, steps=4, block_length=4).generate(torch.randint(5, 300, (1, 4)), gen_length=8)
    # the head ran on the rows of the active block only: 4 masked, then 2, per block of 4 over 2 steps
    assert shapes == [(4, 300), (2, 300), (4, 300), (2, 300)]
    shapes.clear()
    Sampler(model, 4, steps=4, block_length=4, masked_head=False).generate(torch.randint(5, 300, (1, 4)), gen_length=8)
    assert shapes == [(1, 12, 300)] * 4


# ------------------------------------------------------------------------------------------------
# CUDA-graph dispatch and cache (stand-in capture on the CPU)
# ------------------------------------------------------------------------------------------------
def test_cuda_graph_dispatch_on_cpu(monkeypatch):
    model = MODELS["roberta"]()
    prompt = torch.randint(5, 300, (1, 4))
    capture = FakeCapture()
    monkeypatch.setattr(graphs, "capture_step", capture)
    Sampler(model, 4, steps=2).generate(prompt, gen_length=4)  # auto: no CUDA, no capture
    assert capture.captures == 0
    with pytest.raises(ValueError, match="cuda_graphs=True needs CUDA"):
        Sampler(model, 4, steps=2, cuda_graphs=True).generate(prompt, gen_length=4)
    with pytest.raises(ValueError, match="cuda_graphs"):
        Sampler(model, 4, cuda_graphs="yes")
    with pytest.raises(TypeError, match="masked_head"):
        Sampler(model, 4, masked_head="no")


CONFIGS = [
    dict(),
    dict(temperature=0.9, top_k=50, unmask="margin", block_length=4),
    dict(temperature=1.0, cfg_scale=1.5, remask="low_confidence", remask_ratio=0.5),
    dict(threshold=0.05, block_length=4),  # finishes blocks early: device-side jumps
    dict(unmask="ancestral", temperature=1.0, eos_token_id=7),
    dict(unmask="random", logits_shift=True, temperature=0.5),
    dict(unmask="resample", transfer_counts="binomial", temperature=1.0, eos_token_id=7, block_length=6),
    dict(unmask="mask_predict", temperature=0.7, top_p=0.9),
    dict(threshold=0.05, edit_threshold=0.02, max_edit_steps=3, block_length=6, temperature=0.8),
]


@pytest.mark.parametrize("overrides", CONFIGS)
@pytest.mark.parametrize("masked_head", [True, False])
def test_graph_runner_equals_eager(fake_graphs, overrides, masked_head, fresh_seed):
    model = MODELS["roberta"]()
    prompt = torch.randint(5, 300, (2, 4), generator=torch.Generator().manual_seed(fresh_seed))
    attention = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    graphed = Sampler(model, 4, steps=6, seed=fresh_seed, masked_head=masked_head, return_history=True, **overrides)
    eager = Sampler(model, 4, steps=6, seed=fresh_seed, masked_head=masked_head, cuda_graphs=False,
                    return_history=True, **overrides)
    a = graphed.generate(prompt, gen_length=12, attention_mask=attention)
    b = eager.generate(prompt, gen_length=12, attention_mask=attention)
    assert fake_graphs.captures >= 1
    assert torch.equal(a.sequences, b.sequences)
    assert a.nfe == b.nfe and len(a.history) == len(b.history) == a.nfe
    assert all(torch.equal(x, y) for x, y in zip(a.history, b.history))
    assert torch.equal(a.finished, b.finished) and torch.equal(a.stopped_at_eos, b.stopped_at_eos)


def test_graphs_are_reused_across_calls_and_values(fake_graphs, fresh_seed):
    model = MODELS["roberta"]()
    sampler = Sampler(model, 4, steps=6, temperature=1.0, masked_head=False)
    prompt = torch.randint(5, 300, (2, 4), generator=torch.Generator().manual_seed(fresh_seed))
    sampler.generate(prompt, gen_length=12, seed=1)
    captured = fake_graphs.captures
    assert captured == 1
    # same structure, other values and another prompt: replayed, and equal to an eager run of them
    out = sampler.generate(prompt.flip(0), gen_length=12, seed=2, temperature=0.5, top_k=None)
    assert fake_graphs.captures == captured
    eager = Sampler(model, 4, steps=6, masked_head=False, cuda_graphs=False).generate(
        prompt.flip(0), gen_length=12, seed=2, temperature=0.5)
    assert torch.equal(out.sequences, eager.sequences)
    sampler.generate(prompt, gen_length=12, top_k=40)  # another structure: a new capture
    assert fake_graphs.captures == captured + 1


def test_graph_cache_is_bounded(fake_graphs):
    model = MODELS["roberta"]()
    sampler = Sampler(model, 4, steps=2, masked_head=False, graph_cache_size=2)
    for length in (4, 6, 8):
        sampler.generate(torch.randint(5, 300, (1, 3)), gen_length=length)
    assert len(sampler._graphs) == 2 and fake_graphs.captures == 3
    sampler.generate(torch.randint(5, 300, (1, 3)), gen_length=4)  # evicted: captured again
    assert fake_graphs.captures == 4
    with pytest.raises(ValueError, match="graph_cache_size"):
        Sampler(model, 4, graph_cache_size=0)


def test_masked_head_buckets_are_powers_of_two(fake_graphs):
    model = MODELS["roberta"]()
    sizes = []
    model.lm_head.register_forward_hook(lambda module, inputs, output: sizes.append(output.shape[0]))
    Sampler(model, 4, steps=8).generate(torch.randint(5, 300, (2, 4)), gen_length=64)
    # 2 rows x 64 masked -> 128, then fewer rows each step: a handful of graphs cover all 8 steps
    assert set(sizes) <= {16, 32, 64, 128} and max(sizes) == 128
    assert fake_graphs.captures == len(set(sizes))


def test_capture_failure_falls_back_to_eager_with_one_warning(monkeypatch):
    monkeypatch.setattr(graphs, "capture_step", FakeCapture(fail=True))
    monkeypatch.setattr(sampler_module.Sampler, "_graphs_wanted", lambda self, hooks, device, backend, streaming: True)
    model = MODELS["roberta"]()
    sampler = Sampler(model, 4, steps=4, seed=3, temperature=1.0)
    prompt = torch.randint(5, 300, (1, 4))
    with pytest.warns(RuntimeWarning, match="CUDA graph capture failed, running eagerly: RuntimeError"):
        out = sampler.generate(prompt, gen_length=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = sampler.generate(prompt, gen_length=8)
    eager = Sampler(model, 4, steps=4, seed=3, temperature=1.0, cuda_graphs=False).generate(prompt, gen_length=8)
    assert torch.equal(out.sequences, eager.sequences) and torch.equal(again.sequences, eager.sequences)


def test_graphed_nan_logits_name_the_step(fake_graphs):
    class Broken:
        def __init__(self):
            self.calls = 0

        def __call__(self, input_ids, attention_mask=None):
            self.calls += 1
            logits = torch.randn(*input_ids.shape, 16)
            if self.calls == 4:  # the warm-up run is call 1: the third replayed step is bad
                logits[:] = float("nan")
            return logits

    with pytest.raises(ValueError, match="NaN or \\+inf logits .* at step 2"):
        Sampler(Broken(), MASK_ID, steps=4).generate(torch.tensor([[5, 6]]), gen_length=4)


def test_keep_flash_attention_under_capture(monkeypatch):
    """Versions whose mask-skip test says 'tracing' during capture build a full mask even without
    padding; inside the context a missing mask is skipped, a real padding mask is not."""
    from transformers import masking_utils

    def old_style_skip(padding_mask, *args, **kwargs):
        return False  # what an is_tracing() check answers under stream capture

    monkeypatch.setattr(masking_utils, "_ignore_bidirectional_mask_sdpa", old_style_skip)
    with keep_flash_attention_under_capture():
        assert masking_utils._ignore_bidirectional_mask_sdpa(None, 12) is True
        assert masking_utils._ignore_bidirectional_mask_sdpa(torch.ones(1, 12, dtype=torch.bool), 12) is False
        assert masking_utils._ignore_bidirectional_mask_sdpa(None, 12, 4) is False  # local attention
    assert masking_utils._ignore_bidirectional_mask_sdpa is old_style_skip


@pytest.mark.slow
def test_compile_gives_the_same_tokens():
    model = _tiny(transformers.RobertaForMaskedLM, transformers.RobertaConfig, num_hidden_layers=1)
    prompt = torch.randint(5, 300, (2, 4), generator=torch.Generator().manual_seed(0))
    compiled = Sampler(model, 4, steps=4, compile=True).generate(prompt, gen_length=8)
    eager = Sampler(model, 4, steps=4).generate(prompt, gen_length=8)
    assert torch.equal(compiled.sequences, eager.sequences)


# ------------------------------------------------------------------------------------------------
# CUDA
# ------------------------------------------------------------------------------------------------
def _cuda_roberta():
    return _tiny(transformers.RobertaForMaskedLM, transformers.RobertaConfig).cuda()


@requires_cuda
@pytest.mark.parametrize("masked_head", [True, False])
def test_greedy_graph_equals_eager_triton_and_torch(masked_head):
    model = _cuda_roberta()
    prompt = torch.randint(5, 300, (4, 8), device="cuda")
    outs = [Sampler(model, 4, steps=8, backend=backend, cuda_graphs=graphs_on, masked_head=masked_head)
            .generate(prompt, gen_length=24).sequences
            for backend, graphs_on in (("triton", True), ("triton", False), ("torch", False))]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[1], outs[2])


@requires_cuda
def test_graph_sampling_seeds_and_reuse():
    model = _cuda_roberta()
    sampler = Sampler(model, 4, steps=8, temperature=1.0, cuda_graphs=True)
    prompt = torch.randint(5, 300, (2, 8), device="cuda")
    a = sampler.generate(prompt, gen_length=24, seed=1).sequences
    entries = len(sampler._graphs)
    b = sampler.generate(prompt, gen_length=24, seed=1).sequences
    c = sampler.generate(prompt, gen_length=24, seed=2).sequences
    assert len(sampler._graphs) == entries  # reused, not captured again
    assert torch.equal(a, b) and not torch.equal(a, c)
    eager = Sampler(model, 4, steps=8, temperature=1.0, cuda_graphs=False).generate(prompt, gen_length=24, seed=1)
    assert torch.equal(a, eager.sequences)  # replays advance the counter as eager steps do


@requires_cuda
def test_graph_memory_stays_flat_over_many_calls():
    model = _cuda_roberta()
    sampler = Sampler(model, 4, steps=4, temperature=1.0, cuda_graphs=True)
    prompt = torch.randint(5, 300, (2, 8), device="cuda")
    for _ in range(20):
        sampler.generate(prompt, gen_length=16)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    for _ in range(1000):
        sampler.generate(prompt, gen_length=16)
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() <= before + 1024 * 1024


@requires_cuda
def test_capture_impossible_falls_back_on_cuda():
    class SyncingModel(torch.nn.Module):
        """Reads a value on the host inside forward: cannot be captured."""

        def __init__(self):
            super().__init__()
            self.table = torch.nn.Parameter(torch.randn(32, 16))

        def forward(self, input_ids, attention_mask=None):
            if float(self.table.sum()) > 1e9:  # a host synchronisation
                raise AssertionError
            return self.table[input_ids]

    model = SyncingModel().cuda()
    with pytest.warns(RuntimeWarning, match="CUDA graph capture failed"):
        out = Sampler(model, MASK_ID, steps=4, cuda_graphs=True).generate(
            torch.tensor([[5, 6]], device="cuda"), gen_length=4)
    assert not (out.sequences == MASK_ID).any()


@pytest.mark.parametrize("graphed", [False, True])
def test_progress_callback_keeps_the_fast_path(monkeypatch, graphed):
    capture = FakeCapture()
    monkeypatch.setattr(graphs, "capture_step", capture)
    monkeypatch.setattr(sampler_module.Sampler, "_graphs_wanted", lambda self, hooks, device, backend, streaming: graphed)
    model = MODELS["roberta"]()
    shapes, calls = [], []
    model.lm_head.register_forward_hook(lambda module, inputs, output: shapes.append(output.dim()))
    out = Sampler(model, 4, steps=5).generate(torch.randint(5, 300, (1, 4)), gen_length=10,
                                              progress=lambda step, total: calls.append((step, total)))
    assert calls == [(i, 5) for i in range(1, 6)] and out.nfe == 5
    assert set(shapes) == {2}  # the masked-row head stayed on: [rows, V] logits
    assert (capture.captures > 0) == graphed
    with pytest.raises(TypeError, match="progress"):
        Sampler(model, 4).generate(torch.randint(5, 300, (1, 4)), gen_length=4, progress=3)


@pytest.mark.parametrize("settings", [dict(unmask="sedd_analytic", time_conditioning="sigma"),
                                      dict(unmask="sedd_euler", time_conditioning="t", denoise="none"),
                                      dict(unmask="ancestral", time_conditioning="sigma")])
def test_time_conditioned_graphs_equal_eager_and_rows_are_their_own(fake_graphs, settings, fresh_seed):
    """The captured step (stand-in capture on the CPU) gives the eager tokens, with the time and the
    reveal rates read from the plan's device tensors; each row equals itself alone."""
    model = TinySEDD(4, 12, seed=fresh_seed)
    prompts = torch.tensor([[0, 1], [2, 3], [1, 1]])
    common = dict(steps=5, temperature=1.0, seed=[5, 6, 7], return_history=True, **settings)
    graphed = Sampler(model, 4, **common).generate(prompts, gen_length=10)
    eager = Sampler(model, 4, cuda_graphs=False, **common).generate(prompts, gen_length=10)
    assert fake_graphs.captures >= 1
    assert torch.equal(graphed.sequences, eager.sequences) and graphed.nfe == eager.nfe
    assert all(torch.equal(a, b) for a, b in zip(graphed.history, eager.history))
    for row in range(3):
        alone = Sampler(model, 4, cuda_graphs=False, **{**common, "seed": 5 + row}).generate(
            prompts[row:row + 1], gen_length=10)
        assert torch.equal(alone.sequences[0], eager.sequences[row])
