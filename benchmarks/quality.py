"""What speed costs in quality: the demo diffusion model against a same-size GPT-2 on held-out code.

Run (CPU: about 40 minutes on 2 cores)::

    python benchmarks/quality.py --ar-model /tmp/fastdiff-train/models/ar_gpt2

``training/reproduce.sh ar`` trains the AR reference model (same data, tokenizer, size and schedule
as the demo model, next-token loss). Everything is measured in one run, on this machine:

* **Generative perplexity.** Prompts are 64-token windows (from a line start) of the held-out
  standard-library files; each model writes 96 tokens after them at temperature 1 (no truncation,
  special tokens suppressed). The AR model scores the 96 tokens given the prompt: ``exp`` of the
  mean negative log-likelihood over all generated tokens. Diffusion runs at 1, 2, 4, 8 and 24
  tokens per step (96, 48, 24, 12, 4 steps) for each unmask rule (``confidence``, ``margin``,
  ``entropy``, ``random``, ``ancestral``, and ``threshold``: confidence >= 0.9 within the same step
  budget, so it may take fewer steps). The reference rows are the AR model's own samples and the
  real held-out continuations. Low perplexity alone can mean repetitive text, so the mean unigram
  entropy of the samples (nats) is reported beside it.
* **Wall-clock** of each generation call for the whole batch, the fastest of ``--repeats`` runs
  (2 threads, eager PyTorch, fastdiff's masked-row LM head; the AR model decodes with its KV cache).
* **Infill accuracy.** In held-out functions, one body line (or a span of three body lines) is
  masked, its token count given (oracle length), and the demo model fills it greedily; exact match
  (every token right) and token accuracy. The AR model, which cannot see the right context, is
  shown completing the same hole greedily from the left context only.

Writes ``benchmarks/results/quality.json``, ``quality.md`` and ``quality_frontier.png``.
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F

from fastdiff import Sampler
from fastdiff.bench import cpu_name
from fastdiff.pretrained import load_pretrained
from fastdiff.training import corpus
from fastdiff.training.data import window_starts, windows

RULES = ("confidence", "margin", "entropy", "random", "ancestral", "threshold")
TOKENS_PER_STEP = (1, 2, 4, 8, 24)
INFILL_TOKENS_PER_STEP = (1, 4)
THRESHOLD = 0.9
RESULTS = Path(__file__).resolve().parent / "results"


# ------------------------------------------------------------------------------------------------
# held-out data
# ------------------------------------------------------------------------------------------------
def heldout_sources() -> List[Tuple[str, str]]:
    """The held-out standard-library files of the demo model's split, as ``(path, text)``."""
    _, heldout = corpus.split_files(corpus.source_files())
    return corpus.read_sources(corpus.stdlib_root(), heldout)


def generation_prompts(tokenizer, texts, prompt_length: int, gen_length: int, count: int):
    """``count`` windows of ``<s>`` + prompt + true continuation from the held-out stream, starting
    at line starts, inside one file, spread evenly over the stream."""
    stream = corpus.tokenize_texts(tokenizer, [text for _, text in texts])
    starts = window_starts(stream, prompt_length + gen_length + 1)
    rows = windows(stream, starts, tokenizer.bos_token_id, prompt_length + gen_length + 1)
    rows = rows[~(rows[:, 1:] == tokenizer.eos_token_id).any(dim=1)]
    picked = torch.linspace(0, len(rows) - 1, count).round().long()
    rows = rows[picked]
    return rows[:, :prompt_length + 1], rows[:, prompt_length + 1:]


def infill_tasks(tokenizer, texts, count: int, span_lines: int, max_length: int) -> List[dict]:
    """Held-out functions with ``span_lines`` consecutive body lines to fill.

    Each task: ``canvas`` (``<s>`` + the function's tokens, at most ``max_length``), ``hole`` (the
    token positions of the lines, their indentation included and the final newline excluded) and
    ``answer`` (the original tokens). The line is chosen by a hash of file, function and line count,
    among body lines that are not blank, comments or docstring lines.
    """
    tasks = []
    for name, text in texts:
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        lines = text.split("\n")
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or not node.body:
                continue
            body = node.body[1:] if _is_docstring(node.body[0]) else node.body
            candidates = [i for stmt in body for i in range(stmt.lineno - 1, stmt.end_lineno)
                          if lines[i].strip() and not lines[i].strip().startswith("#")]
            candidates = [i for i in candidates if all(j in candidates for j in range(i, i + span_lines))]
            if not candidates:
                continue
            key = f"{name}:{node.name}:{node.lineno}:{span_lines}".encode()
            first = candidates[int(hashlib.sha256(key).hexdigest(), 16) % len(candidates)]
            start_line = node.lineno - 1 - len(node.decorator_list)
            before = "\n".join(lines[start_line:first]) + "\n"
            hole = "\n".join(lines[first:first + span_lines])
            after = "\n" + "\n".join(lines[first + span_lines:node.end_lineno]) + "\n"
            ids_before = tokenizer(before, add_special_tokens=False)["input_ids"]
            ids_hole = tokenizer(hole, add_special_tokens=False)["input_ids"]
            ids_after = tokenizer(after, add_special_tokens=False)["input_ids"]
            if not ids_hole or len(ids_hole) > max_length // 2:
                continue
            room = max_length - 1 - len(ids_hole)
            n_before = min(len(ids_before), max(room // 2, room - len(ids_after)))
            keep_before = ids_before[len(ids_before) - n_before:]
            keep_after = ids_after[:room - len(keep_before)]
            canvas = [tokenizer.bos_token_id] + keep_before + ids_hole + keep_after
            position = 1 + len(keep_before)
            tasks.append({"file": name, "function": node.name, "line": first + 1,
                          "canvas": canvas, "hole": (position, position + len(ids_hole)), "answer": ids_hole})
    picked = torch.linspace(0, len(tasks) - 1, min(count, len(tasks))).round().long().tolist()
    return [tasks[i] for i in picked]


def _is_docstring(stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


# ------------------------------------------------------------------------------------------------
# the AR model
# ------------------------------------------------------------------------------------------------
@torch.inference_mode()
def ar_generate(model, prompt: torch.Tensor, gen_length: int, temperature: float, suppress: List[int],
                seed: int) -> torch.Tensor:
    """Left-to-right sampling with the KV cache; returns the ``[B, gen_length]`` generated tokens."""
    generator = torch.Generator().manual_seed(seed)
    out = model(input_ids=prompt, use_cache=True)
    past, logits = out.past_key_values, out.logits[:, -1]
    tokens = []
    for i in range(gen_length):
        logits = logits.float()
        logits[:, suppress] = float("-inf")
        if temperature == 0:
            token = logits.argmax(dim=-1, keepdim=True)
        else:
            token = torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1, generator=generator)
        tokens.append(token)
        if i + 1 < gen_length:
            out = model(input_ids=token, past_key_values=past, use_cache=True)
            past, logits = out.past_key_values, out.logits[:, -1]
    return torch.cat(tokens, dim=1)


@torch.inference_mode()
def ar_nll(model, prompt: torch.Tensor, continuation: torch.Tensor) -> torch.Tensor:
    """fp32 ``[B, G]``: the AR model's negative log-likelihood of each continuation token."""
    ids = torch.cat([prompt, continuation], dim=1)
    logits = model(input_ids=ids).logits[:, prompt.shape[1] - 1:-1].float()
    return F.cross_entropy(logits.transpose(1, 2), continuation, reduction="none")


def unigram_entropy(tokens: torch.Tensor) -> float:
    """Mean over rows of the entropy (nats) of each row's token histogram."""
    values = []
    for row in tokens:
        counts = torch.bincount(row).float()
        p = counts[counts > 0] / len(row)
        values.append(float(-(p * p.log()).sum()))
    return sum(values) / len(values)


def quality_row(ar_model, prompt, generated, seconds: float, nfe, **fields) -> dict:
    nll = ar_nll(ar_model, prompt, generated)
    B, G = generated.shape
    return dict(fields, gen_ppl=round(math.exp(float(nll.mean())), 3), entropy=round(unigram_entropy(generated), 4),
                seconds=round(seconds, 3), ms_per_sample=round(1000 * seconds / B, 1),
                tokens_per_second=round(B * G / seconds, 1) if seconds > 0 else None,
                nfe=nfe, tokens_per_step=round(G / nfe, 2) if nfe else None)


# ------------------------------------------------------------------------------------------------
# the runs
# ------------------------------------------------------------------------------------------------
def rule_options(rule: str) -> dict:
    """The sampler options of one row of the tables: an unmask rule, or ``"threshold"`` (confidence
    with :data:`THRESHOLD`)."""
    return dict(unmask="confidence", threshold=THRESHOLD) if rule == "threshold" else dict(unmask=rule)


def suppressed_tokens(tokenizer) -> List[int]:
    """The special tokens neither model may write (the sampler excludes the mask token itself)."""
    return [i for i in tokenizer.all_special_ids if i != tokenizer.mask_token_id]


def _timed(call, repeats: int):
    """``call()``'s first result and its fastest wall-clock over ``repeats`` runs (the same seed gives
    the same result each time, which is checked)."""
    result, best = None, float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        value = call()
        best = min(best, time.perf_counter() - start)
        tokens = value.sequences if hasattr(value, "sequences") else value
        if result is None:
            result, first = value, tokens
        elif not torch.equal(first, tokens):
            raise RuntimeError("a repeated generation with the same seed gave other tokens")
    return result, best


def generation_benchmark(model, tokenizer, ar_model, prompts, continuations, seed: int,
                         repeats: int) -> List[dict]:
    B, G = continuations.shape
    suppress = suppressed_tokens(tokenizer)
    rows = [quality_row(ar_model, prompts, continuations, 0.0, None, model="held-out text", rule="-", steps=None)]
    ar_generate(ar_model, prompts[:2], 4, 1.0, suppress, seed)  # warm-up
    generated, seconds = _timed(lambda: ar_generate(ar_model, prompts, G, 1.0, suppress, seed), repeats)
    rows.append(quality_row(ar_model, prompts, generated, seconds, G, model="AR (GPT-2)", rule="left-to-right",
                            steps=G))
    print(_format(rows[-2]), _format(rows[-1]), sep="\n", flush=True)
    sampler = Sampler(model, mask_token_id=tokenizer.mask_token_id, backend="torch", cuda_graphs=False,
                      temperature=1.0, suppress_token_ids=suppress, seed=seed)
    sampler.generate(prompts[:2], gen_length=8, steps=2)  # warm-up
    for rule in RULES:
        for k in TOKENS_PER_STEP:
            steps = math.ceil(G / k)
            options = rule_options(rule)
            out, elapsed = _timed(lambda: sampler.generate(prompts, gen_length=G, steps=steps, **options), repeats)
            generated = out.sequences[:, prompts.shape[1]:]
            assert not (generated == tokenizer.mask_token_id).any()
            rows.append(quality_row(ar_model, prompts, generated, elapsed, out.nfe, model="fastdiff demo",
                                    rule=rule, steps=steps, target_tokens_per_step=k))
            print(_format(rows[-1]), flush=True)
    return rows


def infill_benchmark(model, tokenizer, ar_model, tasks: List[dict], kind: str, seed: int) -> List[dict]:
    suppress = suppressed_tokens(tokenizer)
    sampler = Sampler(model, mask_token_id=tokenizer.mask_token_id, backend="torch", cuda_graphs=False,
                      temperature=0.0, suppress_token_ids=suppress, seed=seed)
    by_length: Dict[int, List[dict]] = {}
    for task in tasks:
        by_length.setdefault(len(task["answer"]), []).append(task)
    rows = []
    for rule in RULES:
        for k in INFILL_TOKENS_PER_STEP:
            options = rule_options(rule)
            exact = correct = total = nfe = 0
            start = time.perf_counter()
            for n, group in sorted(by_length.items()):
                canvas, attention = _left_pad([t["canvas"] for t in group], tokenizer.pad_token_id)
                width = canvas.shape[1]
                holes = torch.zeros_like(canvas, dtype=torch.bool)
                for r, t in enumerate(group):
                    shift = width - len(t["canvas"])
                    holes[r, shift + t["hole"][0]:shift + t["hole"][1]] = True
                out = sampler.infill(canvas.masked_fill(holes, tokenizer.mask_token_id), attention_mask=attention,
                                     steps=math.ceil(n / k), **options)
                nfe += out.nfe * len(group)
                for r, t in enumerate(group):
                    filled = out.sequences[r][holes[r]]
                    answer = torch.tensor(t["answer"])
                    correct += int((filled == answer).sum())
                    total += n
                    exact += bool(torch.equal(filled, answer))
            rows.append({"kind": kind, "model": "fastdiff demo", "rule": rule, "target_tokens_per_step": k,
                         "exact_match": round(exact / len(tasks), 4), "token_accuracy": round(correct / total, 4),
                         "mean_nfe": round(nfe / len(tasks), 2), "seconds": round(time.perf_counter() - start, 2),
                         "tasks": len(tasks)})
            print(_format(rows[-1]), flush=True)
    exact = correct = total = 0
    start = time.perf_counter()
    for task in tasks:
        prefix = torch.tensor([task["canvas"][:task["hole"][0]]])
        filled = ar_generate(ar_model, prefix, len(task["answer"]), 0.0, suppress, seed)[0]
        answer = torch.tensor(task["answer"])
        correct += int((filled == answer).sum())
        total += len(answer)
        exact += bool(torch.equal(filled, answer))
    rows.append({"kind": kind, "model": "AR (GPT-2), left context only", "rule": "left-to-right",
                 "target_tokens_per_step": 1, "exact_match": round(exact / len(tasks), 4),
                 "token_accuracy": round(correct / total, 4), "mean_nfe": round(total / len(tasks), 2),
                 "seconds": round(time.perf_counter() - start, 2), "tasks": len(tasks)})
    print(_format(rows[-1]), flush=True)
    return rows


def _left_pad(sequences: List[List[int]], pad_id: int):
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.int64)
    attention = torch.zeros((len(sequences), width), dtype=torch.int64)
    for r, s in enumerate(sequences):
        ids[r, width - len(s):] = torch.tensor(s)
        attention[r, width - len(s):] = 1
    return ids, attention


def _format(row: dict) -> str:
    return "  ".join(f"{k}={v}" for k, v in row.items())


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------
def write_markdown(result: dict, path: Path) -> None:
    generation, infill = result["generation"], result["infill"]
    meta = result["setup"]
    lines = ["# Quality benchmark: demo diffusion model vs same-size GPT-2 (CPU)", "",
             f"Measured by `benchmarks/quality.py` on {meta['machine']}, {meta['threads']} threads, "
             f"torch {meta['torch']}, in one run. {meta['prompts']} held-out prompts of {meta['prompt_length']} "
             f"tokens, {meta['gen_length']} generated tokens each, temperature 1. Wall-clock is for the whole batch "
             "on a shared 2-core machine (noisy: compare within this table only).", "",
             "## Generative perplexity under the AR model (lower is better; entropy guards against repetition)", "",
             "| model / rule | tokens per step | steps run | gen. PPL | unigram entropy | ms per sample |",
             "|---|---|---|---|---|---|"]
    for row in generation:
        tps = "-" if row["tokens_per_step"] is None else f"{row['tokens_per_step']:g}"
        steps = "-" if row["nfe"] is None else row["nfe"]
        ms = "-" if row["seconds"] == 0 else f"{row['ms_per_sample']:.0f}"
        label = row["model"] if row["rule"] in ("-", "left-to-right") else f"{row['model']}: {row['rule']}"
        lines.append(f"| {label} | {tps} | {steps} | {row['gen_ppl']:.1f} | {row['entropy']:.2f} | {ms} |")
    for kind in ("line", "span"):
        rows = [r for r in infill if r["kind"] == kind]
        if not rows:
            continue
        title = "one body line" if kind == "line" else f"{meta['span_lines']} consecutive body lines"
        lines += ["", f"## Infill: {title} of held-out functions ({rows[0]['tasks']} tasks, greedy, oracle length)", "",
                  "| model / rule | target tokens per step | mean steps | exact match | token accuracy | seconds |",
                  "|---|---|---|---|---|---|"]
        for row in rows:
            lines.append(f"| {row['model']}: {row['rule']} | {row['target_tokens_per_step']} | {row['mean_nfe']:g} | "
                         f"{100 * row['exact_match']:.1f} % | {100 * row['token_accuracy']:.1f} % | {row['seconds']:.1f} |")
    path.write_text("\n".join(lines) + "\n")


def plot_frontier(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7.5, 5))
    generation = result["generation"]
    for rule in RULES:
        rows = [r for r in generation if r["rule"] == rule]
        axis.plot([r["ms_per_sample"] for r in rows], [r["gen_ppl"] for r in rows], marker="o", label=rule)
        for r in rows:
            axis.annotate(f"{r['tokens_per_step']:g}", (r["ms_per_sample"], r["gen_ppl"]), fontsize=7,
                          textcoords="offset points", xytext=(3, 3))
    ar = next(r for r in generation if r["model"] == "AR (GPT-2)")
    axis.scatter([ar["ms_per_sample"]], [ar["gen_ppl"]], marker="*", s=200, color="black", zorder=5,
                 label="AR (GPT-2), KV cache")
    data = next(r for r in generation if r["model"] == "held-out text")
    axis.axhline(data["gen_ppl"], color="gray", linestyle="--", linewidth=1, label="held-out text")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("wall-clock per sample (ms, CPU, batch of %d)" % result["setup"]["prompts"])
    axis.set_ylabel("generative perplexity under the AR model")
    axis.set_title("Demo diffusion model: quality vs speed (labels: tokens per step)")
    axis.legend(fontsize=8)
    axis.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ar-model", required=True, help="directory of the AR reference model (GPT-2)")
    parser.add_argument("--model", default=None, help="diffusion model directory (default: the bundled demo)")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--prompt-length", type=int, default=64)
    parser.add_argument("--gen-length", type=int, default=96)
    parser.add_argument("--infill-tasks", type=int, default=128)
    parser.add_argument("--infill-context", type=int, default=128, help="canvas tokens around a hole, at most")
    parser.add_argument("--span-lines", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per generation setting (fastest kept)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--no-plot", action="store_true", help="skip the frontier plot (needs matplotlib)")
    args = parser.parse_args(argv)

    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    model, tokenizer = load_pretrained(args.model, device="cpu")
    ar_model = AutoModelForCausalLM.from_pretrained(args.ar_model, local_files_only=True, dtype=torch.float32).eval()
    texts = heldout_sources()
    prompts, continuations = generation_prompts(tokenizer, texts, args.prompt_length, args.gen_length, args.prompts)
    result = {"setup": {"machine": cpu_name(),
                        "torch": torch.__version__, "threads": args.threads, "prompts": args.prompts,
                        "prompt_length": args.prompt_length, "gen_length": args.gen_length,
                        "span_lines": args.span_lines, "timing_repeats": args.repeats, "infill_context": args.infill_context,
                        "threshold": THRESHOLD, "seed": args.seed,
                        "heldout_files": len(texts)}}
    result["generation"] = generation_benchmark(model, tokenizer, ar_model, prompts, continuations, args.seed,
                                                args.repeats)
    result["infill"] = []
    for kind, span, count in (("line", 1, args.infill_tasks), ("span", args.span_lines, args.infill_tasks // 2)):
        tasks = infill_tasks(tokenizer, texts, count, span, args.infill_context)
        result["infill"] += infill_benchmark(model, tokenizer, ar_model, tasks, kind, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(json.dumps(result, indent=1) + "\n")
    write_markdown(result, out / "quality.md")
    if not args.no_plot:
        plot_frontier(result, out / "quality_frontier.png")
    print(f"wrote {out / 'quality.json'}, quality.md" + ("" if args.no_plot else ", quality_frontier.png"))


if __name__ == "__main__":
    main()
