"""The peers fastdiff is measured against, written for the benchmark suite (not part of fastdiff's API).

* :class:`StaticCacheGPT2`: the strongest same-size autoregressive peer. A GPT-2 decode loop on a Hugging
  Face ``GPT2LMHeadModel``'s own weights with a static KV cache; on CUDA its whole decode step (argmax
  included) is captured in one CUDA graph and replayed, gpt-fast style. The prefill runs eagerly.
* :func:`seed_diffusion_generate`: the naive RoBERTa-diffusion loop of the blog post fastdiff starts from
  (Nathan Barry's RoBERTaDiffusion, first version): a fixed number of steps over a decreasing mask ratio,
  full-vocabulary fp32 softmax with top-k / top-p sampling done position by position in a Python loop,
  and a random choice of the positions that keep their sample.
* :func:`llada_style_generate`: the eager loop of LLaDA's reference ``generate``: fp64 Gumbel noise,
  fp64 softmax confidences and a per-row ``torch.topk`` in a Python loop.

The algorithms follow the public descriptions of those loops; the code is our own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F


@dataclass
class LoopOutput:
    """What a peer loop returns.

    Attributes:
        sequences: int64 ``[B, P + gen_length]``: prompt and generated tokens.
        nfe: model forward passes the loop ran.
    """

    sequences: torch.Tensor
    nfe: int


# --------------------------------------------------------------------------------------------------
# Autoregressive peer: GPT-2 with a static KV cache and a CUDA-graphed decode step
# --------------------------------------------------------------------------------------------------
class StaticCacheGPT2:
    """Greedy GPT-2 decoding with a static KV cache, gpt-fast style, on a Hugging Face GPT-2's weights.

    Every buffer the decode step reads or writes (the token fed in, its position, the KV cache, the
    output tokens) is allocated once, so the step has fixed shapes and addresses. On CUDA (and with
    ``cuda_graph`` left to ``None`` or ``True``) the step (embedding, the blocks, the final norm, the LM
    head, the argmax, and the bookkeeping that feeds the argmax back and advances the position) is
    captured once in a CUDA graph; generating is then one eager prefill and ``max_new_tokens - 1``
    graph replays, with the tokens cloned out of the static output buffer at the end. On the CPU the
    same step runs eagerly.

    The attention is computed over the whole cache with a mask of the positions written so far, so
    its shapes never change between steps. Prompts are not padded: every row has the same length.

    Args:
        model: a ``transformers`` ``GPT2LMHeadModel`` in eval mode (any float dtype and device). Its
            modules are called as they are, so the numbers match the Hugging Face forward.
        batch_size: rows per call.
        prompt_length: tokens in each prompt.
        max_new_tokens: tokens generated per row (``>= 1``).
        cuda_graph: ``None`` captures on CUDA and runs eagerly elsewhere; ``True`` requires CUDA.

    Example:
        >>> from transformers import GPT2Config, GPT2LMHeadModel
        >>> model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=2,
        ...                                    n_positions=32)).eval()
        >>> loop = StaticCacheGPT2(model, batch_size=2, prompt_length=4, max_new_tokens=6)
        >>> out = loop.generate(torch.randint(0, 64, (2, 4)))
        >>> out.sequences.shape, out.nfe
        (torch.Size([2, 10]), 6)
    """

    def __init__(self, model, batch_size: int, prompt_length: int, max_new_tokens: int,
                 cuda_graph: Optional[bool] = None):
        for name, value in (("batch_size", batch_size), ("prompt_length", prompt_length),
                            ("max_new_tokens", max_new_tokens)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        transformer = getattr(model, "transformer", None)
        if transformer is None or not hasattr(model, "lm_head"):
            raise TypeError(f"model must be a transformers GPT2LMHeadModel, got {type(model).__name__}")
        config = model.config
        total = prompt_length + max_new_tokens
        if total > config.n_positions:
            raise ValueError(f"prompt_length + max_new_tokens = {total} exceeds the model's "
                             f"{config.n_positions} positions")
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        if cuda_graph and self.device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs the model on a CUDA device, it is on {self.device}")
        self.model = model
        self.transformer = transformer
        self.batch_size, self.prompt_length, self.max_new_tokens = batch_size, prompt_length, max_new_tokens
        self.heads = config.n_head
        self.head_dim = config.n_embd // config.n_head
        layers = len(transformer.h)
        cache_shape = (layers, batch_size, self.heads, total, self.head_dim)
        self.key_cache = torch.zeros(cache_shape, dtype=self.dtype, device=self.device)
        self.value_cache = torch.zeros(cache_shape, dtype=self.dtype, device=self.device)
        self.cache_positions = torch.arange(total, device=self.device)
        self.tokens = torch.zeros(batch_size, 1, dtype=torch.int64, device=self.device)
        self.position = torch.zeros(1, dtype=torch.int64, device=self.device)
        self.write_index = torch.zeros(1, dtype=torch.int64, device=self.device)
        self.generated = torch.zeros(batch_size, max_new_tokens, dtype=torch.int64, device=self.device)
        self.uses_cuda_graph = self.device.type == "cuda" if cuda_graph is None else bool(cuda_graph)
        self.graph = None
        if self.uses_cuda_graph and max_new_tokens > 1:
            self._capture()

    # ----------------------------------------------------------------------------------------------
    def _forward(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Run the blocks on ``ids`` ``[B, T]`` at ``positions`` ``[T]``, writing their keys and values
        into the cache; returns the logits of the last position, ``[B, V]``."""
        B, T = ids.shape
        width = self.heads * self.head_dim
        allowed = self.cache_positions[None, :] <= positions[:, None]  # [T, total]: causal over the cache
        hidden = self.transformer.wte(ids) + self.transformer.wpe(positions)[None]
        for layer, block in enumerate(self.transformer.h):
            qkv = block.attn.c_attn(block.ln_1(hidden))
            query, key, value = (part.view(B, T, self.heads, self.head_dim).transpose(1, 2)
                                 for part in qkv.split(width, dim=-1))
            self.key_cache[layer].index_copy_(2, positions, key)
            self.value_cache[layer].index_copy_(2, positions, value)
            attended = F.scaled_dot_product_attention(query, self.key_cache[layer], self.value_cache[layer],
                                                      attn_mask=allowed)
            hidden = hidden + block.attn.c_proj(attended.transpose(1, 2).reshape(B, T, width))
            hidden = hidden + block.mlp(block.ln_2(hidden))
        return self.model.lm_head(self.transformer.ln_f(hidden[:, -1]))

    def _decode_step(self) -> None:
        """One token for every row, from and into the static buffers (the captured step)."""
        next_tokens = torch.argmax(self._forward(self.tokens, self.position), dim=-1)
        self.generated.index_copy_(1, self.write_index, next_tokens[:, None])
        self.tokens.copy_(next_tokens[:, None])
        self.position.add_(1)
        self.write_index.add_(1)

    @torch.no_grad()
    def _capture(self) -> None:
        self.position.fill_(self.prompt_length)
        self.write_index.fill_(1)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm-up off the default stream, as capture requires
            for _ in range(2):
                self._decode_step()
        torch.cuda.current_stream(self.device).wait_stream(side)
        self.position.fill_(self.prompt_length)
        self.write_index.fill_(1)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._decode_step()
        torch.cuda.synchronize(self.device)

    @torch.no_grad()
    def generate(self, prompt_ids: torch.Tensor) -> LoopOutput:
        """Greedy-decode ``max_new_tokens`` tokens after each prompt.

        Args:
            prompt_ids: int ``[batch_size, prompt_length]``, no padding.

        Returns:
            :class:`LoopOutput` with ``sequences`` ``[batch_size, prompt_length + max_new_tokens]`` and
            ``nfe = max_new_tokens`` (one prefill and ``max_new_tokens - 1`` decode steps).
        """
        if not isinstance(prompt_ids, torch.Tensor) or prompt_ids.is_floating_point():
            raise TypeError("prompt_ids must be an integer torch.Tensor")
        expected = (self.batch_size, self.prompt_length)
        if tuple(prompt_ids.shape) != expected:
            raise ValueError(f"prompt_ids must have shape {expected}, got {tuple(prompt_ids.shape)}")
        prompt = prompt_ids.to(device=self.device, dtype=torch.int64)
        first = torch.argmax(self._forward(prompt, self.cache_positions[:self.prompt_length]), dim=-1)
        self.generated[:, 0] = first
        self.tokens.copy_(first[:, None])
        self.position.fill_(self.prompt_length)
        self.write_index.fill_(1)
        for _ in range(self.max_new_tokens - 1):
            if self.graph is not None:
                self.graph.replay()
            else:
                self._decode_step()
        return LoopOutput(sequences=torch.cat([prompt, self.generated.clone()], dim=1), nfe=self.max_new_tokens)


# --------------------------------------------------------------------------------------------------
# Diffusion peers
# --------------------------------------------------------------------------------------------------
def _check_loop_args(prompt_ids, gen_length: int, steps: int, mask_token_id: int) -> torch.Tensor:
    if not isinstance(prompt_ids, torch.Tensor) or prompt_ids.is_floating_point():
        raise TypeError("prompt_ids must be an integer torch.Tensor")
    if prompt_ids.dim() != 2:
        raise ValueError(f"prompt_ids must have shape [B, P], got {tuple(prompt_ids.shape)}")
    for name, value in (("gen_length", gen_length), ("steps", steps), ("mask_token_id", mask_token_id)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if gen_length < 1:
        raise ValueError(f"gen_length must be >= 1, got {gen_length}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if bool((prompt_ids == mask_token_id).any()):
        raise ValueError(f"prompt_ids contain mask_token_id={mask_token_id}")
    return prompt_ids.to(torch.int64)


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


def _top_k_top_p_filter(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """``[R, V]`` logits with every token outside the top-k, then outside the nucleus, set to ``-inf``.

    A token is dropped by top-p when the tokens sorted before it already hold more than ``top_p`` of
    the probability, so the token that crosses ``top_p`` is kept (the blog loop's rule).
    """
    kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
    logits = logits.masked_fill(logits < kth, float("-inf"))
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    sorted_probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
    sorted_logits = sorted_logits.masked_fill(mass_before > top_p, float("-inf"))
    return torch.empty_like(logits).scatter_(-1, order, sorted_logits)


def _draw(logits: torch.Tensor, mask_token_id: int, top_k: int, top_p: float, generator) -> torch.Tensor:
    """One token per row of ``[R, V]`` logits: fp32, the mask token removed, top-k / top-p, multinomial."""
    rows = logits.float()
    rows[:, mask_token_id] = float("-inf")
    probs = torch.softmax(_top_k_top_p_filter(rows, top_k, top_p), dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


@torch.no_grad()
def seed_diffusion_generate(model, prompt_ids: torch.Tensor, gen_length: int, mask_token_id: int, *,
                            steps: int = 10, top_k: int = 50, top_p: float = 0.95,
                            generator: Optional[torch.Generator] = None, batched: bool = False) -> LoopOutput:
    """The blog post's naive RoBERTa-diffusion sampling loop.

    The canvas is the prompt followed by ``gen_length`` mask tokens. Step ``s`` (``0 .. steps-1``) runs
    the whole masked LM on the canvas, then, position by position in a Python loop over the whole
    canvas (prompt included, as the blog did), filters that position's fp32 logits with top-k and
    top-p over the full vocabulary, takes the fp32 softmax and draws a token with
    ``torch.multinomial``. Each generated position then keeps its new sample, or is re-masked with
    probability ``(steps - 1 - s) / steps`` (0.9, 0.8, ..., 0 for 10 steps); the last step keeps every
    sample, so no mask is left. Tokens committed at one step are redrawn at the next, as in the blog.

    Differences from the blog, both needed for a fair, terminating benchmark: rows of a batch are
    processed together at each position (the blog ran one row), and the mask token itself is never
    drawn (a random-init model could otherwise leave masks in the output). ``batched=True`` is the loop
    as a careful user vectorises it: the same fp32 filters, softmax and multinomial, over every
    generated position of the batch in one call per step (no Python loop over positions).

    Args:
        model: a Hugging Face masked LM (``model(input_ids=..., attention_mask=...).logits``).
        prompt_ids: int ``[B, P]``.
        gen_length: tokens to generate per row.
        mask_token_id: the mask token.
        steps: forward passes (the blog used 10).
        top_k, top_p: the blog's filters (50, 0.95).
        generator: torch generator on the model's device, for reproducible draws.
        batched: draw every generated position at once instead of position by position.

    Returns:
        :class:`LoopOutput` with ``sequences`` ``[B, P + gen_length]`` and ``nfe == steps``.

    Example:
        >>> from transformers import RobertaConfig, RobertaForMaskedLM
        >>> model = RobertaForMaskedLM(RobertaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
        ...     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)).eval()
        >>> out = seed_diffusion_generate(model, torch.tensor([[0, 10, 11]]), 8, mask_token_id=99)
        >>> out.sequences.shape, out.nfe
        (torch.Size([1, 11]), 10)
    """
    prompt = _check_loop_args(prompt_ids, gen_length, steps, mask_token_id)
    device = _model_device(model)
    prompt = prompt.to(device)
    B, P = prompt.shape
    L = P + gen_length
    canvas = torch.cat([prompt, torch.full((B, gen_length), mask_token_id, dtype=torch.int64, device=device)], 1)
    attention = torch.ones_like(canvas)
    generated = (torch.arange(L, device=device) >= P)[None, :].expand(B, L)
    for step in range(steps):
        mask_ratio = (steps - 1 - step) / steps
        logits = model(input_ids=canvas, attention_mask=attention).logits
        drawn = torch.empty_like(canvas)
        if batched:
            drawn[:, P:] = _draw(logits[:, P:].reshape(B * gen_length, -1), mask_token_id, top_k, top_p,
                                 generator).view(B, gen_length)
        else:
            for position in range(L):
                drawn[:, position] = _draw(logits[:, position], mask_token_id, top_k, top_p, generator)
        remask = torch.rand(B, L, device=device, generator=generator) < mask_ratio
        canvas = torch.where(generated, torch.where(remask, torch.full_like(canvas, mask_token_id), drawn), canvas)
    return LoopOutput(sequences=canvas, nfe=steps)


def linear_transfer_counts(n_tokens: int, steps: int) -> list:
    """Tokens committed at each step: ``n_tokens`` split evenly over ``steps``, remainder first (LLaDA's
    linear schedule). ``steps`` larger than ``n_tokens`` gives trailing zeros.

    Example:
        >>> linear_transfer_counts(10, 4)
        [3, 3, 2, 2]
    """
    base, remainder = divmod(n_tokens, steps)
    return [base + (1 if i < remainder else 0) for i in range(steps)]


@torch.no_grad()
def llada_style_generate(model, prompt_ids: torch.Tensor, gen_length: int, mask_token_id: int, *,
                         steps: int, temperature: float = 0.0,
                         generator: Optional[torch.Generator] = None) -> LoopOutput:
    """LLaDA's reference sampling loop (one block, low-confidence remasking), eager.

    Each step runs the model on the canvas, casts the logits to fp64, adds Gumbel noise the way
    LLaDA does (``exp(logits) / (-log u) ** temperature`` with fp64 uniforms ``u``), takes the argmax as
    the drawn token, measures its fp64 softmax probability as the confidence, and commits, row by row
    with ``torch.topk`` in a Python loop, the most confident masked positions; the number per step
    follows :func:`linear_transfer_counts`. The mask token is never drawn (random-init models could
    otherwise leave masks behind).

    Args:
        model: a Hugging Face masked LM (``model(input_ids).logits``).
        prompt_ids: int ``[B, P]``.
        gen_length: tokens to generate per row.
        mask_token_id: the mask token.
        steps: forward passes (clamped to ``gen_length``).
        temperature: Gumbel temperature; ``0`` is greedy (the noise is still drawn, as in LLaDA).
        generator: torch generator on the model's device.

    Returns:
        :class:`LoopOutput` with ``sequences`` ``[B, P + gen_length]`` and ``nfe == min(steps, gen_length)``.

    Example:
        >>> from transformers import RobertaConfig, RobertaForMaskedLM
        >>> model = RobertaForMaskedLM(RobertaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
        ...     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)).eval()
        >>> out = llada_style_generate(model, torch.tensor([[0, 10, 11]]), 8, mask_token_id=99, steps=4)
        >>> out.sequences.shape, out.nfe
        (torch.Size([1, 11]), 4)
    """
    prompt = _check_loop_args(prompt_ids, gen_length, steps, mask_token_id)
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    device = _model_device(model)
    prompt = prompt.to(device)
    B, P = prompt.shape
    steps = min(steps, gen_length)
    canvas = torch.cat([prompt, torch.full((B, gen_length), mask_token_id, dtype=torch.int64, device=device)], 1)
    for count in linear_transfer_counts(gen_length, steps):
        masked = canvas == mask_token_id
        logits = model(input_ids=canvas).logits.to(torch.float64)
        logits[..., mask_token_id] = float("-inf")
        uniform = torch.rand(logits.shape, dtype=torch.float64, device=device, generator=generator)
        drawn = torch.argmax(logits.exp() / (-torch.log(uniform)) ** temperature, dim=-1)
        probs = torch.softmax(logits, dim=-1)
        confidence = torch.gather(probs, -1, drawn[..., None])[..., 0]
        drawn = torch.where(masked, drawn, canvas)
        confidence = torch.where(masked, confidence, torch.full_like(confidence, float("-inf")))
        commit = torch.zeros_like(masked)
        for row in range(B):
            commit[row, torch.topk(confidence[row], k=count).indices] = True
        canvas = torch.where(commit, drawn, canvas)
    return LoopOutput(sequences=canvas, nfe=steps)
