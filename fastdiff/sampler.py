"""The diffusion sampler: generation from a prompt and infilling on a fixed canvas. It validates a
call, plans it (:mod:`fastdiff.plan`) and runs its steps (:mod:`fastdiff.step`), eagerly or as CUDA-graph
replays (:mod:`fastdiff.graphs`)."""
from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, List, Optional

import torch

from fastdiff import graphs, ops, streaming
from fastdiff.backend import BACKENDS, cuda_graphs_supported, resolve_backend
from fastdiff.config import SamplerConfig
from fastdiff.host_step import run_on_host, runs_on_host
from fastdiff.model import ModelRunner
from fastdiff.plan import Plan, can_stop_early, depends_on_seeds, make_plan, row_buckets
from fastdiff.step import Denoiser, Hooks, StepState, new_state, raise_if_bad, run_eagerly
from fastdiff.text import as_id_batch
from fastdiff.validation import (check_attention, check_callable, check_canvas_length, check_choice, check_eos,
                                 check_flag, check_ids, check_prompt, check_token_id)

# the validated configs and the plans of this many recent call settings are kept (by value, see
# SamplerConfig.values_key): a repeated call skips the validation and the planning
PREPARED_CALLS = 16

@dataclass
class GenerationOutput:
    """What :meth:`Sampler.generate` and :meth:`Sampler.infill` return. Like transformers' ``ModelOutput``
    it is also indexed by field name (``out["sequences"]``) or position (``out[0]``, over the fields that
    are not ``None``).

    Attributes:
        sequences: int64 ``[B, L]``: the whole canvas (prompt and generation); no mask token left.
        nfe: model forward passes actually run (a CFG pass, which batches both inputs, counts once).
        history: with ``return_history=True``, the canvas after every step; else ``None``.
        confidences: fp32 ``[B, L]``: the score each generated token had when it was committed; NaN at
            prompt, pad and fixed positions and at positions filled after an EOS.
        finished: bool ``[B]``: every row is complete when a call returns (each hole filled, or the row
            ended at an EOS), so this is all true, as for a transformers generation that reached its length.
        stopped_at_eos: bool ``[B]``: rows that ended at an EOS (with ``stop_at_eos``; else all false).
        texts: with a tokenizer, each row decoded without special tokens: the generated tokens for
            :meth:`Sampler.generate`, the whole filled canvas for :meth:`Sampler.infill`; else ``None``.
    """

    sequences: torch.Tensor
    nfe: int
    history: Optional[List[torch.Tensor]]
    confidences: torch.Tensor
    finished: torch.Tensor
    stopped_at_eos: torch.Tensor
    texts: Optional[List[str]] = None

    def keys(self) -> List[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]

    def to_tuple(self) -> tuple:
        return tuple(getattr(self, name) for name in self.keys())

    def __getitem__(self, key):
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(key)
            return getattr(self, key)
        return self.to_tuple()[key]


class Sampler:
    """Sampling from a masked (absorbing-state) diffusion language model.

    Args:
        model: a Hugging Face model whose output has ``.logits`` (e.g. ``RobertaForMaskedLM``), or any
            callable ``(input_ids, attention_mask) -> logits [B, L, V]``, or a :class:`ModelRunner`.
        mask_token_id: id of the mask (absorbing) token.
        config: a :class:`SamplerConfig`; ``None`` for the defaults.
        backend: ``"auto"`` (Triton kernels on CUDA, else PyTorch), ``"torch"`` or ``"triton"``.
        cuda_graphs: ``"auto"`` (on CUDA with the Triton backend, for calls without a per-step hook),
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
        tokenizer: a Hugging Face tokenizer: :meth:`generate` and :meth:`infill` then take text, and
            outputs carry ``texts`` (:meth:`from_pretrained` sets the model's own).
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
                 graph_cache_size: int = 4, tokenizer=None, **overrides):
        self.runner = model if isinstance(model, ModelRunner) else ModelRunner(model)
        check_token_id(mask_token_id, "mask_token_id", self.runner.vocab_size)
        if config is not None and not isinstance(config, SamplerConfig):
            raise TypeError(f"config must be a SamplerConfig, got {type(config).__name__}")
        check_choice(backend, "backend", BACKENDS)
        check_choice(cuda_graphs, "cuda_graphs", ("auto", True, False))
        check_flag(masked_head, "masked_head")
        check_flag(compile, "compile")
        self.mask_token_id = mask_token_id
        self.tokenizer = tokenizer
        self.backend = backend
        self.cuda_graphs = cuda_graphs
        self.masked_head = masked_head
        self.config = (config or SamplerConfig()).replace(**overrides)
        check_eos(self.config.eos_ids, mask_token_id)
        self._graphs = graphs.GraphRunner(graph_cache_size)
        self._prepared = OrderedDict()  # values key -> config, (values key, shapes) -> plan
        if compile:
            device = self.runner.device
            self.runner.compile("max-autotune-no-cudagraphs" if device is not None and device.type == "cuda"
                                else "default")

    @classmethod
    def from_pretrained(cls, path=None, *, device=None, dtype=None, config: Optional[SamplerConfig] = None,
                        **kwargs) -> "Sampler":
        """A sampler for a masked LM in a local Hugging Face directory, loaded offline; with no
        ``path``, the demo model bundled with fastdiff (all-MiniLM-L6-v2 fine-tuned into an English
        text-diffusion model, see ``fastdiff/demo_model/training.json``).

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
            >>> out = sampler.generate("def area(w, h):\\n", max_new_tokens=32)
            >>> out.texts == sampler.tokenizer.batch_decode(out.sequences[:, -32:], skip_special_tokens=True)
            True
        """
        from fastdiff.pretrained import load_pretrained

        model, tokenizer = load_pretrained(path, device=device, dtype=dtype)
        return cls(model, mask_token_id=tokenizer.mask_token_id, config=config, tokenizer=tokenizer, **kwargs)

    @property
    def model(self):
        return self.runner.model

    @torch.no_grad()
    def generate(self, prompt_ids, gen_length: Optional[int] = None, attention_mask: Optional[torch.Tensor] = None, *,
                 max_new_tokens: Optional[int] = None, streamer=None, progress: Optional[Callable[[int, int], None]] = None,
                 on_step: Optional[Callable] = None, logits_hook: Optional[Callable] = None,
                 **overrides) -> GenerationOutput:
        """Generate ``gen_length`` tokens after each prompt.

        Args:
            prompt_ids: int ``[B, P]`` (or ``[P]``), left-padded when prompts differ in length; or, with a
                tokenizer, a str or a list of str; or a ``BatchEncoding`` (its ``attention_mask`` is used,
                right padding moved to the left), a list of ids, or a list of id lists / 1-D tensors
                (left-padded here with the tokenizer's pad token).
            gen_length: tokens to generate per row (``max_new_tokens`` is the same, by its transformers name).
            attention_mask: ``[B, P]`` of 0/1 for a tensor ``prompt_ids``: 0 marks padding, left or right
                (a right-padded row runs, and comes back, left-padded). Pad and prompt positions are never
                modified. A padded row gives the same result as that row alone
                with its own seed (for models that take ``position_ids``, or RoBERTa-style models): its
                noise is keyed by its seed and by positions counted from its first real token. With an int
                ``seed=s``, row ``b`` has seed ``s + b``; pass one seed per row to make rows independent of
                their place.
            max_new_tokens: ``gen_length``'s transformers name; give one of the two.
            streamer: a transformers streamer (``put`` / ``end``, e.g. ``TextStreamer``,
                ``TextIteratorStreamer``), batch size 1: it gets the prompt, then each block's tokens as the
                block completes (with ``block_length``; else the whole generation at the end), then ``end()``.
            progress: ``progress(step, planned_steps)`` called on the host after each step is issued (a
                progress bar); unlike ``on_step`` it sees no tensor, so CUDA graphs and the masked-row
                head stay on.
            on_step: ``on_step(step, canvas, logits)`` called on the host after each step (a UI that shows
                every step); a tensor it returns becomes the canvas. Steps then run eagerly with the whole
                model.
            logits_hook: ``logits_hook(step, canvas, logits) -> logits`` applied before sampling (with
                ``logits_shift``, to the shifted logits). Steps then run eagerly with the whole model.
            **overrides: :class:`SamplerConfig` fields for this call.

        Returns:
            :class:`GenerationOutput` with ``sequences`` of shape ``[B, P + gen_length]`` (and ``texts``,
            the generations decoded, with a tokenizer).
        """
        config, config_key = self._call_config(overrides)
        gen_length = _new_tokens(gen_length, max_new_tokens)
        prompt_ids, attention_mask = as_id_batch(prompt_ids, "prompt_ids", self.tokenizer, self.mask_token_id,
                                                 self._pad_token_id(), attention_mask)
        prompt, attention = check_prompt(prompt_ids, gen_length, attention_mask, self.mask_token_id,
                                         self.runner.vocab_size)
        B, P = prompt.shape
        device = self.runner.device or prompt.device
        prompt = prompt.to(device)
        L = P + gen_length
        check_canvas_length(L, "prompt + gen_length", self.runner.max_length)
        canvas = torch.full((B, L), self.mask_token_id, dtype=torch.int64, device=device)
        canvas[:, :P] = prompt
        editable = torch.zeros(B, L, dtype=torch.bool, device=device)
        editable[:, P:] = True
        real = torch.ones(B, L, dtype=torch.bool, device=device)
        if attention is not None:
            real[:, :P] = attention
        out = self._run(canvas, editable, real, region=(P, L), row_counts=None, config=config, config_key=config_key,
                        hooks=Hooks(on_step, logits_hook), progress=progress, begin_position=P,
                        stream=streaming.BlockStream(streamer, prompt, (P, L), config) if streamer is not None else None)
        return self._with_texts(out, out.sequences[:, P:])

    @torch.no_grad()
    def infill(self, canvas_ids, attention_mask: Optional[torch.Tensor] = None, *,
               progress: Optional[Callable[[int, int], None]] = None, on_step: Optional[Callable] = None,
               logits_hook: Optional[Callable] = None, **overrides) -> GenerationOutput:
        """Fill every ``mask_token_id`` in ``canvas_ids``; all other positions stay as they are.

        Args:
            canvas_ids: int ``[B, L]`` (or ``[L]``) holding mask tokens at the holes; or, with a
                tokenizer, a template str (or a list of them) whose holes are ``[MASK]`` (one token),
                ``[MASK*N]`` (``N`` tokens) or the tokenizer's mask token; or ids in the other forms
                :meth:`generate` takes.
            attention_mask: ``[B, L]`` of 0/1 for a tensor ``canvas_ids``; positions with 0 are padding
                and never filled.
            progress, on_step, logits_hook: as in :meth:`generate`.
            **overrides: :class:`SamplerConfig` fields for this call. ``block_length`` tiles the span
                from the first to the last hole.

        Returns:
            :class:`GenerationOutput` with ``sequences`` of shape ``[B, L]`` (and ``texts``, the filled
            canvases decoded, with a tokenizer).
        """
        config, config_key = self._call_config(overrides)
        canvas_ids, attention_mask = as_id_batch(canvas_ids, "canvas_ids", self.tokenizer, self.mask_token_id,
                                                 self._pad_token_id(), attention_mask)
        canvas = check_ids(canvas_ids, "canvas_ids", self.runner.vocab_size)
        B, L = canvas.shape
        if L == 0:
            raise ValueError("canvas_ids must not be empty")
        attention = check_attention(attention_mask, (B, L), "attention_mask")
        check_canvas_length(L, "canvas_ids length", self.runner.max_length)
        device = self.runner.device or canvas.device
        canvas = canvas.to(device).clone()
        real = attention.to(device) if attention is not None else torch.ones(B, L, dtype=torch.bool, device=device)
        editable = (canvas == self.mask_token_id) & real
        holes = editable.cpu()
        columns = holes.any(dim=0).nonzero()
        if columns.numel() == 0:
            raise ValueError(f"canvas_ids hold no mask_token_id={self.mask_token_id} to fill")
        region = (int(columns[0]), int(columns[-1]) + 1)
        out = self._run(canvas, editable, real, region=region, row_counts=holes, config=config, config_key=config_key,
                        hooks=Hooks(on_step, logits_hook), progress=progress)
        return self._with_texts(out, out.sequences)

    def _pad_token_id(self) -> int:
        """What :func:`fastdiff.text.as_id_batch` left-pads rows with: the tokenizer's pad token, else the
        model config's, else 0 (1 when 0 is the mask token). Padding is never attended to or changed."""
        for source in (self.tokenizer, getattr(self.model, "config", None)):
            pad = getattr(source, "pad_token_id", None)
            if isinstance(pad, int) and pad != self.mask_token_id:
                return pad
        return 1 if self.mask_token_id == 0 else 0

    def _with_texts(self, out: GenerationOutput, tokens: torch.Tensor) -> GenerationOutput:
        if self.tokenizer is not None:
            out.texts = self.tokenizer.batch_decode(tokens.cpu().tolist(), skip_special_tokens=True)
        return out

    def _call_config(self, overrides: dict):
        """The call's validated config (``self.config`` with ``overrides``) and its values key
        (:meth:`SamplerConfig.values_key`; ``None``: not kept)."""
        key = self.config.values_key(overrides)
        config = self._prepared.get(key) if key is not None else None
        if config is None:
            config = self.config.replace(**overrides) if overrides else self.config
            self._keep(key, config)
        return config, key

    def _call_plan(self, config_key, config: SamplerConfig, region, row_counts, B: int, L: int, device,
                   rng: torch.Tensor) -> Plan:
        """:func:`make_plan`, kept for the call's settings and shapes when it follows from them alone
        (a generation, not an infill's holes; no seeded counts)."""
        key = None
        if config_key is not None and row_counts is None and not depends_on_seeds(config):
            key = (config_key, region, B, L, device)
            plan = self._prepared.get(key)
            if plan is not None:
                return plan
        plan = make_plan(config, region, row_counts, B, L, device, rng)
        self._keep(key, plan)
        return plan

    def _keep(self, key, value) -> None:
        """Keep ``value`` under ``key`` (``None``: do not), dropping the least recently kept past
        ``2 * PREPARED_CALLS`` entries (a config and a plan for each call setting)."""
        if key is None:
            return
        self._prepared[key] = value
        self._prepared.move_to_end(key)
        while len(self._prepared) > 2 * PREPARED_CALLS:
            self._prepared.popitem(last=False)

    def _run(self, canvas, editable, real, *, region, row_counts, config: SamplerConfig, config_key, hooks: Hooks,
             progress, stream: Optional[streaming.BlockStream] = None,
             begin_position: Optional[int] = None) -> GenerationOutput:
        check_callable(progress, "progress")
        check_eos(config.eos_ids, self.mask_token_id)
        B, L = canvas.shape
        device = canvas.device
        backend = resolve_backend(self.backend, device)
        padded = not bool(real.all())
        # each row's noise counts positions from its first real token, so left padding does not move it
        rng = ops.make_rng_state(config.seed, B, device,
                                 origin=torch.argmax(real.to(torch.int8), dim=1) if padded else None)
        if config.time_conditioning is not None and padded:
            raise ValueError("attention_mask: a time-conditioned model (time_conditioning) is called without an "
                             "attention mask, so its prompts cannot be padded")
        plan = self._call_plan(config_key, config, region, row_counts, B, L, device, rng)
        state = new_state(config, self.runner, self.mask_token_id, canvas, editable, real,
                          padded=padded, rng=rng, begin_position=begin_position)
        denoise = Denoiser(self.runner, self.mask_token_id, config, backend, hooks)
        if stream is not None:
            stream.start(state.canvas, self.mask_token_id)
            progress = stream.wrap(progress)
        graphed = self._graphs_wanted(hooks, device, backend, streaming=stream is not None)
        out = self._steps(state, plan, denoise, config, hooks, backend, progress, graphed, B, L)
        if stream is not None:
            stream.finish(out.sequences)
        return out

    def _steps(self, state, plan, denoise, config, hooks, backend, progress, graphed: bool, B, L) -> GenerationOutput:
        """Run the planned steps: CUDA-graph replays when ``graphed`` (and capture works), else eagerly."""
        uses_head = (self.masked_head and self.runner.has_head and not hooks and config.time_conditioning is None
                     and not config.sedd)
        if graphed:
            key = graphs.graph_key(state, plan, config, backend, uses_head, self.model)
            replayed = self._graphs.run(key, state, plan, denoise, row_buckets(plan, config, uses_head, True, B, L),
                                        keep_history=config.return_history, can_stop=can_stop_early(config),
                                        progress=progress)
            if replayed is not None:
                return _output(*replayed, static=True)
        run = run_on_host if runs_on_host(config, backend, state.canvas.device, bool(hooks)) else run_eagerly
        history = run(denoise, state, plan, row_buckets(plan, config, uses_head, False, B, L),
                      keep_history=config.return_history, progress=progress)
        return _output(state, history)

    def _graphs_wanted(self, hooks: Hooks, device: torch.device, backend: str, streaming: bool) -> bool:
        """Whether the steps replay CUDA graphs; a streamer reads the canvas after every step, so a
        streamed call runs eagerly."""
        if self.cuda_graphs is False:
            return False
        usable = cuda_graphs_supported(device) and backend == "triton"
        if self.cuda_graphs is True:
            if not usable:
                raise ValueError("cuda_graphs=True needs CUDA tensors and the triton backend")
            if hooks:
                raise ValueError("cuda_graphs=True cannot run the per-step Python hooks on_step / logits_hook")
            if streaming:
                raise ValueError("cuda_graphs=True cannot stream: a streamer reads the canvas after every step")
        return usable and not hooks and not streaming


def _new_tokens(gen_length: Optional[int], max_new_tokens: Optional[int]) -> int:
    """The tokens to generate from ``gen_length`` or its alias ``max_new_tokens`` (one of them)."""
    if gen_length is None and max_new_tokens is None:
        raise TypeError("generate() needs gen_length (or max_new_tokens): the tokens to generate per row")
    if gen_length is not None and max_new_tokens is not None and gen_length != max_new_tokens:
        raise ValueError(f"gen_length={gen_length} and max_new_tokens={max_new_tokens} disagree: give one of them")
    return gen_length if gen_length is not None else max_new_tokens


def _output(st: StepState, history: Optional[List[torch.Tensor]], static: bool = False) -> GenerationOutput:
    """The tail both loops share: the NaN check and the output, copied out of a ``static`` state (the
    graphs', which the next call overwrites); an eager call's state is its own, made for it."""
    raise_if_bad(st)
    copy = torch.clone if static else (lambda tensor: tensor)
    return GenerationOutput(sequences=copy(st.canvas), nfe=int(st.nfe), history=history,
                            confidences=copy(st.confidence), finished=torch.ones_like(st.done),
                            stopped_at_eos=copy(st.done))
