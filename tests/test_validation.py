"""Bad input gets a ValueError / TypeError naming the argument, and the caller's tensors stay as they were."""
import pytest
import torch

from conftest import MASK_ID, OracleModel, requires_kernels
from fastdiff import Sampler, SamplerConfig, ops

V = 16
BACKENDS = ["torch", pytest.param("triton", marks=requires_kernels)]


def _oracle(L=64):
    return OracleModel(torch.randn(L, V))


@pytest.fixture
def sampler():
    return Sampler(_oracle(), MASK_ID, steps=4)


@pytest.mark.parametrize("overrides,match", [
    (dict(steps=0), "steps"),
    (dict(steps=-3), "steps"),
    (dict(steps=2.5), "steps"),
    (dict(schedule="exponential"), "schedule"),
    (dict(unmask="best"), "unmask"),
    (dict(temperature=-0.1), "temperature"),
    (dict(temperature=float("nan")), "temperature"),
    (dict(top_k=0), "top_k"),
    (dict(top_k=2.0), "top_k"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(threshold=0.0), "threshold"),
    (dict(threshold=1.2), "threshold"),
    (dict(threshold=0.5, unmask="entropy"), "threshold"),
    (dict(threshold=0.5, unmask="ancestral"), "threshold"),
    (dict(schedule_cap=True), "schedule_cap"),
    (dict(unmask="sedd_euler", steps=10**9), "steps"),
    (dict(unmask="resample", steps=10**9), "steps"),
    (dict(denoise="maybe"), "denoise"),
    (dict(time_conditioning="sigma"), "time_conditioning"),
    (dict(unmask="sedd_analytic", cfg_scale=1.0), "cfg_scale"),
    (dict(threshold=0.5, schedule_cap=1), "schedule_cap"),
    (dict(unmask="resample", remask="low_confidence"), "remask"),
    (dict(cfg_scale=-1.0), "cfg_scale"),
    (dict(block_length=0), "block_length"),
    (dict(remask="high_confidence"), "remask"),
    (dict(remask_ratio=1.0), "remask_ratio"),
    (dict(position_temperature=-1.0), "position_temperature"),
    (dict(eos_token_id="</s>"), "eos_token_id"),
    (dict(suppress_token_ids=[-1]), "suppress_token_ids"),
    (dict(logits_shift=1), "logits_shift"),
    (dict(on_step=3), "on_step"),
    (dict(seed=1.5), "seed"),
    (dict(seed=2**63), "seed"),
    (dict(seed=-2**63 - 1), "seed"),
    (dict(temperature=float("inf")), "temperature"),
    (dict(cfg_scale=float("inf")), "cfg_scale"),
    (dict(cfg_scale=float("nan")), "cfg_scale"),
    (dict(remask_temperature=float("inf")), "remask_temperature"),
    (dict(eos_token_id=MASK_ID), "eos_token_id"),
    (dict(eos_token_id=[2, MASK_ID]), "eos_token_id"),
    (dict(nucleus=0.9), "nucleus"),
])
def test_bad_options_name_the_field(sampler, overrides, match):
    with pytest.raises((ValueError, TypeError), match=match):
        Sampler(_oracle(), MASK_ID, **overrides)
    with pytest.raises((ValueError, TypeError), match=match):
        sampler.generate(torch.tensor([[5, 6]]), gen_length=4, **overrides)


def test_bad_lengths_and_steps(sampler):
    with pytest.raises(ValueError, match="gen_length"):
        sampler.generate(torch.tensor([[5, 6]]), gen_length=0)
    with pytest.raises(TypeError, match="gen_length"):
        sampler.generate(torch.tensor([[5, 6]]), gen_length=4.0)
    with pytest.raises(ValueError, match="steps=2 cannot cover 4 blocks"):
        sampler.generate(torch.tensor([[5, 6]]), gen_length=8, block_length=2, steps=2)


def test_bad_ids(sampler):
    with pytest.raises(TypeError, match="prompt_ids"):
        sampler.generate(torch.tensor([[5.0, 6.0]]), gen_length=4)
    with pytest.raises(TypeError, match="prompt_ids"):
        sampler.generate([[5, "6"]], gen_length=4)
    with pytest.raises(TypeError, match="prompt_ids is text: the sampler needs a tokenizer"):
        sampler.generate(["no tokenizer here"], gen_length=4)
    with pytest.raises(ValueError, match="prompt_ids is empty"):
        sampler.generate([], gen_length=4)
    with pytest.raises(TypeError, match="gen_length"):
        sampler.generate(torch.tensor([[5, 6]]))
    with pytest.raises(ValueError, match="disagree"):
        sampler.generate(torch.tensor([[5, 6]]), gen_length=4, max_new_tokens=5)
    with pytest.raises(ValueError, match="prompt_ids"):
        sampler.generate(torch.zeros(1, 2, 2, dtype=torch.long), gen_length=4)
    with pytest.raises(ValueError, match="mask_token_id"):
        sampler.generate(torch.tensor([[5, MASK_ID]]), gen_length=4)
    with pytest.raises(TypeError, match="canvas_ids"):
        sampler.infill(torch.tensor([[0.5, 3.0]]))
    with pytest.raises(ValueError, match="no mask_token_id"):
        sampler.infill(torch.tensor([[5, 6]]))


def test_bad_attention_mask(sampler):
    prompt = torch.tensor([[5, 6, 7]])
    with pytest.raises(ValueError, match="attention_mask"):
        sampler.generate(prompt, gen_length=4, attention_mask=torch.ones(1, 4))
    with pytest.raises(ValueError, match="attention_mask"):
        sampler.generate(prompt, gen_length=4, attention_mask=torch.tensor([[1, 0, 1]]))
    with pytest.raises(ValueError, match="attention_mask"):
        sampler.generate(prompt, gen_length=4, attention_mask=torch.tensor([[1, 2, 1]]))
    with pytest.raises(TypeError, match="attention_mask"):
        sampler.generate(prompt, gen_length=4, attention_mask=[[1, 1, 1]])


def test_mask_token_outside_the_vocabulary(tiny_roberta):
    with pytest.raises(ValueError, match="mask_token_id"):
        Sampler(tiny_roberta, mask_token_id=1000)
    with pytest.raises(TypeError, match="mask_token_id"):
        Sampler(tiny_roberta, mask_token_id="<mask>")
    with pytest.raises(ValueError, match="mask_token_id"):  # a callable: found at the first forward
        Sampler(_oracle(), mask_token_id=V + 3).generate(torch.tensor([[5]]), gen_length=2)
    with pytest.raises(ValueError, match="suppress_token_ids"):
        Sampler(_oracle(), MASK_ID, suppress_token_ids=[V]).generate(torch.tensor([[5]]), gen_length=2)


def test_prompt_longer_than_the_model_positions(tiny_roberta):
    sampler = Sampler(tiny_roberta, mask_token_id=4)
    # 130 positions with RoBERTa's padding offset of 2 leave 128
    sampler.generate(torch.tensor([[0] * 100]), gen_length=28, steps=1)
    with pytest.raises(ValueError, match="prompt \\+ gen_length = 129 exceeds the model's 128 positions"):
        sampler.generate(torch.tensor([[0] * 100]), gen_length=29, steps=1)
    with pytest.raises(ValueError, match="canvas_ids length"):
        sampler.infill(torch.full((1, 129), 4))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_logits_name_the_step(bad):
    class Broken:
        def __init__(self):
            self.calls = 0

        def __call__(self, input_ids, attention_mask=None):
            self.calls += 1
            logits = torch.randn(*input_ids.shape, V)
            if self.calls == 3:
                logits[0, :, 5] = bad  # the rows still masked are read and found bad
            return logits

    with pytest.raises(ValueError, match="NaN or \\+inf logits .* at step 2"):
        Sampler(Broken(), MASK_ID, steps=4).generate(torch.tensor([[5, 6]]), gen_length=4)


def test_model_returning_garbage():
    with pytest.raises(ValueError, match="logits of shape"):
        Sampler(lambda ids, attn: torch.randn(2, 3), MASK_ID).generate(torch.tensor([[5]]), gen_length=2)
    with pytest.raises(TypeError, match="model"):
        Sampler(lambda ids, attn: "logits", MASK_ID).generate(torch.tensor([[5]]), gen_length=2)
    with pytest.raises(TypeError, match="model"):
        Sampler(42, MASK_ID)


def test_config_type_and_unknown_override():
    with pytest.raises(TypeError, match="config"):
        Sampler(_oracle(), MASK_ID, config={"steps": 4})
    with pytest.raises(TypeError, match="unknown SamplerConfig option"):
        SamplerConfig().replace(stpes=3)
    with pytest.raises(ValueError, match="backend"):
        Sampler(_oracle(), MASK_ID, backend="cuda")


def test_caller_tensors_are_never_modified(tiny_roberta):
    prompt = torch.tensor([[0, 10, 11], [1, 0, 12]])
    attention = torch.tensor([[1, 1, 1], [0, 1, 1]])
    copies = prompt.clone(), attention.clone()
    Sampler(tiny_roberta, 4, steps=3, remask="low_confidence", cfg_scale=1.0).generate(
        prompt, gen_length=6, attention_mask=attention)
    assert torch.equal(prompt, copies[0]) and torch.equal(attention, copies[1])
    logits = torch.randn(1, 4, V)
    mask = torch.ones(1, 4, dtype=torch.bool)
    logits_copy = logits.clone()
    ops.sample_masked(logits, mask, temperature=1.0, top_p=0.5, seed=0, backend="torch")
    assert torch.equal(logits, logits_copy)


def test_ops_reject_meta_tensors():
    meta = dict(device="meta")
    with pytest.raises(ValueError, match="logits is on the meta device"):
        ops.sample_masked(torch.empty(1, 4, 8, **meta), torch.ones(1, 4, dtype=torch.bool, **meta))
    with pytest.raises(ValueError, match="scores is on the meta device"):
        ops.select_topk(torch.empty(1, 4, **meta), torch.ones(1, 4, dtype=torch.bool, **meta), 1)
    with pytest.raises(ValueError, match="temperature is on the meta device"):
        ops.sample_masked(torch.randn(1, 4, 8), torch.ones(1, 4, dtype=torch.bool), temperature=torch.empty((), **meta))


@pytest.mark.parametrize("call,match", [
    (lambda: ops.sample_masked(torch.randn(1, 4), torch.ones(1, 4, dtype=torch.bool)), "logits"),
    (lambda: ops.sample_masked(torch.ones(1, 4, 8, dtype=torch.long), torch.ones(1, 4, dtype=torch.bool)), "logits"),
    (lambda: ops.sample_masked(torch.randn(1, 4, 8), torch.ones(1, 4)), "mask"),
    (lambda: ops.sample_masked(torch.randn(1, 4, 8), torch.ones(1, 5, dtype=torch.bool)), "mask"),
    (lambda: ops.sample_masked(torch.randn(1, 4, 8), torch.ones(1, 4, dtype=torch.bool), temperature=-1), "temperature"),
    (lambda: ops.sample_masked(torch.randn(1, 4, 8), torch.ones(1, 4, dtype=torch.bool), top_k=0), "top_k"),
    (lambda: ops.sample_masked(torch.randn(1, 4, 8), torch.ones(1, 4, dtype=torch.bool), top_p=0.0), "top_p"),
    (lambda: ops.sample_masked(torch.randn(1, 4, 8), torch.ones(1, 4, dtype=torch.bool), score="max"), "score"),
    (lambda: ops.sample_masked(torch.randn(1, 4, 8), torch.ones(1, 4, dtype=torch.bool), suppress_ids=[8]), "suppress_ids"),
    (lambda: ops.sample_masked(torch.randn(1, 4, 8), torch.ones(1, 4, dtype=torch.bool), seed=1.5), "seed"),
    (lambda: ops.sample_masked(torch.randn(1, 4, 8), torch.ones(1, 4, dtype=torch.bool),
                               seed=torch.zeros(3, dtype=torch.long)), "seed"),
    (lambda: ops.sample_masked(torch.randn(1, 4, 8), torch.ones(1, 4, dtype=torch.bool), backend="numpy"), "backend"),
    (lambda: ops.select_topk(torch.randn(1, 4).double(), torch.ones(1, 4, dtype=torch.bool), 1), "scores"),
    (lambda: ops.select_topk(torch.randn(1, 4), torch.ones(1, 4, dtype=torch.bool), torch.ones(2, dtype=torch.long)), "k"),
    (lambda: ops.select_topk(torch.randn(1, 4), torch.ones(1, 4, dtype=torch.bool), torch.ones(1)), "k"),
    (lambda: ops.select_topk(torch.randn(1, 4), torch.ones(1, 4, dtype=torch.bool), 1, position_temperature=-1),
     "position_temperature"),
    (lambda: ops.commit_remask(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4), torch.zeros(1, 4, dtype=torch.long),
                               torch.zeros(1, 4), torch.ones(1, 4, dtype=torch.bool), torch.ones(1, 4, dtype=torch.bool),
                               0, 1.5), "mask_id"),
    (lambda: ops.commit_remask(torch.zeros(1, 4, dtype=torch.int32), torch.zeros(1, 4), torch.zeros(1, 4, dtype=torch.long),
                               torch.zeros(1, 4), torch.ones(1, 4, dtype=torch.bool), torch.ones(1, 4, dtype=torch.bool),
                               0, 0), "canvas"),
])
def test_ops_reject_bad_arguments(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def _commit_args(B=1, L=4):
    return (torch.zeros(B, L, dtype=torch.long), torch.zeros(B, L), torch.zeros(B, L, dtype=torch.long),
            torch.zeros(B, L), torch.ones(B, L, dtype=torch.bool), torch.ones(B, L, dtype=torch.bool))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("call,match", [
    # tensor parameters are read and checked like numbers (outside a CUDA graph capture), on both backends
    (lambda b: ops.sample_masked(torch.randn(1, 4, 8), torch.ones(1, 4, dtype=torch.bool), top_k=torch.tensor(0),
                                 backend=b), "top_k"),
    (lambda b: ops.sample_masked(torch.randn(1, 4, 8), torch.ones(1, 4, dtype=torch.bool),
                                 temperature=torch.tensor(float("nan")), backend=b), "temperature"),
    (lambda b: ops.sample_masked(torch.randn(1, 4, 8), torch.ones(1, 4, dtype=torch.bool),
                                 temperature=float("inf"), backend=b), "temperature"),
    (lambda b: ops.sample_masked(torch.randn(1, 4, 8), torch.ones(1, 4, dtype=torch.bool),
                                 top_p=torch.tensor(1.5), backend=b), "top_p"),
    (lambda b: ops.sample_masked(torch.randn(1, 4, 8), torch.ones(1, 4, dtype=torch.bool), seed=2**64, backend=b),
     "seed"),
    (lambda b: ops.commit_remask(*_commit_args(), 0, -1, backend=b), "mask_id"),
    (lambda b: ops.commit_remask(*_commit_args(), -2, 0, backend=b), "n_remask"),
])
def test_both_backends_refuse_the_same_inputs(backend, call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call(backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_row_with_no_token_never_writes_an_invalid_id(backend):
    # the README's bare-ops loop, one row NaN: sample_masked marks it -1, commit_remask leaves it masked
    canvas = torch.tensor([[5, MASK_ID, MASK_ID, MASK_ID]])
    confidence = torch.full((1, 4), float("nan"))
    logits = torch.randn(1, 4, V)
    logits[0, 2, 3] = float("nan")
    editable = torch.tensor([[False, True, True, True]])
    for _ in range(3):
        masked = canvas == MASK_ID
        tokens, scores = ops.sample_masked(logits, masked, temperature=1.0, seed=0, backend=backend)
        assert tokens[0, 2] == -1
        selected = ops.select_topk(scores.nan_to_num(-1.0), masked & editable, 3, seed=0, backend=backend)
        ops.commit_remask(canvas, confidence, tokens, scores, selected, editable, 0, MASK_ID, seed=0, backend=backend)
    assert canvas.min() >= 0 and canvas[0, 2] == MASK_ID and (canvas[0, [1, 3]] != MASK_ID).all()


def test_ids_outside_the_vocabulary_hooks_and_meta_tensors(tiny_roberta):
    sampler = Sampler(tiny_roberta, mask_token_id=4, steps=2)
    with pytest.raises(ValueError, match="prompt_ids hold id 1000"):
        sampler.generate(torch.tensor([[5, 1000]]), gen_length=2)
    with pytest.raises(ValueError, match="canvas_ids hold id 5000"):
        sampler.infill(torch.tensor([[5, 4, 5000]]))
    with pytest.raises(ValueError, match="meta"):
        sampler.generate(torch.tensor([[5, 6]], device="meta"), gen_length=2)
    with pytest.raises(TypeError, match="logits_hook must return"):
        sampler.generate(torch.tensor([[5, 6]]), gen_length=2, logits_hook=lambda step, canvas, logits: None)
    with pytest.raises(TypeError, match="logits_hook must return"):
        sampler.generate(torch.tensor([[5, 6]]), gen_length=2, logits_hook=lambda step, canvas, logits: logits[..., :5])
    with pytest.raises(ValueError, match="on_step returned a negative token id"):
        sampler.generate(torch.tensor([[5, 6]]), gen_length=2, on_step=lambda step, canvas, logits: canvas - 100)
    with pytest.raises(TypeError, match="graph_cache_size"):
        Sampler(tiny_roberta, mask_token_id=4, graph_cache_size="4")
    with pytest.raises(ValueError, match="canvas limit"):  # a callable says no length: not an allocator error
        Sampler(_oracle(), MASK_ID).generate(torch.tensor([[5]]), gen_length=10**12)


def test_ancestral_planning_does_not_depend_on_the_step_budget():
    import time

    sampler = Sampler(_oracle(), MASK_ID, unmask="ancestral", temperature=1.0, seed=0)
    start = time.perf_counter()
    out = sampler.generate(torch.tensor([[5, 6]]), gen_length=20, steps=10**9)
    assert time.perf_counter() - start < 60.0  # a hang guard: planning was a Python loop over the steps (hours)
    assert not (out.sequences == MASK_ID).any() and 1 <= out.nfe <= 20


@requires_kernels
def test_triton_backend_takes_fp64_and_strided_logits_like_torch():
    base = torch.randn(2, 3, 2 * V, dtype=torch.float64)
    mask = torch.ones(2, 3, dtype=torch.bool)
    for logits in (base[..., :V], base[..., ::2], base[..., ::2].float()):
        got = ops.sample_masked(logits, mask, temperature=1.0, top_k=5, seed=3, backend="triton")
        expected = ops.sample_masked(logits, mask, temperature=1.0, top_k=5, seed=3, backend="torch")
        assert torch.equal(got[0], expected[0])
        torch.testing.assert_close(got[1], expected[1], rtol=1e-4, atol=1e-6)


def _broken_demo_model(tmp_path, damage):
    import json
    import shutil

    from fastdiff.pretrained import DEMO_MODEL_DIR

    directory = tmp_path / "model"
    shutil.copytree(DEMO_MODEL_DIR, directory)
    config = json.loads((directory / "config.json").read_text())
    weights = directory / "model.safetensors"
    if damage == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "garbage weights":
        weights.write_bytes(b"not a safetensors file" * 50)
    elif damage == "pickle weights":
        weights.rename(directory / "pytorch_model.bin")
    elif damage == "more layers than the weights":
        config.update(num_hidden_layers=8)
    elif damage == "bad config field":
        config["hidden_size"] = "wide"
    elif damage == "smaller vocabulary":
        config["vocab_size"] = 100
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.mark.parametrize("damage,match", [
    ("truncated weights", "cannot load the model"),
    ("garbage weights", "cannot load the model"),
    ("pickle weights", "pickle"),
    ("more layers than the weights", "do not match its config.json .*missing keys: bert.encoder.layer.6"),
    ("bad config field", "hidden_size"),
    ("smaller vocabulary", "cannot load the model"),
])
def test_broken_model_directories_are_one_clear_error(tmp_path, damage, match):
    from fastdiff.pretrained import load_pretrained

    directory = _broken_demo_model(tmp_path, damage)
    with pytest.raises(ValueError, match=match) as raised:
        load_pretrained(directory, device="cpu")
    if damage != "pickle weights":
        assert str(directory) in str(raised.value)


def test_a_device_this_machine_lacks_is_named():
    from fastdiff.pretrained import load_pretrained

    with pytest.raises(ValueError, match="device"):
        load_pretrained(device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            Sampler.from_pretrained(device="cuda")


@pytest.mark.parametrize("dtype", [torch.int16, torch.int32, torch.uint16, torch.uint32, torch.uint64])
def test_ids_of_any_integer_dtype(tiny_roberta, dtype):
    """Ids of every integer dtype are taken (torch has no min / max of its wider unsigned ones), and
    ids past the vocabulary are named."""
    sampler = Sampler(tiny_roberta, mask_token_id=4, steps=2)
    out = sampler.generate(torch.tensor([[5, 6]], dtype=dtype), gen_length=2)
    assert out.sequences.dtype == torch.int64 and out.sequences[0, :2].tolist() == [5, 6]
    with pytest.raises(ValueError, match="prompt_ids hold id 1000"):
        sampler.generate(torch.tensor([[5, 1000]], dtype=dtype), gen_length=2)
