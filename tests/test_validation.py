"""Bad input gets a ValueError / TypeError naming the argument, and the caller's tensors stay as they were."""
import pytest
import torch

from conftest import MASK_ID, OracleModel
from fastdiff import Sampler, SamplerConfig, ops

V = 16


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
        sampler.generate([[5, 6]], gen_length=4)
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
