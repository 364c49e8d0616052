"""The benchmark peers of :mod:`fastdiff.bench.peers`: the static-cache GPT-2 loop decodes exactly what Hugging
Face greedy ``generate`` decodes, and the naive and LLaDA-style diffusion loops fill the whole canvas in
the forward passes and with the schedules they claim."""
import math

import pytest
import torch

from conftest import requires_cuda
from fastdiff.bench import peers

VOCAB = 1000  # tiny_roberta's vocabulary
MASK = VOCAB - 1


@pytest.fixture(autouse=True)
def one_thread():
    """The loops run hundreds of tiny ops; on a shared 2-core machine one thread keeps them fast."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _tiny_gpt2(seed: int, vocab: int = 128):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    # no EOS: HF generate then runs exactly max_new_tokens steps, with no EOS suppression to mirror
    config = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=None,
                        eos_token_id=None)
    return GPT2LMHeadModel(config).eval()


def _assert_same_greedy_tokens(model, ours: torch.Tensor, theirs: torch.Tensor, prompt_length: int):
    """Equal tokens, except that a row may part from HF's at a near tie of HF's own logits (our forward
    differs from HF's by float rounding, ~1e-7, so only a tie that close may go the other way)."""
    for row in range(ours.shape[0]):
        differing = (ours[row] != theirs[row]).nonzero()
        if differing.numel() == 0:
            continue
        first = int(differing[0])
        assert first >= prompt_length, "the prompt was changed"
        with torch.no_grad():
            logits = model(theirs[row:row + 1, :first]).logits[0, -1]
        top2 = torch.topk(logits, 2).values
        assert float(top2[0] - top2[1]) < 1e-5, (
            f"row {row} differs from HF greedy at position {first} with no near tie "
            f"(ours {int(ours[row, first])}, HF {int(theirs[row, first])})")


@pytest.mark.parametrize("batch,prompt_length,new_tokens", [(1, 5, 20), (3, 7, 12), (4, 1, 9)])
def test_static_cache_gpt2_greedy_equals_hf_generate(fresh_seed, batch, prompt_length, new_tokens):
    model = _tiny_gpt2(fresh_seed)
    prompts = torch.randint(0, 128, (batch, prompt_length), generator=torch.Generator().manual_seed(fresh_seed))
    original = prompts.clone()
    hf = model.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=new_tokens,
                        do_sample=False)
    loop = peers.StaticCacheGPT2(model, batch, prompt_length, new_tokens)
    assert loop.graph is None  # CPU: eager step
    out = loop.generate(prompts)
    assert out.sequences.shape == hf.shape == (batch, prompt_length + new_tokens)
    assert out.nfe == new_tokens
    assert torch.equal(prompts, original)
    _assert_same_greedy_tokens(model, out.sequences, hf, prompt_length)
    # a second call reuses the buffers and gives the same tokens
    assert torch.equal(loop.generate(prompts).sequences, out.sequences)


@requires_cuda
def test_static_cache_gpt2_cuda_graph_equals_hf_generate(fresh_seed):
    model = _tiny_gpt2(fresh_seed).cuda()
    prompts = torch.randint(0, 128, (3, 6), generator=torch.Generator().manual_seed(fresh_seed)).cuda()
    hf = model.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=16, do_sample=False)
    loop = peers.StaticCacheGPT2(model, 3, 6, 16)
    assert loop.graph is not None
    for _ in range(2):  # replays from a fresh prefill each call
        _assert_same_greedy_tokens(model, loop.generate(prompts).sequences, hf, 6)


def test_static_cache_gpt2_rejects_bad_arguments():
    model = _tiny_gpt2(0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        peers.StaticCacheGPT2(model, 1, 4, 0)
    with pytest.raises(TypeError, match="batch_size"):
        peers.StaticCacheGPT2(model, 1.0, 4, 3)
    with pytest.raises(ValueError, match="positions"):
        peers.StaticCacheGPT2(model, 1, 40, 30)
    with pytest.raises(ValueError, match="cuda_graph"):
        peers.StaticCacheGPT2(model, 1, 4, 3, cuda_graph=True)
    loop = peers.StaticCacheGPT2(model, 2, 4, 3)
    with pytest.raises(ValueError, match="prompt_ids must have shape"):
        loop.generate(torch.zeros(1, 4, dtype=torch.int64))


class _InputRecorder:
    """Forward pre-hook keeping the ``input_ids`` of every model call."""

    def __init__(self, model):
        self.inputs = []
        self.handle = model.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.inputs.append(ids.clone())


def _prompts(seed: int, batch: int, length: int, vocab: int = VOCAB) -> torch.Tensor:
    return torch.randint(4, vocab - 1, (batch, length), generator=torch.Generator().manual_seed(seed))


class _BagOfTokensLM(torch.nn.Module):
    """A cheap stand-in for a masked LM (embedding + linear head) for the loops' schedule tests."""

    def __init__(self, vocab: int, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.embed = torch.nn.Embedding(vocab, 8)
        self.head = torch.nn.Linear(8, vocab)

    def forward(self, input_ids, attention_mask=None):
        return type("Out", (), {"logits": self.head(self.embed(input_ids))})()


@pytest.mark.parametrize("batched", [False, True])
def test_seed_loop_fills_the_canvas_in_its_steps(tiny_roberta, fresh_seed, batched):
    prompts = _prompts(fresh_seed, 3, 6)
    original = prompts.clone()
    recorder = _InputRecorder(tiny_roberta)
    generator = torch.Generator().manual_seed(fresh_seed)
    out = peers.seed_diffusion_generate(tiny_roberta, prompts, 14, MASK, steps=10, generator=generator, batched=batched)
    assert out.nfe == 10 == len(recorder.inputs)
    assert out.sequences.shape == (3, 20)
    assert not (out.sequences == MASK).any()
    assert torch.equal(out.sequences[:, :6], prompts) and torch.equal(prompts, original)
    assert (recorder.inputs[0][:, 6:] == MASK).all()  # the first step sees a fully masked span


@pytest.mark.parametrize("batched", [False, True])
def test_seed_loop_remasks_the_scheduled_fraction(fresh_seed, batched):
    """Before step s (s >= 1) each generated position is masked with probability (steps - s) / steps,
    independently: 0.9, 0.8, ... of 16 x 30 positions, within 5 binomial standard deviations."""
    steps, batch, gen_length, vocab = 10, 16, 30, 64
    model = _BagOfTokensLM(vocab, fresh_seed)
    recorder = _InputRecorder(model)
    generator = torch.Generator().manual_seed(fresh_seed)
    out = peers.seed_diffusion_generate(model, _prompts(fresh_seed, batch, 4, vocab), gen_length, vocab - 1,
                                        steps=steps, generator=generator, batched=batched)
    assert not (out.sequences == vocab - 1).any()
    n = batch * gen_length
    for step in range(1, steps):
        ratio = (steps - step) / steps
        masked = int((recorder.inputs[step][:, 4:] == vocab - 1).sum())
        assert abs(masked - n * ratio) <= 5 * math.sqrt(n * ratio * (1 - ratio)), (step, masked)


@pytest.mark.parametrize("batched", [False, True])
def test_seed_loop_samples_inside_top_k(batched):
    """With top_k=1 every position draws its argmax: the model's logits decide the whole canvas."""
    table = torch.randn(12, 30, generator=torch.Generator().manual_seed(3))

    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, attention_mask=None):
            logits = table[: input_ids.shape[1]].expand(input_ids.shape[0], -1, -1).clone()
            logits[..., 29] = 100.0  # the mask token is never drawn, however likely
            return type("Out", (), {"logits": logits})()

    out = peers.seed_diffusion_generate(Fixed(), torch.tensor([[1, 2]]), 10, 29, steps=4, top_k=1, top_p=1.0,
                                        batched=batched)
    expected = table[:12, :29].argmax(dim=-1)
    assert torch.equal(out.sequences[0, 2:], expected[2:])


def test_top_k_top_p_filter_keeps_the_nucleus():
    probs = torch.tensor([[0.4, 0.3, 0.2, 0.06, 0.04]])
    logits = probs.log()
    kept = lambda k, p: torch.isfinite(peers._top_k_top_p_filter(logits, k, p))[0].tolist()  # noqa: E731
    assert kept(5, 0.95) == [True, True, True, True, False]  # 0.96 before the last token
    assert kept(5, 0.5) == [True, True, False, False, False]  # the token crossing 0.5 is kept
    assert kept(2, 0.99) == [True, True, False, False, False]
    assert kept(5, 0.3) == [True, False, False, False, False]


def test_linear_transfer_counts():
    assert peers.linear_transfer_counts(10, 4) == [3, 3, 2, 2]
    assert peers.linear_transfer_counts(240, 24) == [10] * 24
    assert peers.linear_transfer_counts(3, 5) == [1, 1, 1, 0, 0]


@pytest.mark.parametrize("steps,gen_length", [(4, 20), (20, 20), (7, 20), (15, 12)])
def test_llada_loop_commits_its_linear_schedule(tiny_roberta, fresh_seed, steps, gen_length):
    prompts = _prompts(fresh_seed, 3, 5)
    original = prompts.clone()
    recorder = _InputRecorder(tiny_roberta)
    generator = torch.Generator().manual_seed(fresh_seed)
    out = peers.llada_style_generate(tiny_roberta, prompts, gen_length, MASK, steps=steps, temperature=0.8,
                                     generator=generator)
    expected_steps = min(steps, gen_length)
    assert out.nfe == expected_steps == len(recorder.inputs)
    assert not (out.sequences == MASK).any()
    assert torch.equal(out.sequences[:, :5], prompts) and torch.equal(prompts, original)
    masked_before = [(ids == MASK).sum(dim=-1) for ids in recorder.inputs] + [torch.zeros(3, dtype=torch.int64)]
    committed = [(a - b).tolist() for a, b in zip(masked_before, masked_before[1:])]
    schedule = peers.linear_transfer_counts(gen_length, expected_steps)
    assert committed == [[count] * 3 for count in schedule]


def test_llada_loop_greedy_commits_the_most_confident_argmax(tiny_roberta, fresh_seed):
    """At temperature 0 the first step commits, per row, the masked positions whose argmax probability
    is highest, each with its argmax token."""
    prompts = _prompts(fresh_seed, 2, 4)
    recorder = _InputRecorder(tiny_roberta)
    out = peers.llada_style_generate(tiny_roberta, prompts, 12, MASK, steps=4, temperature=0.0)
    with torch.no_grad():
        logits = tiny_roberta(input_ids=recorder.inputs[0]).logits.double()
    logits[..., MASK] = float("-inf")
    probs = torch.softmax(logits, dim=-1)
    confidence, argmax = probs.max(dim=-1)
    second_input = recorder.inputs[1]
    generated = torch.arange(16) >= 4
    for row in range(2):
        best = torch.topk(torch.where(generated, confidence[row], torch.full_like(confidence[row], -1.0)), 3).indices
        committed = ((second_input[row] != MASK) & generated).nonzero()[:, 0]
        assert sorted(committed.tolist()) == sorted(best.tolist())
        assert torch.equal(second_input[row, best], argmax[row, best])
    assert not (out.sequences == MASK).any()


@pytest.mark.parametrize("function", [peers.seed_diffusion_generate, peers.llada_style_generate])
def test_diffusion_loops_reject_bad_arguments(tiny_roberta, function):
    prompts = torch.tensor([[5, 6, 7]])
    with pytest.raises(ValueError, match="gen_length"):
        function(tiny_roberta, prompts, 0, MASK, steps=2)
    with pytest.raises(ValueError, match="steps"):
        function(tiny_roberta, prompts, 4, MASK, steps=0)
    with pytest.raises(TypeError, match="prompt_ids"):
        function(tiny_roberta, prompts.float(), 4, MASK, steps=2)
    with pytest.raises(ValueError, match="mask_token_id"):
        function(tiny_roberta, torch.tensor([[5, MASK]]), 4, MASK, steps=2)
