"""The training loop (:func:`train`), one resumable piece at a time, and the held-out loss
(:func:`evaluate`)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional, Tuple

import torch
from tqdm.auto import tqdm

from fastdiff.training.checkpoint import load_checkpoint, save_checkpoint
from fastdiff.training.collator import DiffusionCollator
from fastdiff.training.config import TrainConfig, learning_rate_at
from fastdiff.training.data import (DROPOUT_STREAM, EVAL_STREAM, MASK_STREAM, PreparedData, batch_window_indices,
                                    derive_seed, window_starts, windows)
from fastdiff.training.losses import causal_loss, diffusion_loss
from fastdiff.training.models import build_model, build_optimizer
from fastdiff.training.records import append_log, check_run, read_log

# Held-out mask ratios of the diffusion evaluation loss (the mean over them is logged).
EVAL_MASK_RATIOS = (0.25, 0.5, 0.75, 1.0)


def _eval_batches(config: TrainConfig, data: PreparedData) -> List[torch.Tensor]:
    """Up to ``eval_windows`` held-out windows, spread evenly over the stream, in batches."""
    starts = window_starts(data.heldout, config.seq_length)
    if len(starts) == 0:
        return []
    picked = starts[torch.linspace(0, len(starts) - 1, min(config.eval_windows, len(starts))).long()]
    batch = windows(data.heldout, picked, data.tokenizer.bos_token_id, config.seq_length)
    return list(batch.split(config.batch_size))


@torch.no_grad()
def evaluate(model: torch.nn.Module, config: TrainConfig, data: PreparedData,
             batches: Optional[List[torch.Tensor]] = None) -> Optional[float]:
    """Held-out loss: for ``"diffusion"`` the mean over :data:`EVAL_MASK_RATIOS` of the masked-token
    cross-entropy (masks from a fixed seed), for ``"causal"`` the next-token cross-entropy."""
    batches = _eval_batches(config, data) if batches is None else batches
    if not batches:
        return None
    device = torch.device(config.device)
    was_training = model.training
    model.eval()
    losses = []
    tokenizer = data.tokenizer
    for index, batch in enumerate(batches):
        batch = batch.to(device)
        if config.objective == "causal":
            losses.append(float(causal_loss(model, batch)))
            continue
        for ratio in EVAL_MASK_RATIOS:
            collator = DiffusionCollator.from_tokenizer(tokenizer, ratio_schedule=(ratio,))
            generator = torch.Generator().manual_seed(derive_seed(config.seed, EVAL_STREAM, index))
            masked = collator(batch.cpu(), generator=generator)
            losses.append(float(diffusion_loss(model, masked["input_ids"].to(device), masked["labels"].to(device))))
    model.train(was_training)
    return sum(losses) / len(losses)


def train(config: TrainConfig) -> dict:
    """Train (or go on training) the run of ``config``.

    Starts from ``output_dir/checkpoint`` when there is one. Each step's randomness is derived from
    ``(seed, step)``: the windows (a seeded permutation per epoch), the mask ratio and positions, and
    dropout. With the same thread count the result is bit-identical however the run is cut into
    pieces. Deterministic algorithms are switched on for the call (and restored after).

    Args:
        config: a :class:`~fastdiff.training.config.TrainConfig`.

    Returns:
        ``{"step": steps done, "finished": bool, "loss": the last logged training loss or None}``.
    """
    config.validate()
    run_dir = Path(config.output_dir)
    data = PreparedData.load(config.data)
    starts = window_starts(data.train, config.seq_length)
    if len(starts) == 0:
        raise ValueError(f"the training stream is shorter than seq_length={config.seq_length}")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".writable"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"output_dir {str(run_dir)!r} is not writable: {error.strerror or error}") from None
    check_run(run_dir, config)
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(config.threads)
    torch.use_deterministic_algorithms(True)
    try:
        return _train_piece(config, data, starts, run_dir)
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic)


def _resume(config: TrainConfig, data: PreparedData, run_dir: Path) -> Tuple[torch.nn.Module, torch.optim.AdamW, int]:
    """``(model, optimizer, steps done)`` from the run's checkpoint, or a new model at step 0."""
    checkpoint = load_checkpoint(run_dir, config.objective)
    if checkpoint is None:
        model, optimizer_state, start = build_model(config, data.tokenizer, data.manifest.get("base_token_ids")), None, 0
    else:
        model, optimizer_state, start = checkpoint
    model.to(torch.device(config.device)).train()
    optimizer = build_optimizer(model, config)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    return model, optimizer, start


def _train_piece(config: TrainConfig, data: PreparedData, starts: torch.Tensor, run_dir: Path) -> dict:
    """Steps from the checkpoint on, until the last step, ``max_minutes`` or ``stop_at_step``; logs,
    evaluates and saves on the way (the result of :func:`train`)."""
    tokenizer = data.tokenizer
    model, optimizer, start = _resume(config, data, run_dir)
    collator = DiffusionCollator.from_tokenizer(
        tokenizer, mask_ratio=tuple(config.mask_ratio), ratio_schedule=config.mask_ratio_schedule,
        prefix_length=tuple(config.prefix_length)) if config.objective == "diffusion" else None
    eval_batches = _eval_batches(config, data)
    piece = 1 + sum(1 for record in read_log(run_dir) if record.get("event") == "piece_start")
    began = time.perf_counter()
    append_log(run_dir, {"event": "piece_start", "piece": piece, "step": start, "threads": config.threads,
                         "device": config.device, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                         "parameters": sum(p.numel() for p in model.parameters())})
    window_losses, window_ratios, last_loss, step = [], [], None, start
    bar = tqdm(total=config.steps, initial=start, disable=not config.progress, desc=f"{config.objective} fit",
               dynamic_ncols=True)
    for step in range(start, config.steps):
        batch = windows(data.train, starts[batch_window_indices(step, config.batch_size, len(starts), config.seed)],
                        tokenizer.bos_token_id, config.seq_length)
        loss, ratio, grad_norm = _optimizer_step(model, optimizer, collator, batch, config, step)
        window_losses.append(loss)
        window_ratios += [] if ratio is None else [ratio]
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")
        done = step + 1
        if done % config.log_every == 0 or done == config.steps:
            last_loss = sum(window_losses) / len(window_losses)
            record = {"step": done, "loss": round(last_loss, 5), "lr": learning_rate_at(config, step),
                      "grad_norm": round(grad_norm, 4), "piece": piece,
                      "elapsed_s": round(time.perf_counter() - began, 1)}
            if window_ratios:
                record["mask_ratio"] = round(sum(window_ratios) / len(window_ratios), 4)
            append_log(run_dir, record)
            window_losses, window_ratios = [], []
        if done % config.eval_every == 0 or done == config.steps:
            eval_loss = evaluate(model, config, data, eval_batches)
            if eval_loss is not None:
                append_log(run_dir, {"step": done, "eval_loss": round(eval_loss, 5), "piece": piece})
        stop = ((config.max_minutes is not None and time.perf_counter() - began > 60 * config.max_minutes)
                or done == config.stop_at_step)
        if done % config.save_every == 0 or done == config.steps or stop:
            save_checkpoint(run_dir, model, optimizer, done)
        if stop and done < config.steps:
            step = done
            break
    else:
        step = config.steps
    bar.close()
    append_log(run_dir, {"event": "piece_end", "piece": piece, "step": step,
                         "elapsed_s": round(time.perf_counter() - began, 1)})
    return {"step": step, "finished": step >= config.steps, "loss": last_loss}


def _optimizer_step(model: torch.nn.Module, optimizer: torch.optim.AdamW, collator: Optional[DiffusionCollator],
                    batch: torch.Tensor, config: TrainConfig, step: int) -> Tuple[float, Optional[float], float]:
    """One optimizer step on ``batch`` (masked by ``collator``, or next-token without one):
    ``(loss, the batch's mask ratio or None, gradient norm before clipping)``."""
    device = torch.device(config.device)
    for group in optimizer.param_groups:
        group["lr"] = learning_rate_at(config, step)
    torch.manual_seed(derive_seed(config.seed, DROPOUT_STREAM, step))
    ratio = None
    if collator is None:
        loss = causal_loss(model, batch.to(device))
    else:
        generator = torch.Generator().manual_seed(derive_seed(config.seed, MASK_STREAM, step))
        masked = collator(batch, generator=generator, step=step)
        ratio = masked["mask_ratio"]
        loss = diffusion_loss(model, masked["input_ids"].to(device), masked["labels"].to(device))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    return loss.item(), ratio, float(grad_norm)
