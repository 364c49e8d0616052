"""``fastdiff generate --input FILE``: many prompts in one job. Reads a text file (one prompt per line)
or JSONL (``{"id": ..., "prompt": ..., <options>}``), runs them in batches and writes one JSONL result
per input line, in input order. A line that cannot run gets an ``error`` field and the job goes on."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from dataclasses import dataclass, field
from typing import IO, ContextManager, Dict, Iterator, List, Optional, Tuple

from fastdiff.cli.parser import CLIError
from fastdiff.config import SamplerConfig
from fastdiff.text import EncodedText, encode_text

_CONFIG_FIELDS = {f.name for f in dataclasses.fields(SamplerConfig)}


@dataclass
class Job:
    """One input line: its id, its prompt or template, its own options, or why it cannot run."""

    line: int  # 1-based line number in the input
    id: object
    prompt: Optional[str] = None
    options: Dict[str, object] = field(default_factory=dict)  # SamplerConfig fields and gen_length
    error: Optional[str] = None


def read_jobs(stream: IO[str]) -> List[Job]:
    """The jobs of an input: JSONL when its first non-empty line starts with ``{``, else one prompt per
    line (blank lines skipped; ``\\n`` in a line stays as typed: use JSONL for multi-line prompts)."""
    lines = [(number, text.rstrip("\n")) for number, text in enumerate(stream, 1)]
    lines = [(number, text) for number, text in lines if text.strip()]
    if not lines:
        raise CLIError("--input holds no prompt")
    if not lines[0][1].lstrip().startswith("{"):
        return [Job(line=number, id=number, prompt=text) for number, text in lines]
    return [_json_job(number, text) for number, text in lines]


def _json_job(number: int, text: str) -> Job:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        return Job(line=number, id=number, error=f"line {number}: not JSON ({error.msg})")
    if not isinstance(record, dict):
        return Job(line=number, id=number, error=f"line {number}: expected a JSON object")
    job = Job(line=number, id=record.pop("id", number))
    prompt = record.pop("prompt", None)
    if not isinstance(prompt, str) or not prompt:
        job.error = f"line {number}: 'prompt' must be a non-empty string"
        return job
    job.prompt = prompt
    if "max_new_tokens" in record:
        record["gen_length"] = record.pop("max_new_tokens")
    unknown = sorted(set(record) - _CONFIG_FIELDS - {"gen_length"})
    if unknown:
        job.error = f"line {number}: unknown option(s) {', '.join(unknown)}"
        return job
    job.options = record
    return job


def _batches(jobs: List[Tuple[Job, EncodedText, int]], size: int) -> Iterator[List[Tuple[Job, EncodedText, int]]]:
    """Runs of up to ``size`` consecutive jobs that share mode, length and options (one sampler call)."""
    batch: List = []
    for item in jobs:
        job, encoded, gen_length = item
        key = (encoded.is_template, gen_length, json.dumps({k: v for k, v in job.options.items()
                                                             if k not in ("seed", "gen_length")}, sort_keys=True))
        if batch and (len(batch) == size or batch[0][3] != key):
            yield [entry[:3] for entry in batch]
            batch = []
        batch.append((job, encoded, gen_length, key))
    if batch:
        yield [entry[:3] for entry in batch]


def prepare_jobs(jobs: List[Job], sampler, tokenizer, *, gen_length: int, special_tokens: bool
                 ) -> Tuple[Dict[int, dict], List[Tuple[Job, EncodedText, int]]]:
    """Check each job's options and encode its prompt: the error results of the lines that cannot run
    (by line) and the ``(job, encoded prompt, gen_length)`` of the others."""
    errors: Dict[int, dict] = {}
    runnable = []
    for job in jobs:
        if job.error is None:
            try:
                SamplerConfig().replace(**{k: v for k, v in job.options.items() if k != "gen_length"})
                encoded = encode_text(job.prompt, tokenizer, sampler.mask_token_id, special_tokens=special_tokens)
                length = job.options.get("gen_length", gen_length)
                if not isinstance(length, int) or isinstance(length, bool) or length < 1:
                    raise ValueError(f"gen_length must be an int >= 1, got {length!r}")
                seed = job.options.get("seed")
                if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
                    raise TypeError(f"seed must be an int (one per line), got {seed!r}")
                runnable.append((job, encoded, length))
            except (ValueError, TypeError) as error:
                job.error = f"line {job.line}: {error}"
        if job.error is not None:
            errors[job.line] = {"id": job.id, "error": job.error}
    return errors, runnable


def run_batches(runnable: List[Tuple[Job, EncodedText, int]], sampler, tokenizer, config: SamplerConfig,
                batch_size: int) -> Iterator[List[Tuple[Job, dict]]]:
    """The results of ``runnable`` (see :func:`prepare_jobs`), one sampler call (a list of
    ``(job, result)``) at a time. Each prompt's seed is ``config.seed + line - 1`` unless its line sets
    ``seed``, and a padded row gives the same result as alone with its seed: results do not depend on
    how lines are batched."""
    for batch in _batches(runnable, batch_size):
        yield list(zip((b[0] for b in batch), _run_batch(batch, sampler, tokenizer, config)))


def run_jobs(jobs: List[Job], sampler, tokenizer, config: SamplerConfig, *, gen_length: int, batch_size: int,
             special_tokens: bool, output: IO[str], bar) -> Tuple[int, int]:
    """Run ``jobs`` with ``sampler`` and write one JSON line each to ``output``, in input order.

    Returns:
        ``(ok, failed)``: the lines written with a result and with an ``error``.
    """
    results, runnable = prepare_jobs(jobs, sampler, tokenizer, gen_length=gen_length, special_tokens=special_tokens)
    bar.update(len(results))
    for batch in run_batches(runnable, sampler, tokenizer, config, batch_size):
        results.update((job.line, entry) for job, entry in batch)
        bar.update(len(batch))
    failed = 0
    for job in jobs:
        result = results[job.line]
        failed += "error" in result
        output.write(json.dumps(result) + "\n")
    output.flush()
    return len(jobs) - failed, failed


def _run_batch(batch, sampler, tokenizer, config: SamplerConfig) -> List[dict]:
    """One sampler call for a batch of jobs; when it fails, each job runs alone, so that only the jobs
    that fail by themselves (a prompt too long for the model, say) get the error."""
    jobs = [job for job, _, _ in batch]
    options = {k: v for k, v in jobs[0].options.items() if k not in ("seed", "gen_length")}
    seeds = [job.options.get("seed", config.seed + job.line - 1) for job in jobs]
    ids = [encoded.ids for _, encoded, _ in batch]
    template = batch[0][1].is_template
    try:
        if template:
            out = sampler.infill(ids, seed=seeds, **options)
        else:
            out = sampler.generate(ids, max_new_tokens=batch[0][2], seed=seeds, **options)
    except (ValueError, TypeError) as error:
        if len(batch) > 1:
            return [entry for item in batch for entry in _run_batch([item], sampler, tokenizer, config)]
        return [{"id": jobs[0].id, "error": f"line {jobs[0].line}: {error}"}]
    entries = []
    width = out.sequences.shape[1]
    for row, (job, encoded, length) in enumerate(batch):
        tokens = out.sequences[row, width - (len(encoded.ids) if template else len(encoded.ids) + length):].tolist()
        entry = {"id": job.id, "prompt": job.prompt, "text": tokenizer.decode(
            tokens if template else tokens[len(encoded.ids):], skip_special_tokens=True),
            "stopped_at_eos": bool(out.stopped_at_eos[row]), "seed": seeds[row]}
        if template:
            entry["fills"] = [tokenizer.decode(tokens[start:end], skip_special_tokens=True)
                              for start, end in encoded.holes]
        entries.append(entry)
    return entries


def open_input(path: str) -> ContextManager[IO[str]]:
    """``--input``: the file, or standard input for ``-`` (left open)."""
    if path == "-":
        return contextlib.nullcontext(sys.stdin)
    try:
        return open(path, encoding="utf-8")
    except OSError as error:
        raise CLIError(f"--input {path}: {error.strerror}") from None
