"""Per-row seeds: a row's draws depend on its own seed and prompt, not on the other rows of the batch or
on its left padding; on the torch and Triton backends, eagerly and through the graph runner."""
import pytest
import torch

from conftest import requires_cuda, requires_kernels
from fastdiff import Sampler, graphs, sampler as sampler_module
from test_fast_path import FakeCapture

BACKENDS = ["torch", pytest.param("triton", marks=requires_kernels)]
PROMPTS = [[0, 11, 12, 13, 14, 15], [0, 21, 22], [0, 31, 32, 33, 34]]
SEEDS = [11, -3, 2**40]

# every rule that draws noise: tokens, Gumbel positions, remasking, ancestral counts, early-ending blocks
RULES = {
    "sampling": dict(temperature=1.0, top_k=50, top_p=0.9),
    "gumbel positions + remask": dict(temperature=0.8, position_temperature=0.5, remask="low_confidence",
                                      remask_temperature=0.5),
    "ancestral": dict(unmask="ancestral", temperature=1.0),
    "threshold + blocks": dict(temperature=1.0, threshold=0.002, block_length=5),
    "random + eos": dict(unmask="random", temperature=1.5, eos_token_id=[7, 8, 9, 10, 12, 13]),
    "resample binomial": dict(unmask="resample", transfer_counts="binomial", temperature=1.0),
    "mask_predict + blocks": dict(unmask="mask_predict", temperature=1.0, block_length=5),
    "token editing": dict(temperature=1.0, threshold=0.01, edit_threshold=0.01, max_edit_steps=4, block_length=5),
}


def _left_padded(rows, device="cpu"):
    """The prompts left-padded with id 1 to one length, and their attention mask."""
    P = max(len(r) for r in rows)
    batch = torch.full((len(rows), P), 1)
    attention = torch.zeros(len(rows), P, dtype=torch.long)
    for i, r in enumerate(rows):
        batch[i, P - len(r):] = torch.tensor(r)
        attention[i, P - len(r):] = 1
    return batch.to(device), attention.to(device)


def _assert_rows_match_alone(sampler, out, gen_length, seeds, device="cpu"):
    for i, (row, seed) in enumerate(zip(PROMPTS, seeds)):
        alone = sampler.generate(torch.tensor([row], device=device), gen_length=gen_length, seed=seed).sequences[0]
        assert torch.equal(out.sequences[i, -gen_length:], alone[len(row):]), f"row {i} differs from itself alone"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rule", list(RULES))
def test_a_padded_row_with_its_seed_draws_what_it_draws_alone(tiny_roberta, backend, rule):
    if backend == "triton" and rule != "gumbel positions + remask":
        pytest.skip("the interpreter is slow: this rule draws in all three kernels")
    sampler = Sampler(tiny_roberta, mask_token_id=4, steps=5, backend=backend, **RULES[rule])
    batch, attention = _left_padded(PROMPTS)
    out = sampler.generate(batch, gen_length=10, attention_mask=attention, seed=SEEDS)
    assert not (out.sequences == 4).any()
    _assert_rows_match_alone(sampler, out, 10, SEEDS)
    # the batch's order does not matter either
    flipped = sampler.generate(batch.flip(0), gen_length=10, attention_mask=attention.flip(0), seed=SEEDS[::-1])
    assert torch.equal(flipped.sequences.flip(0), out.sequences)


def test_an_int_seed_is_consecutive_row_seeds_and_rows_differ(tiny_roberta):
    sampler = Sampler(tiny_roberta, mask_token_id=4, steps=6, temperature=1.0)
    batch, attention = _left_padded(PROMPTS)
    by_int = sampler.generate(batch, gen_length=12, attention_mask=attention, seed=100).sequences
    by_rows = sampler.generate(batch, gen_length=12, attention_mask=attention, seed=[100, 101, 102]).sequences
    as_tensor = sampler.generate(batch, gen_length=12, attention_mask=attention,
                                 seed=torch.tensor([100, 101, 102])).sequences
    assert torch.equal(by_int, by_rows) and torch.equal(by_int, as_tensor)
    # identical prompts under one int seed still draw different noise per row
    copies = sampler.generate(torch.tensor([PROMPTS[0]] * 4), gen_length=12, seed=5).sequences
    assert len({tuple(row.tolist()) for row in copies}) == 4
    same_seed = sampler.generate(torch.tensor([PROMPTS[0]] * 2), gen_length=12, seed=[5, 5]).sequences
    assert torch.equal(same_seed[0], same_seed[1])


def test_infill_rows_with_their_seeds_fill_as_they_do_alone(tiny_roberta):
    # without blocks and with steps below every row's hole count, each row's plan is its own
    sampler = Sampler(tiny_roberta, mask_token_id=4, steps=3, temperature=1.0, position_temperature=0.3)
    rows = [[0, 4, 4, 50, 4, 4, 60], [0, 70, 4, 4, 4], [0, 4, 80, 4, 4, 4, 4, 90]]
    canvas, attention = _left_padded(rows)
    out = sampler.infill(canvas, attention_mask=attention, seed=SEEDS)
    for i, (row, seed) in enumerate(zip(rows, SEEDS)):
        alone = sampler.infill(torch.tensor([row]), seed=seed).sequences[0]
        assert torch.equal(out.sequences[i, -len(row):], alone)


@pytest.mark.parametrize("rule", ["sampling", "ancestral", "threshold + blocks"])
def test_graph_runner_keeps_rows_independent(tiny_roberta, monkeypatch, rule):
    monkeypatch.setattr(graphs, "capture_step", FakeCapture())
    monkeypatch.setattr(sampler_module.Sampler, "_graphs_wanted",
                        lambda self, hooks, device, backend, streaming: self.cuda_graphs is not False)
    graphed = Sampler(tiny_roberta, mask_token_id=4, steps=5, **RULES[rule])
    eager = Sampler(tiny_roberta, mask_token_id=4, steps=5, cuda_graphs=False, **RULES[rule])
    batch, attention = _left_padded(PROMPTS)
    out = graphed.generate(batch, gen_length=10, attention_mask=attention, seed=SEEDS)
    _assert_rows_match_alone(eager, out, 10, SEEDS)


@requires_cuda
def test_captured_graphs_keep_rows_independent_on_cuda(tiny_roberta):
    model = tiny_roberta.to("cuda")
    sampler = Sampler(model, mask_token_id=4, steps=5, backend="triton", cuda_graphs=True, **RULES["sampling"])
    batch, attention = _left_padded(PROMPTS, "cuda")
    seeds = torch.tensor(SEEDS, device="cuda")
    out = sampler.generate(batch, gen_length=10, attention_mask=attention, seed=seeds)
    # tokens can only part at near-ties of logit + noise, which a different batch shape may round apart
    for i, (row, seed) in enumerate(zip(PROMPTS, SEEDS)):
        alone = sampler.generate(torch.tensor([row], device="cuda"), gen_length=10, seed=seed).sequences[0]
        assert (out.sequences[i, -10:] == alone[len(row):]).float().mean() >= 0.9


def test_seed_count_must_match_the_batch(tiny_roberta):
    sampler = Sampler(tiny_roberta, mask_token_id=4, steps=2, temperature=1.0)
    with pytest.raises(ValueError, match="seed must hold one seed per row"):
        sampler.generate(torch.tensor([PROMPTS[1]] * 2), gen_length=4, seed=[1, 2, 3])
    with pytest.raises(TypeError, match="seed"):
        sampler.generate(torch.tensor([PROMPTS[1]]), gen_length=4, seed=torch.tensor([1.0]))
    with pytest.raises(ValueError, match="seed"):
        sampler.generate(torch.tensor([PROMPTS[1]]), gen_length=4, seed=[])
