"""Data-parallel batch generation over ``torch.distributed``: a prompt file shared out to every rank,
results merged in input order, and a job that can be killed and started again.

:func:`generate_dataset` is what ``fastdiff generate --input FILE --output FILE`` runs, in one process or
under ``torchrun --nproc-per-node N -m fastdiff generate ...`` (NCCL on GPUs, gloo on CPUs, many
machines through torchrun's rendezvous). Every rank reads the input (it must see the same file) and
the results written so far, and takes its share of the lines still to run, balanced by prompt
length. Each rank appends its results to ``OUTPUT.parts/rank<r>.jsonl``, flushed and synced after
every batch; when every rank is done, rank 0 writes ``OUTPUT`` in input order, each line exactly once,
through a temporary file renamed over it, and removes the parts. A run killed at any point leaves
complete lines in the parts (a torn last line is dropped when the job starts again), so the same
command skips what was written and loses nothing. Each line's seed is ``seed + line - 1`` (or its own
``"seed"``), so results depend neither on the number of ranks nor on the batch size.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional

import torch

from fastdiff.cli import jobs as job_files
from fastdiff.config import SamplerConfig


@dataclass
class RankSummary:
    """What one rank did in this run."""

    rank: int
    prompts: int  # lines this rank ran in this run (results and errors)
    failed: int  # of them, lines with an ``error``
    tokens: int  # tokens generated (or holes filled)
    seconds: float
    error: Optional[str] = None  # why the rank stopped, if it did


def rank_and_world():
    """``(rank, world_size)`` of the initialised default process group, else ``(0, 1)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def generate_dataset(sampler, tokenizer, input_path, output_path, *, config: Optional[SamplerConfig] = None,
                     gen_length: int = 64, batch_size: int = 8, special_tokens: bool = True,
                     progress: bool = True) -> Dict[str, object]:
    """Run every prompt of ``input_path`` (text lines or JSONL, see :mod:`fastdiff.cli.jobs`) and write
    one JSONL result per line to ``output_path``, in input order, sharing the work out over the ranks of
    the default process group (one process when there is none).

    Args:
        sampler: this rank's :class:`fastdiff.Sampler` (its model on this rank's device).
        tokenizer: the model's tokenizer.
        input_path, output_path: the files; ``output_path``'s parts go to ``output_path + ".parts"``.
        config: the settings every line starts from (its ``seed``, default 0, seeds line 1).
        gen_length: tokens per prompt unless a line sets its own.
        batch_size: prompts per sampler call.
        special_tokens: encode prompts with the tokenizer's special tokens.
        progress: a progress bar over the whole job on rank 0 (stderr).

    Returns:
        On every rank: ``{"ok", "lines", "failed", "errors", "ranks"}``: ``failed`` lines with an
        ``error`` (``None`` when nothing was merged), ``errors`` why ranks stopped or the merge failed
        (the parts then stay for the next run), ``ranks`` each :class:`RankSummary` as a dict; ``ok``
        when nothing stopped and no line has an error.

    Example:
        >>> generate_dataset(sampler, tokenizer, "prompts.jsonl", "results.jsonl")  # doctest: +SKIP
    """
    config = config if config is not None else SamplerConfig()
    base_seed = config.seed if isinstance(config.seed, int) else 0
    config = config.replace(seed=base_seed)
    rank, world = rank_and_world()
    parts = Path(str(output_path) + ".parts")
    with open(input_path, encoding="utf-8") as source:
        jobs = job_files.read_jobs(source)
    if rank == 0:
        parts.mkdir(parents=True, exist_ok=True)
    _barrier()
    done = read_parts(parts)  # every rank reads the same parts before any rank writes
    _barrier()
    todo = [job for job in jobs if job.line not in done]
    start = time.perf_counter()
    summary = RankSummary(rank=rank, prompts=0, failed=0, tokens=0, seconds=0.0)
    bar = _ProgressBar(parts, len(jobs), enabled=progress and rank == 0)
    try:
        errors, runnable = job_files.prepare_jobs(todo, sampler, tokenizer, gen_length=gen_length,
                                                  special_tokens=special_tokens)
        mine = shard_lines(todo, runnable, world)[rank]
        lengths = {job.line: length for job, _, length in runnable}
        with _part_file(parts / f"rank{rank}.jsonl") as part:
            _append(part, [(line, errors[line]) for line in sorted(mine) if line in errors], summary)
            for batch in job_files.run_batches([item for item in runnable if item[0].line in mine], sampler,
                                               tokenizer, config, batch_size):
                _append(part, [(job.line, entry) for job, entry in batch], summary)
                summary.tokens += sum(_new_tokens(entry, lengths[job.line]) for job, entry in batch)
    except Exception as error:  # noqa: BLE001 - the rank reports and the job exits non-zero, without hanging
        summary.error = f"rank {rank}: {type(error).__name__}: {error}"
    summary.seconds = time.perf_counter() - start
    summaries = _gather(summary)
    bar.close()
    stopped = [s.error for s in summaries if s.error]
    merged = (None, None)
    if not stopped and rank == 0:
        try:
            merged = (merge_parts(jobs, parts, Path(output_path)), None)
        except (OSError, RuntimeError) as error:  # reported on every rank, not raised on one
            merged = (None, f"merging into {output_path}: {error}")
    failed, merge_error = _broadcast(merged)
    errors = stopped + ([merge_error] if merge_error else [])
    return {"ok": not errors and failed == 0, "lines": len(jobs), "failed": failed, "errors": errors,
            "ranks": [asdict(s) for s in summaries]}


def shard_lines(todo, runnable, world: int) -> List[set]:
    """The input lines of each rank: the runnable prompts longest first, each to the rank with the least
    work so far (prompt plus generated tokens); lines that cannot run go round the ranks."""
    loads = [0] * world
    shares: List[set] = [set() for _ in range(world)]
    for job, encoded, length in sorted(runnable, key=lambda item: (-(len(item[1].ids) + item[2]), item[0].line)):
        target = min(range(world), key=lambda r: (loads[r], r))
        loads[target] += len(encoded.ids) + length
        shares[target].add(job.line)
    running = {item[0].line for item in runnable}
    for i, job in enumerate(job for job in todo if job.line not in running):
        shares[i % world].add(job.line)
    return shares


def read_parts(parts: Path) -> Dict[int, dict]:
    """The results already written, by input line; a torn last line (a killed write) is left out."""
    done: Dict[int, dict] = {}
    for path in sorted(parts.glob("rank*.jsonl")):
        for text in path.read_text(encoding="utf-8").splitlines(keepends=True):
            if not text.endswith("\n"):
                break
            try:
                record = json.loads(text)
            except json.JSONDecodeError:
                break
            done[record.pop("line")] = record
    return done


def merge_parts(jobs, parts: Path, output: Path) -> int:
    """Write ``output`` from the parts, in input order, atomically, and remove the parts; returns the
    number of lines with an ``error``. Raises ``RuntimeError`` if a line has no result."""
    done = read_parts(parts)
    missing = [job.line for job in jobs if job.line not in done]
    if missing:
        raise RuntimeError(f"lines {missing[:5]} have no result in {parts}: run the job again")
    temporary = output.with_name(output.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as out:
        for job in jobs:
            out.write(json.dumps(done[job.line]) + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, output)
    shutil.rmtree(parts)
    return sum("error" in done[job.line] for job in jobs)


class _part_file:
    """This rank's part, opened for appending after cutting a torn last line."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        if self.path.exists():
            data = self.path.read_bytes()
            keep = data.rfind(b"\n") + 1
            if keep != len(data):
                with open(self.path, "r+b") as torn:
                    torn.truncate(keep)
        self.file = open(self.path, "a", encoding="utf-8")
        return self.file

    def __exit__(self, *exc):
        self.file.close()


def _append(part, entries, summary: RankSummary) -> None:
    """Append whole lines, then flush and sync: a kill leaves at most a torn last line."""
    if not entries:
        return
    part.write("".join(json.dumps({"line": line, **entry}) + "\n" for line, entry in entries))
    part.flush()
    os.fsync(part.fileno())
    summary.prompts += len(entries)
    summary.failed += sum("error" in entry for _, entry in entries)


def _new_tokens(entry: dict, gen_length: int) -> int:
    """Tokens a result generated: the holes of an infill, else ``gen_length``; none for an error."""
    if "error" in entry:
        return 0
    return len(entry["fills"]) if "fills" in entry else gen_length


class _ProgressBar:
    """Rank 0's bar over the whole job: a thread counts the lines in every part twice a second."""

    def __init__(self, parts: Path, total: int, enabled: bool):
        self.enabled, self.parts = enabled, parts
        if not enabled:
            return
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc="prompts", unit="prompt", leave=False, file=sys.stderr)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self):
        while not self.stop.wait(0.5):
            self._refresh()

    def _refresh(self):
        count = sum(path.read_bytes().count(b"\n") for path in self.parts.glob("rank*.jsonl"))
        self.bar.update(max(count - self.bar.n, 0))

    def close(self):
        if self.enabled:
            self.stop.set()
            self.thread.join()
            self._refresh()
            self.bar.close()


def _barrier() -> None:
    if rank_and_world()[1] > 1:
        torch.distributed.barrier()


def _gather(summary: RankSummary) -> List[RankSummary]:
    """Every rank's summary, on every rank (after every rank finished or stopped)."""
    world = rank_and_world()[1]
    if world == 1:
        return [summary]
    gathered: List[Optional[dict]] = [None] * world
    torch.distributed.all_gather_object(gathered, asdict(summary))
    return [RankSummary(**item) for item in gathered]


def _broadcast(value):
    if rank_and_world()[1] == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def summary_lines(result: Dict[str, object]) -> List[str]:
    """The final summary: tokens per second per rank and in total."""
    ranks = result["ranks"]
    seconds = max((r["seconds"] for r in ranks), default=0.0)
    lines = [f"rank {r['rank']}: {r['prompts']} prompts, {r['tokens']} tokens in {r['seconds']:.2f} s "
             f"({r['tokens'] / r['seconds'] if r['seconds'] else 0:.0f} tokens/s)"
             + (f"; stopped: {r['error']}" if r["error"] else "") for r in ranks]
    total = sum(r["tokens"] for r in ranks)
    lines.append(f"total: {total} tokens in {seconds:.2f} s ({total / seconds if seconds else 0:.0f} tokens/s) "
                 f"on {len(ranks)} rank(s)")
    return lines


__all__ = ["generate_dataset", "merge_parts", "rank_and_world", "read_parts", "shard_lines", "summary_lines",
           "RankSummary"]
