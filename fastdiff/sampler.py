"""The diffusion sampler: generation from a prompt and infilling on a fixed canvas."""
from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch

from fastdiff import graphs, ops
from fastdiff.backend import cuda_graphs_supported, resolve_backend
from fastdiff.config import SamplerConfig
from fastdiff.model import ModelRunner
from fastdiff.schedule import allocate_steps, resolve_schedule, reveal_steps, schedule_counts

# With early stopping possible (EOS, threshold), a graphed run reads the device "work left" flag
# every this many steps: one host synchronisation per check.
GRAPH_CHECK_EVERY = 4
# Smallest row bucket of the masked-row head under CUDA graphs (buckets are powers of two).
MIN_ROW_BUCKET = 16


# longest canvas a row may have: beyond any bidirectional model's context, and the per-step [B, L]
# tensors and plan stay small enough to allocate
MAX_CANVAS = 1 << 20


@dataclass
class GenerationOutput:
    """What :meth:`Sampler.generate` and :meth:`Sampler.infill` return.

    Attributes:
        sequences: int64 ``[B, L]``: the whole canvas (prompt and generation); no mask token left.
        nfe: model forward passes actually run (a CFG pass, which batches both inputs, counts once).
        history: with ``return_history=True``, the canvas after every step; else ``None``.
        confidences: fp32 ``[B, L]``: the score each generated token had when it was committed; NaN at
            prompt, pad and fixed positions and at positions filled after an EOS.
        finished: bool ``[B]``: rows that ended at an EOS (always false without ``stop_at_eos``).
    """

    sequences: torch.Tensor
    nfe: int
    history: Optional[List[torch.Tensor]]
    confidences: torch.Tensor
    finished: torch.Tensor


@dataclass
class _Plan:
    """Steps laid out over blocks, as device tensors so that a step needs no host decision."""

    num_steps: int  # G, the steps planned; the step tensors are padded to a power of two past G
    block_masks: torch.Tensor  # bool [nb, L]: the positions of each block
    block_first_step: torch.Tensor  # int64 [nb]
    step_block: torch.Tensor  # int64 [capacity]
    step_last: torch.Tensor  # bool [capacity]: last step of its block
    target_after: torch.Tensor  # int64 [B, capacity]: masked positions the block should have left after the step
    step_counter: torch.Tensor  # int64 [capacity]: the random-stream counter of each step, its index in the
    # full plan (steps dropped from the ancestral plan keep their numbers, so a row's noise does not
    # depend on which steps the other rows of the batch need)
    row_bound: List[int]  # host, [G]: most positions a step can commit (all rows), for the masked-row head


@dataclass
class _State:
    canvas: torch.Tensor  # int64 [B, L]
    confidence: torch.Tensor  # fp32 [B, L]
    editable: torch.Tensor  # bool [B, L]: positions the sampler fills
    fixed: torch.Tensor  # bool [B, L]: prompt / fixed tokens (masked in the unconditional CFG input)
    attention_mask: Optional[torch.Tensor]  # int64 [B, L], None without padding
    position_ids: Optional[torch.Tensor]
    done: torch.Tensor  # bool [B]
    step: torch.Tensor  # int64 []: the plan step to run next
    nfe: torch.Tensor  # int64 []: steps run that had work
    work_left: torch.Tensor  # bool []: some editable position is still masked in an unfinished row
    rng: torch.Tensor  # int64 [B, 3]: each row's (seed, counter, origin), see fastdiff.ops
    bad_step: torch.Tensor  # int64 []: first step with NaN / inf logits, -1 if none
    params: Dict[str, torch.Tensor]  # the config's numbers as device scalars (graphs reuse across values)
    suppress_ids: torch.Tensor  # int64 [S]
    defer_ids: Optional[torch.Tensor]  # int64 [D]
    eos_ids: Optional[torch.Tensor]  # int64 [E]


class Sampler:
    """Sampling from a masked (absorbing-state) diffusion language model.

    Args:
        model: a Hugging Face model whose output has ``.logits`` (e.g. ``RobertaForMaskedLM``), or any
            callable ``(input_ids, attention_mask) -> logits [B, L, V]``, or a :class:`ModelRunner`.
        mask_token_id: id of the mask (absorbing) token.
        config: a :class:`SamplerConfig`; ``None`` for the defaults.
        backend: ``"auto"`` (Triton kernels on CUDA, else PyTorch), ``"torch"`` or ``"triton"``.
        cuda_graphs: ``"auto"`` (on CUDA with the Triton backend and no per-step Python hook),
            ``True`` or ``False``. Each denoising step (forward, sampling, selection, commit) is
            captured once per batch, canvas length, dtype and config structure, reused across calls
            (an LRU cache of ``graph_cache_size`` entries), and replayed with no host synchronisation
            except an early-stop check every few steps when EOS or a threshold can end the call early.
            If capture fails, the sampler warns once and runs eagerly.
        masked_head: for known ``*ForMaskedLM`` classes, run the LM head only on the rows that can be
            committed this step (masked positions of the active block), padded to a static bucket;
            the logits of those rows are those of the full head. ``False`` runs the whole model.
        compile: ``torch.compile`` the model (``"max-autotune-no-cudagraphs"`` on CUDA, so that it does
            not fight fastdiff's own graphs; the default mode elsewhere).
        graph_cache_size: captured configurations kept.
        **overrides: :class:`SamplerConfig` fields.

    Example:
        >>> from transformers import RobertaConfig, RobertaForMaskedLM
        >>> model = RobertaForMaskedLM(RobertaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
        ...     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)).eval()
        >>> sampler = Sampler(model, mask_token_id=4, steps=4)
        >>> out = sampler.generate(torch.tensor([[0, 10, 11]]), gen_length=8)
        >>> out.sequences.shape, out.nfe
        (torch.Size([1, 11]), 4)
    """

    def __init__(self, model: Callable, mask_token_id: int, config: Optional[SamplerConfig] = None, *,
                 backend: str = "auto", cuda_graphs="auto", masked_head: bool = True, compile: bool = False,
                 graph_cache_size: int = 4, **overrides):
        self.runner = model if isinstance(model, ModelRunner) else ModelRunner(model)
        if isinstance(mask_token_id, bool) or not isinstance(mask_token_id, int):
            raise TypeError(f"mask_token_id must be an int, got {type(mask_token_id).__name__}")
        vocab = self.runner.vocab_size
        if mask_token_id < 0 or (vocab is not None and mask_token_id >= vocab):
            raise ValueError(f"mask_token_id={mask_token_id} is outside the vocabulary [0, {vocab})")
        if config is not None and not isinstance(config, SamplerConfig):
            raise TypeError(f"config must be a SamplerConfig, got {type(config).__name__}")
        if backend not in ("auto", "torch", "triton"):
            raise ValueError(f"backend must be 'auto', 'torch' or 'triton', got {backend!r}")
        if cuda_graphs not in ("auto", True, False):
            raise ValueError(f"cuda_graphs must be 'auto', True or False, got {cuda_graphs!r}")
        for name, flag in (("masked_head", masked_head), ("compile", compile)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
        self.mask_token_id = mask_token_id
        self.tokenizer = None  # set by from_pretrained
        self.backend = backend
        self.cuda_graphs = cuda_graphs
        self.masked_head = masked_head
        self.config = (config or SamplerConfig()).replace(**overrides)
        self._check_eos(self.config)
        self._graphs = graphs.GraphCache(graph_cache_size)
        self._graph_failures = set()
        if compile:
            device = self.runner.device
            self.runner.compile("max-autotune-no-cudagraphs" if device is not None and device.type == "cuda"
                                else "default")

    @classmethod
    def from_pretrained(cls, path=None, *, device=None, dtype=None, config: Optional[SamplerConfig] = None,
                        **kwargs) -> "Sampler":
        """A sampler for a masked LM in a local Hugging Face directory, loaded offline; with no
        ``path``, the demo model bundled with fastdiff (a 4.1M-parameter masked LM trained on Python's
        standard library, see ``fastdiff/demo_model/training.json``).

        Args:
            path: a directory with ``config.json``, the weights and the tokenizer files; ``None``: the
                bundled demo model.
            device: where the model runs; ``None``: ``"cuda"`` when available, else ``"cpu"``.
            dtype: the model's ``torch.dtype``; ``None``: fp32 on the CPU, the stored dtype elsewhere.
            config: a :class:`SamplerConfig`; ``None`` for the defaults.
            **kwargs: the other :class:`Sampler` arguments (``backend``, ``cuda_graphs``...) and
                :class:`SamplerConfig` fields.

        Returns:
            a :class:`Sampler` whose mask token is the tokenizer's, with the tokenizer as
            ``sampler.tokenizer``.

        Raises:
            ValueError: ``path`` is not a model directory, or its tokenizer has no mask token.

        Example:
            >>> sampler = Sampler.from_pretrained(device="cpu", steps=16, seed=0)
            >>> tok = sampler.tokenizer
            >>> out = sampler.generate(tok("def area(w, h):\n", return_tensors="pt").input_ids, gen_length=32)
            >>> print(tok.decode(out.sequences[0], skip_special_tokens=True))  # doctest: +SKIP
        """
        from fastdiff.pretrained import load_pretrained

        model, tokenizer = load_pretrained(path, device=device, dtype=dtype)
        sampler = cls(model, mask_token_id=tokenizer.mask_token_id, config=config, **kwargs)
        sampler.tokenizer = tokenizer
        return sampler

    @property
    def model(self):
        return self.runner.model

    # ------------------------------------------------------------------------------------------
    # public entry points
    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompt_ids: torch.Tensor, gen_length: int, attention_mask: Optional[torch.Tensor] = None, *,
                 progress: Optional[Callable[[int, int], None]] = None, **overrides) -> GenerationOutput:
        """Generate ``gen_length`` tokens after each prompt.

        Args:
            prompt_ids: int ``[B, P]`` (or ``[P]``), left-padded when prompts differ in length.
            gen_length: tokens to generate per row.
            attention_mask: ``[B, P]`` of 0/1: 0 marks left padding. Pad and prompt positions are never
                modified. A padded row gives the same result as that row alone with its own seed (for
                models that take ``position_ids``, or RoBERTa-style models): its noise is keyed by its
                seed and by positions counted from its first real token. With an int ``seed=s``, row
                ``b`` has seed ``s + b``; pass one seed per row to make rows independent of their place.
            progress: ``progress(step, planned_steps)`` called on the host after each step is issued (a
                progress bar); unlike ``on_step`` it sees no tensor, so CUDA graphs and the masked-row
                head stay on.
            **overrides: :class:`SamplerConfig` fields for this call.

        Returns:
            :class:`GenerationOutput` with ``sequences`` of shape ``[B, P + gen_length]``.
        """
        config = self.config.replace(**overrides) if overrides else self.config
        prompt = _check_ids(prompt_ids, "prompt_ids", self.runner.vocab_size)
        if isinstance(gen_length, bool) or not isinstance(gen_length, int):
            raise TypeError(f"gen_length must be an int, got {type(gen_length).__name__}")
        if gen_length <= 0:
            raise ValueError(f"gen_length must be positive, got {gen_length}")
        B, P = prompt.shape
        attention = _check_attention(attention_mask, (B, P), "attention_mask")
        device = self._device(prompt)
        prompt = prompt.to(device)
        real = attention.to(device) if attention is not None else torch.ones(B, P, dtype=torch.bool, device=device)
        if attention is not None and bool((real[:, 1:].int() < real[:, :-1].int()).any()):
            raise ValueError("attention_mask must be left padding: each row zeros then ones")
        if bool(((prompt == self.mask_token_id) & real).any()):
            raise ValueError(f"prompt_ids contain mask_token_id={self.mask_token_id}; use infill() to fill holes")
        L = P + gen_length
        self._check_length(L, "prompt + gen_length")
        canvas = torch.cat([prompt, torch.full((B, gen_length), self.mask_token_id, dtype=torch.int64,
                                               device=device)], dim=1)
        editable = torch.zeros(B, L, dtype=torch.bool, device=device)
        editable[:, P:] = True
        real = torch.cat([real, torch.ones(B, gen_length, dtype=torch.bool, device=device)], dim=1)
        counts = [[gen_length] for _ in range(B)]  # editable count per row, identical rows
        return self._run(canvas, editable, real, padded=attention is not None and not bool(real.all()),
                         region=(P, L), row_counts=counts, config=config, progress=progress)

    @torch.no_grad()
    def infill(self, canvas_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None, *,
               progress: Optional[Callable[[int, int], None]] = None, **overrides) -> GenerationOutput:
        """Fill every ``mask_token_id`` in ``canvas_ids``; all other positions stay as they are.

        Args:
            canvas_ids: int ``[B, L]`` (or ``[L]``) holding mask tokens at the holes.
            attention_mask: ``[B, L]`` of 0/1; positions with 0 are padding and never filled.
            progress: as in :meth:`generate`.
            **overrides: :class:`SamplerConfig` fields for this call. ``block_length`` tiles the span
                from the first to the last hole.

        Returns:
            :class:`GenerationOutput` with ``sequences`` of shape ``[B, L]``.
        """
        config = self.config.replace(**overrides) if overrides else self.config
        canvas = _check_ids(canvas_ids, "canvas_ids", self.runner.vocab_size)
        B, L = canvas.shape
        if L == 0:
            raise ValueError("canvas_ids must not be empty")
        attention = _check_attention(attention_mask, (B, L), "attention_mask")
        self._check_length(L, "canvas_ids length")
        device = self._device(canvas)
        canvas = canvas.to(device).clone()
        real = attention.to(device) if attention is not None else torch.ones(B, L, dtype=torch.bool, device=device)
        editable = (canvas == self.mask_token_id) & real
        editable_host = editable.cpu()
        columns = editable_host.any(dim=0).nonzero()
        if columns.numel() == 0:
            raise ValueError(f"canvas_ids hold no mask_token_id={self.mask_token_id} to fill")
        region = (int(columns[0]), int(columns[-1]) + 1)
        return self._run(canvas, editable, real, padded=not bool(real.all()), region=region,
                         row_counts=editable_host, config=config, progress=progress)

    # ------------------------------------------------------------------------------------------
    # set-up
    # ------------------------------------------------------------------------------------------
    def _device(self, ids: torch.Tensor) -> torch.device:
        return self.runner.device or ids.device

    def _check_length(self, length: int, what: str) -> None:
        limit = self.runner.max_length
        if limit is not None and length > limit:
            raise ValueError(f"{what} = {length} exceeds the model's {limit} positions (max_position_embeddings)")
        if length > MAX_CANVAS:  # a model that does not say its length (a callable)
            raise ValueError(f"{what} = {length} exceeds fastdiff's canvas limit of {MAX_CANVAS} positions")

    def _plan(self, config: SamplerConfig, region: Tuple[int, int], row_counts, B: int, L: int,
              device: torch.device, rng: torch.Tensor) -> _Plan:
        lo, hi = region
        width = config.block_length or (hi - lo)
        blocks = [(start, min(start + width, hi)) for start in range(lo, hi, width)]
        if isinstance(row_counts, torch.Tensor):  # infill: count the holes of each row in each block
            per_row = [[int(row_counts[r, s:e].sum()) for (s, e) in blocks] for r in range(B)]
        else:  # generate: every row fills every block
            per_row = [[e - s for (s, e) in blocks] for _ in range(B)]
        block_tokens = [max(per_row[r][b] for r in range(B)) for b in range(len(blocks))]
        ancestral = config.unmask == "ancestral"
        budget = config.steps if config.steps is not None else sum(block_tokens)
        alloc = allocate_steps(budget, block_tokens, clamp=not ancestral)
        schedule = resolve_schedule(config.schedule)
        # the ancestral reveal counts of row r are drawn from its own seed
        generators = [torch.Generator().manual_seed(seed) for seed in rng[:, 0].tolist()] if ancestral else None

        def commit_counts(n: int, s: int, row: int) -> Dict[int, int]:
            """Tokens a row with n masked positions commits at each of the block's s steps, by step
            (steps that commit nothing may be left out)."""
            if n == 0:
                return {}
            if not ancestral:
                return dict(enumerate(schedule_counts(schedule, n, s)))
            # MDLM / SEDD ancestral law: with t_i the masked fraction before step i, each position is
            # revealed at step i with probability t_i - t_{i+1}, independently; which ones is uniform.
            # Drawn as n reveal times (v uniform in (0, 1]: the step with t_{i+1} < v <= t_i), so the
            # cost follows n, not the number of steps
            v = 1.0 - torch.rand(n, generator=generators[row], dtype=torch.float64)
            return dict(Counter(reveal_steps(config.schedule, v, n, s).tolist()))

        # masked positions a row can still have in the block before each step: the plan's target,
        # unless commits can fall short of it (threshold: at least one per step) or masks come back
        # (remasking)
        def bound_before(n: int, targets: List[int]) -> List[int]:
            if config.remask is not None:
                return [n] * len(targets)
            if config.threshold is not None:
                return [max(n - i, 0) for i in range(len(targets))]
            return [n] + targets[:-1]

        block_masks = torch.zeros(len(blocks), L, dtype=torch.bool)
        first_step, step_block, step_last, step_counter, row_bound = [], [], [], [], []
        targets = [[] for _ in range(B)]
        cache = {}
        for j, (b, (s, e)) in enumerate((b, blocks[b]) for b in range(len(blocks)) if alloc[b] > 0):
            block_masks[j, s:e] = True
            counts = [commit_counts(per_row[r][b], alloc[b], r) if ancestral
                      else cache.setdefault((per_row[r][b], alloc[b]), commit_counts(per_row[r][b], alloc[b], r))
                      for r in range(B)]
            # an ancestral step that reveals nothing in any row needs no forward pass
            kept = sorted(set().union(*counts)) if ancestral else list(range(alloc[b]))
            step_counter += [sum(alloc[:b]) + i for i in kept]
            first_step.append(len(step_block))
            step_block += [j] * len(kept)
            step_last += [False] * (len(kept) - 1) + [True]
            bound = [0] * len(kept)
            for r in range(B):
                left, after = per_row[r][b], []
                for i in kept:
                    left -= counts[r].get(i, 0)
                    after.append(left)
                targets[r] += after
                bound = [x + y for x, y in zip(bound, bound_before(per_row[r][b], after))]
            row_bound += bound
        blocks_used = len(first_step)
        # pad the step axis to a power of two: captured graphs depend on the shapes, not on the count
        num_steps = len(step_block)
        capacity = 1 << max(num_steps - 1, 0).bit_length()
        padding = capacity - num_steps
        return _Plan(
            num_steps=num_steps,
            block_masks=block_masks[:blocks_used].to(device),
            block_first_step=torch.tensor(first_step, dtype=torch.int64, device=device),
            step_block=torch.tensor(step_block + [blocks_used - 1] * padding, dtype=torch.int64, device=device),
            step_last=torch.tensor(step_last + [True] * padding, dtype=torch.bool, device=device),
            target_after=torch.tensor([t + [0] * padding for t in targets], dtype=torch.int64, device=device),
            step_counter=torch.tensor(step_counter + [sum(alloc) + i for i in range(padding)], dtype=torch.int64,
                                      device=device),
            row_bound=row_bound,
        )

    def _state(self, config: SamplerConfig, canvas, editable, real, padded: bool, rng: torch.Tensor) -> _State:
        device = canvas.device
        B, L = canvas.shape
        attention = real.to(torch.int64) if padded else None
        suppress = sorted(set(config.suppress_token_ids) | {self.mask_token_id})

        def scalar(value, dtype=torch.float32):
            return torch.tensor(value, dtype=dtype, device=device)

        params = {
            "temperature": scalar(config.temperature),
            "score_temperature": scalar(config.score_temperature or 1.0),
            "top_k": scalar(config.top_k or 1, torch.int32),
            "top_p": scalar(config.top_p or 1.0),
            "threshold": scalar(config.threshold or 0.0),
            "position_temperature": scalar(config.position_temperature),
            "remask_ratio": scalar(config.remask_ratio),
            "remask_temperature": scalar(config.remask_temperature),
            "cfg_scale": scalar(config.cfg_scale),
        }
        return _State(
            canvas=canvas,
            confidence=torch.full((B, L), float("nan"), dtype=torch.float32, device=device),
            editable=editable,
            fixed=real & ~editable,
            attention_mask=attention,
            position_ids=self.runner.position_ids(attention) if padded else None,
            done=torch.zeros(B, dtype=torch.bool, device=device),
            step=torch.zeros((), dtype=torch.int64, device=device),
            nfe=torch.zeros((), dtype=torch.int64, device=device),
            work_left=(editable & (canvas == self.mask_token_id)).any(),
            rng=rng,
            bad_step=torch.full((), -1, dtype=torch.int64, device=device),
            params=params,
            suppress_ids=torch.tensor(suppress, dtype=torch.int64, device=device),
            defer_ids=(torch.tensor(list(config.defer_token_ids), dtype=torch.int64, device=device)
                       if config.defer_token_ids else None),
            eos_ids=(torch.tensor(config.eos_ids, dtype=torch.int64, device=device)
                     if config.eos_ids and config.stop_at_eos else None),
        )

    # ------------------------------------------------------------------------------------------
    # running the steps: eagerly, or replaying captured graphs
    # ------------------------------------------------------------------------------------------
    def _check_eos(self, config: SamplerConfig) -> None:
        if self.mask_token_id in config.eos_ids:
            raise ValueError(f"eos_token_id holds mask_token_id={self.mask_token_id}: every masked position would read "
                             "as finished")

    def _run(self, canvas, editable, real, *, padded: bool, region, row_counts, config: SamplerConfig, progress):
        if progress is not None and not callable(progress):
            raise TypeError(f"progress must be callable, got {type(progress).__name__}")
        self._check_eos(config)
        B, L = canvas.shape
        device = canvas.device
        backend = resolve_backend(self.backend, device)
        # each row's noise counts positions from its first real token, so left padding does not move it
        origin = torch.argmax(real.to(torch.int8), dim=1)
        rng = ops.make_rng_state(config.seed, B, device, origin=origin)
        plan = self._plan(config, region, row_counts, B, L, device, rng)
        state = self._state(config, canvas, editable, real, padded, rng)
        if self._graphs_wanted(config, device, backend):
            result = self._run_graphed(state, plan, config, backend, progress)
            if result is not None:
                return result
        return self._run_eager(state, plan, config, backend, progress)

    def _hooks(self, config: SamplerConfig) -> bool:
        return config.on_step is not None or config.logits_hook is not None

    def _uses_head(self, config: SamplerConfig) -> bool:
        return self.masked_head and self.runner.has_head and not self._hooks(config)

    def _can_stop_early(self, config: SamplerConfig) -> bool:
        """Whether a call may end before its last planned step (the plan step and the host step count
        can then part ways)."""
        return config.threshold is not None or bool(config.eos_ids and config.stop_at_eos)

    def _row_buckets(self, plan: _Plan, config: SamplerConfig, graphed: bool, B: int, L: int) -> List[Optional[int]]:
        """Rows the masked-row head gathers at each step (None: the full head). Graphs round them up to
        powers of two so that a few captures cover all steps; if the call can end early, the device may
        skip steps, so every step takes the largest."""
        if not self._uses_head(config):
            return [None] * plan.num_steps
        bounds = plan.row_bound
        if self._can_stop_early(config):
            bounds = [max(bounds)] * plan.num_steps
        if graphed:
            bounds = [min(max(MIN_ROW_BUCKET, 1 << (max(b, 1) - 1).bit_length()), B * L) for b in bounds]
        return bounds

    def _graphs_wanted(self, config: SamplerConfig, device: torch.device, backend: str) -> bool:
        if self.cuda_graphs is False:
            return False
        usable = cuda_graphs_supported(device) and backend == "triton"
        if self.cuda_graphs is True:
            if not usable:
                raise ValueError("cuda_graphs=True needs CUDA tensors and the triton backend")
            if self._hooks(config):
                raise ValueError("cuda_graphs=True cannot run the per-step Python hooks on_step / logits_hook")
        return usable and not self._hooks(config)

    def _run_eager(self, st: _State, plan: _Plan, config: SamplerConfig, backend: str, progress) -> GenerationOutput:
        B, L = st.canvas.shape
        buckets = self._row_buckets(plan, config, graphed=False, B=B, L=L)
        history = [] if config.return_history else None
        nfe = 0
        while nfe < plan.num_steps and bool(st.work_left):
            logits = self._denoise(st, plan, config, backend, buckets[nfe], nfe)
            if int(st.bad_step) >= 0:
                raise ValueError(
                    f"the model returned NaN or +inf logits (or logits leaving no token to draw) at step {nfe}"
                )
            if config.on_step is not None:
                replaced = config.on_step(nfe, st.canvas, logits)
                if replaced is not None:
                    _check_replacement(replaced, st.canvas)
                    st.canvas.copy_(replaced)
                    st.work_left.copy_(self._work(st).any())
            if history is not None:
                history.append(st.canvas.clone())
            nfe += 1
            if progress is not None:
                progress(nfe, plan.num_steps)
        return GenerationOutput(sequences=st.canvas.clone(), nfe=nfe, history=history,
                                confidences=st.confidence.clone(), finished=st.done.clone())

    def _graph_key(self, st: _State, plan: _Plan, config: SamplerConfig, backend: str):
        dtype = next((p.dtype for p in self.model.parameters()), None) if isinstance(
            self.model, torch.nn.Module) else None
        structure = (config.unmask, config.threshold is None, config.remask is None, config.cfg_scale > 0,
                     config.logits_shift, config.top_k is None, config.top_p is None,
                     config.score_temperature is None, len(st.suppress_ids),
                     None if st.defer_ids is None else len(st.defer_ids),
                     None if st.eos_ids is None else len(st.eos_ids))
        return (tuple(st.canvas.shape), str(st.canvas.device), dtype, backend, st.attention_mask is not None,
                len(plan.step_block), tuple(plan.block_masks.shape), self._uses_head(config), structure)

    def _run_graphed(self, st: _State, plan: _Plan, config: SamplerConfig, backend: str, progress):
        """Replay captured steps; ``None`` when capture failed (the caller then runs eagerly)."""
        key = self._graph_key(st, plan, config, backend)
        if key in self._graph_failures:
            return None
        B, L = st.canvas.shape
        buckets = self._row_buckets(plan, config, graphed=True, B=B, L=L)
        entry = self._graphs.get(key)
        if entry is None:
            entry = graphs.GraphEntry(state=graphs.static_copy(st), plan=graphs.static_copy(plan),
                                      pool=graphs.new_pool())
        graphs.load_into(entry.state, st)
        graphs.load_into(entry.plan, plan)
        for bucket in sorted(set(buckets) - set(entry.replays), key=lambda b: -1 if b is None else b):
            try:
                entry.replays[bucket] = graphs.capture_step(
                    lambda bucket=bucket: self._denoise(entry.state, entry.plan, config, backend, bucket),
                    entry.pool)
            except Exception as error:  # noqa: BLE001 - any capture failure falls back to eager
                warnings.warn(f"fastdiff: CUDA graph capture failed, running eagerly: "
                              f"{type(error).__name__}: {error}", RuntimeWarning, stacklevel=3)
                self._graph_failures.add(key)
                return None
            graphs.load_into(entry.state, st)  # the warm-up run moved the static state on
        self._graphs.put(key, entry)

        static = entry.state
        history = [] if config.return_history else None
        can_stop = self._can_stop_early(config)
        for i in range(plan.num_steps):
            entry.replays[buckets[i]]()
            if history is not None:
                history.append(static.canvas.clone())
            if progress is not None:
                progress(i + 1, plan.num_steps)
            if can_stop and (i + 1) % GRAPH_CHECK_EVERY == 0 and not bool(static.work_left):
                break
        bad_step = int(static.bad_step)
        if bad_step >= 0:
            raise ValueError(
                f"the model returned NaN or +inf logits (or logits leaving no token to draw) at step {bad_step}"
            )
        nfe = int(static.nfe)
        if history is not None:
            del history[nfe:]
        return GenerationOutput(sequences=static.canvas.clone(), nfe=nfe, history=history,
                                confidences=static.confidence.clone(), finished=static.done.clone())

    # ------------------------------------------------------------------------------------------
    # one denoising step (device-side only: the same code runs eagerly and inside a graph)
    # ------------------------------------------------------------------------------------------
    def _work(self, st: _State) -> torch.Tensor:
        return st.editable & (st.canvas == self.mask_token_id) & ~st.done[:, None]

    def _advance_to_work(self, st: _State, plan: _Plan) -> torch.Tensor:
        """Move ``st.step`` to the first step of the first block, from the current one on, that still
        has a masked position to fill; returns whether there is one (a device bool)."""
        work = self._work(st).any(dim=0)
        block_has_work = (plan.block_masks & work).any(dim=-1)
        step = st.step.clamp(max=len(plan.step_block) - 1)
        current = plan.step_block[step]
        later = block_has_work & (torch.arange(len(block_has_work), device=work.device) >= current)
        jump = plan.block_first_step[torch.argmax(later.to(torch.int32))]
        any_left = later.any()
        st.step.copy_(torch.where(block_has_work[current], step,
                                  torch.where(any_left, jump, torch.full_like(step, plan.num_steps))))
        return any_left

    def _denoise(self, st: _State, plan: _Plan, config: SamplerConfig, backend: str, bucket: Optional[int],
                 step_index: int = 0) -> Optional[torch.Tensor]:
        """Advance to a step with work, run it, update the flags. Returns the full logits (None with the
        masked-row head)."""
        st.nfe.add_(self._advance_to_work(st, plan).to(torch.int64))
        logits = self._step(st, plan, config, backend, bucket, step_index)
        st.work_left.copy_(self._work(st).any())
        return logits

    def _check_vocab(self, vocab: int, config: SamplerConfig) -> None:
        if self.mask_token_id >= vocab:
            raise ValueError(f"mask_token_id={self.mask_token_id} is outside the model's vocabulary [0, {vocab})")
        if any(i >= vocab for i in config.suppress_token_ids):
            raise ValueError(f"suppress_token_ids must lie in [0, {vocab}), got {list(config.suppress_token_ids)}")

    def _model_inputs(self, st: _State, config: SamplerConfig):
        """The canvas batch (with the unconditional copy for CFG), its attention mask and positions."""
        ids, attention, positions = st.canvas, st.attention_mask, st.position_ids
        if config.cfg_scale > 0:
            ids = torch.cat([ids, st.canvas.masked_fill(st.fixed, self.mask_token_id)])
            attention = torch.cat([attention, attention]) if attention is not None else None
            positions = torch.cat([positions, positions]) if positions is not None else None
        return ids, attention, positions

    def _guide(self, logits: torch.Tensor, st: _State, config: SamplerConfig) -> torch.Tensor:
        """CFG: ``u + (s + 1) (c - u)`` from the conditional and unconditional halves, in fp32."""
        if config.cfg_scale <= 0:
            return logits
        cond, uncond = logits.float().chunk(2)
        return uncond + (st.params["cfg_scale"] + 1.0) * (cond - uncond)

    def _sample_options(self, st: _State, config: SamplerConfig) -> dict:
        return dict(temperature=st.params["temperature"],
                    top_k=st.params["top_k"] if config.top_k is not None else None,
                    top_p=st.params["top_p"] if config.top_p is not None else None,
                    score=config.score_kind, suppress_ids=st.suppress_ids,
                    score_temperature=st.params["score_temperature"] if config.score_temperature is not None else None)

    def _sample_full(self, st: _State, config: SamplerConfig, backend: str, eligible, step_index: int):
        """The whole model, then sampling at the eligible positions; returns tokens, scores, logits."""
        logits = self._guide(self.runner(*self._model_inputs(st, config)), st, config)
        self._check_vocab(logits.shape[-1], config)
        shift = config.logits_shift
        if shift and self._hooks(config):  # hooks see the logits each position is sampled from
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
            shift = False
        if config.logits_hook is not None:
            logits = _check_hook_logits(config.logits_hook(step_index, st.canvas, logits), logits)
        tokens, scores = ops.dispatch_sample_masked(backend, logits, eligible, st.rng, logits_shift=shift,
                                                    **self._sample_options(st, config))
        return tokens, scores, logits

    def _sample_rows(self, st: _State, config: SamplerConfig, backend: str, eligible, bucket: int):
        """The encoder, then the LM head on ``bucket`` gathered rows: the eligible positions in canvas
        order, padded with ``-1``; returns tokens and scores scattered back to ``[B, L]``."""
        B, L = eligible.shape
        flat = eligible.reshape(-1)
        slot = torch.cumsum(flat.to(torch.int64), 0) - 1
        slot = torch.where(flat & (slot < bucket), slot, bucket)  # slot `bucket` is a dump
        row_ids = torch.full((bucket + 1,), -1, dtype=torch.int64, device=flat.device)
        row_ids = row_ids.scatter(0, slot, torch.arange(B * L, device=flat.device))[:bucket]
        source = row_ids.clamp(min=0)
        if config.logits_shift:  # position l reads the hidden state of l - 1 (position 0 its own)
            source = source - (source % L > 0).to(torch.int64)
        hidden = self.runner.encode(*self._model_inputs(st, config))
        hidden = hidden.reshape(-1, hidden.shape[-1])
        if config.cfg_scale > 0:
            rows = torch.cat([hidden[source], hidden[source + B * L]])
        else:
            rows = hidden[source]
        logits = self._guide(self.runner.head(rows), st, config)
        self._check_vocab(logits.shape[-1], config)
        row_tokens, row_scores = ops.dispatch_sample_rows(backend, logits, row_ids, st.rng, L,
                                                          **self._sample_options(st, config))
        target = torch.where(row_ids >= 0, row_ids, B * L)
        tokens = torch.full((B * L + 1,), -1, dtype=torch.int64, device=flat.device).scatter(0, target, row_tokens)
        scores = torch.full((B * L + 1,), float("-inf"), device=flat.device).scatter(0, target, row_scores)
        return tokens[:-1].reshape(B, L), scores[:-1].reshape(B, L)

    def _step(self, st: _State, plan: _Plan, config: SamplerConfig, backend: str, bucket: Optional[int],
              step_index: int) -> Optional[torch.Tensor]:
        """One denoising step: forward, sample, select, commit (+ remask), EOS bookkeeping."""
        g = st.step.clamp(max=len(plan.step_block) - 1)  # past the end (no work left) nothing is committed
        in_block = plan.block_masks[plan.step_block[g]]
        st.rng[:, 1].copy_(plan.step_counter[g])
        editable_now = st.editable & in_block & ~st.done[:, None]
        eligible = editable_now & (st.canvas == self.mask_token_id)

        if bucket is None:
            tokens, scores, logits = self._sample_full(st, config, backend, eligible, step_index)
        else:
            tokens, scores = self._sample_rows(st, config, backend, eligible, bucket)
            logits = None
        if st.defer_ids is not None:
            scores = torch.where(_equals_any(tokens, st.defer_ids), float("-inf"), scores)
        bad = (torch.isnan(scores) & eligible).any()
        st.bad_step.copy_(torch.where((st.bad_step < 0) & bad, st.nfe - 1, st.bad_step))

        n_masked = eligible.sum(dim=-1)
        k = (n_masked - plan.target_after.index_select(1, g.reshape(1))[:, 0]).clamp(min=0)
        last = plan.step_last[g]
        if config.threshold is not None:
            threshold = torch.where(last, float("-inf"), st.params["threshold"])
            selected = ops.dispatch_select_topk(backend, scores, eligible, n_masked, st.rng,
                                                position_temperature=st.params["position_temperature"],
                                                threshold=threshold)
        elif config.unmask in ("random", "ancestral"):  # uniform positions: Gumbel-top-k of equal scores
            selected = ops.dispatch_select_topk(backend, torch.zeros_like(scores), eligible, k, st.rng,
                                                position_temperature=1.0, threshold=None)
        else:
            selected = ops.dispatch_select_topk(backend, scores, eligible, k, st.rng,
                                                position_temperature=st.params["position_temperature"],
                                                threshold=None)

        if config.remask is not None:
            committed = selected.sum(dim=-1).to(torch.float32)
            n_remask = torch.floor(st.params["remask_ratio"] * committed).to(torch.int64)
            n_remask = torch.where(last, torch.zeros_like(n_remask), n_remask)
        else:
            n_remask = torch.zeros_like(n_masked)
        ops.dispatch_commit_remask(backend, st.canvas, st.confidence, tokens, scores, selected, editable_now,
                                   n_remask, self.mask_token_id, st.rng,
                                   remask_temperature=st.params["remask_temperature"])
        if st.eos_ids is not None:
            self._finish_rows_at_eos(st)
        st.step.add_(1)
        return logits

    def _finish_rows_at_eos(self, st: _State) -> None:
        """A row is finished once its first generated EOS has nothing masked before it; the
        positions after that EOS become the same EOS token."""
        B, L = st.canvas.shape
        positions = torch.arange(L, device=st.canvas.device)
        is_eos = _equals_any(st.canvas, st.eos_ids) & st.editable
        has_eos = is_eos.any(dim=-1)
        first = torch.where(has_eos, torch.argmax(is_eos.to(torch.int32), dim=-1),
                            torch.full_like(has_eos, L, dtype=torch.int64))
        before = positions[None, :] < first[:, None]
        pending = (st.editable & before & (st.canvas == self.mask_token_id)).any(dim=-1)
        newly_done = has_eos & ~pending & ~st.done
        after = st.editable & (positions[None, :] > first[:, None]) & newly_done[:, None]
        eos_token = torch.gather(st.canvas, 1, first.clamp(max=L - 1)[:, None])
        st.canvas.copy_(torch.where(after, eos_token, st.canvas))
        st.confidence.masked_fill_(after, float("nan"))
        st.done.logical_or_(newly_done)


def _equals_any(values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``torch.isin(values, ids)`` as a broadcast compare over the few ``ids``: isin may sort and
    synchronise, which a captured step must not."""
    return (values[..., None] == ids).any(dim=-1)


def _check_ids(ids, name: str, vocab: Optional[int]) -> torch.Tensor:
    """``ids`` as int64 ``[B, L]``; ``vocab``: the model's vocabulary size where known."""
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(ids).__name__}")
    if ids.is_meta:
        raise ValueError(f"{name} is on the meta device: it holds no ids")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token ids, got {ids.dtype}")
    if ids.dim() == 1:
        ids = ids[None, :]
    if ids.dim() != 2:
        raise ValueError(f"{name} must have shape [B, L] or [L], got {tuple(ids.shape)}")
    if ids.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one row")
    if ids.numel() and int(ids.min()) < 0:
        raise ValueError(f"{name} must not hold negative ids")
    if vocab is not None and ids.numel() and int(ids.max()) >= vocab:
        raise ValueError(f"{name} hold id {int(ids.max())}, outside the model's vocabulary [0, {vocab})")
    return ids.to(torch.int64)


def _check_attention(mask, shape: Tuple[int, int], name: str) -> Optional[torch.Tensor]:
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dim() == 1:
        mask = mask[None, :]
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(mask.shape)}")
    if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"{name} must hold 0 and 1 only")
    return mask.bool()


def _check_replacement(replaced, canvas: torch.Tensor) -> None:
    if not isinstance(replaced, torch.Tensor) or replaced.shape != canvas.shape or replaced.is_floating_point():
        raise TypeError(f"on_step must return None or an integer tensor of shape {tuple(canvas.shape)}")
    if replaced.numel() and int(replaced.min()) < 0:
        raise ValueError(f"on_step returned a negative token id ({int(replaced.min())})")


def _check_hook_logits(hooked, logits: torch.Tensor) -> torch.Tensor:
    if not isinstance(hooked, torch.Tensor) or hooked.shape != logits.shape or not hooked.is_floating_point():
        got = tuple(hooked.shape) if isinstance(hooked, torch.Tensor) else type(hooked).__name__
        raise TypeError(f"logits_hook must return float logits of shape {tuple(logits.shape)}, got {got}")
    return hooked
