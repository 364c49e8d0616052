"""What speed costs in quality: the English demo diffusion model against a same-size GPT-2.

Run (CPU: about 10 minutes on 2 cores)::

    training/reproduce.sh english-ar     # the GPT-2 reference and the data directory
    python benchmarks/quality.py --ar-model /tmp/fastdiff-train/models/english_ar \
        --data /tmp/fastdiff-train/english/data \
        --dictionary /tmp/fastdiff-train/english/docs/wamerican/usr/share/dict/american-english

The AR reference has the demo model's size (6 layers, hidden 384), data and tokenizer, and a
next-token loss. Everything is measured in one run, on this machine:

* **Generative perplexity.** Prompts are 32-token windows (from a paragraph start) of the held-out
  documentation pages; each model writes 64 tokens after them at temperature 1 (no truncation,
  special tokens suppressed). The AR model scores the 64 tokens given the prompt: ``exp`` of the
  mean negative log-likelihood. Diffusion runs at 1, 4 and 16 tokens per step (64, 16 and 4 steps)
  for each unmask rule (``confidence``, ``margin``, ``entropy``, ``random``, ``ancestral``, and
  ``threshold``: confidence >= 0.9 within the same step budget). The reference rows are the AR
  model's own samples and the real held-out continuations; the mean unigram entropy of the samples
  (nats) guards against repetition.
* **Words.** At 4 tokens per step and temperature 0.8 (each unmask rule), the AR model's samples at
  0.8 and the held-out text: the share of words in an English word list (``--dictionary``, Debian's
  ``wamerican``), the rates of the commonest function words per 100 words, and code punctuation
  characters (``{}[]<>=_/\\|$#@`~^*;``) per 1,000 characters.
* **Wall-clock** of each generation call for the whole batch, the fastest of ``--repeats`` runs
  (eager PyTorch, fastdiff's masked-row LM head; the AR model decodes with its KV cache).
* **Infill accuracy.** In held-out paragraphs, one word (or a span of three words) is masked, its
  token count given (oracle length), and the demo model fills it greedily: exact match of the
  hidden words and token accuracy. The AR model, which cannot see the right context, is shown
  completing the same hole greedily from the left context only.

Writes ``benchmarks/results/quality.json``, ``quality.md`` and ``quality_frontier.png``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from fastdiff import Sampler
from fastdiff.bench import cpu_name
from fastdiff.pretrained import load_pretrained
from fastdiff.training.corpus import TokenStream
from fastdiff.training.data import PreparedData, window_starts, windows

RULES = ("confidence", "margin", "entropy", "random", "ancestral", "threshold")
TOKENS_PER_STEP = (1, 4, 16)
INFILL_TOKENS_PER_STEP = (1, 4)
THRESHOLD = 0.9
# the words' measure: tokens per step and temperature of the diffusion samples (every rule)
WORDS_TOKENS_PER_STEP, WORDS_TEMPERATURE = 4, 0.8
FUNCTION_WORDS = ("the", "of", "and", "to", "a", "in", "is", "that", "for", "it", "as", "with", "be", "on",
                  "by", "this", "are", "or", "not", "can")
CODE_PUNCTUATION = frozenset("{}[]<>=_/\\|$#@`~^*;")
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
RESULTS = Path(__file__).resolve().parent / "results"


# ------------------------------------------------------------------------------------------------
# held-out data
# ------------------------------------------------------------------------------------------------
def generation_prompts(stream: TokenStream, bos_token_id: int, eos_token_id: int, prompt_length: int,
                       gen_length: int, count: int):
    """``count`` windows of ``bos`` + prompt + true continuation from the held-out stream, each starting
    at a paragraph start with no EOS inside its prompt, spread evenly over the stream."""
    starts = window_starts(stream, prompt_length + gen_length + 1)
    rows = windows(stream, starts, bos_token_id, prompt_length + gen_length + 1)
    rows = rows[~(rows[:, 1:prompt_length + 1] == eos_token_id).any(dim=1)]
    if len(rows) == 0:
        raise ValueError("the held-out stream has no window that long")
    picked = torch.linspace(0, len(rows) - 1, count).round().long()
    rows = rows[picked]
    return rows[:, :prompt_length + 1], rows[:, prompt_length + 1:]


def paragraphs(stream: TokenStream, eos_token_id: int) -> List[List[int]]:
    """The stream cut at its EOS tokens: one token list per paragraph."""
    ends = (stream.ids == eos_token_id).nonzero().flatten().tolist()
    cuts = [0] + [end + 1 for end in ends]
    return [stream.ids[a:b - 1].tolist() for a, b in zip(cuts, cuts[1:]) if b - 1 > a]


def infill_tasks(tokenizer, paragraph_ids: Sequence[List[int]], count: int, span_words: int,
                 max_length: int) -> List[dict]:
    """Held-out paragraphs with ``span_words`` consecutive words to fill.

    Each task: ``canvas`` (``bos`` + the paragraph's tokens, at most ``max_length``), ``hole`` (the
    token positions of the words, ``##`` continuations included) and ``answer`` (the original
    tokens). The words are chosen by a hash of the paragraph's tokens among those made of letters.
    """
    tasks = []
    for ids in paragraph_ids:
        ids = list(ids[:max_length - 1])
        tokens = tokenizer.convert_ids_to_tokens(ids)
        # word starts: a token that does not continue the one before
        starts = [i for i, token in enumerate(tokens) if not token.startswith("##")] + [len(tokens)]
        spans = []
        for w in range(len(starts) - 1 - span_words):  # the paragraph's last word (often cut) is never hidden
            first, end = starts[w], starts[w + span_words]
            if all(tokens[i].lstrip("#").isalpha() for i in range(first, end)):
                spans.append((first, end))
        if not spans:
            continue
        key = hashlib.sha256(f"{ids}:{span_words}".encode()).hexdigest()
        first, end = spans[int(key, 16) % len(spans)]
        tasks.append({"canvas": [tokenizer.bos_token_id] + ids, "hole": (first + 1, end + 1), "answer": ids[first:end]})
    picked = torch.linspace(0, len(tasks) - 1, min(count, len(tasks))).round().long().tolist()
    return [tasks[i] for i in picked]


def word_statistics(texts: Sequence[str], dictionary: Optional[frozenset]) -> dict:
    """The English of ``texts``: the share of words in ``dictionary`` (``None``: not measured), each
    of :data:`FUNCTION_WORDS` per 100 words, and :data:`CODE_PUNCTUATION` characters per 1,000."""
    words = [word for text in texts for word in _WORD.findall(text.lower())]
    characters = sum(len(text) for text in texts)
    counts = Counter(words)
    total = max(len(words), 1)
    return {
        "words": len(words),
        "dictionary_share": None if dictionary is None else round(sum(w in dictionary for w in words) / total, 4),
        "function_words_per_100": {w: round(100 * counts[w] / total, 2) for w in FUNCTION_WORDS},
        "code_punctuation_per_1000": round(1000 * sum(c in CODE_PUNCTUATION for t in texts for c in t)
                                           / max(characters, 1), 3),
    }


def load_dictionary(path: Optional[str]) -> Optional[frozenset]:
    """The lower-cased words of a word list (one per line), or ``None`` without one."""
    if path is None:
        return None
    return frozenset(line.strip().lower() for line in Path(path).read_text(errors="replace").splitlines() if line.strip())


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


def words_benchmark(model, tokenizer, ar_model, prompts, continuations, dictionary, seed: int) -> List[dict]:
    """:func:`word_statistics` of the held-out continuations, the AR model's samples and the demo
    model's under each unmask rule at :data:`WORDS_TOKENS_PER_STEP` tokens per step, the samples at
    :data:`WORDS_TEMPERATURE`, with three samples of each."""
    G = continuations.shape[1]
    suppress = suppressed_tokens(tokenizer)
    sampler = Sampler(model, mask_token_id=tokenizer.mask_token_id, backend="torch", cuda_graphs=False,
                      temperature=WORDS_TEMPERATURE, suppress_token_ids=suppress, seed=seed)
    sources = {"held-out text": continuations,
               "AR (GPT-2)": ar_generate(ar_model, prompts, G, WORDS_TEMPERATURE, suppress, seed)}
    for rule in RULES:
        sources[f"fastdiff demo: {rule}"] = sampler.generate(
            prompts, gen_length=G, steps=math.ceil(G / WORDS_TOKENS_PER_STEP),
            **rule_options(rule)).sequences[:, prompts.shape[1]:]
    rows = []
    for name, tokens in sources.items():
        texts = tokenizer.batch_decode(tokens, skip_special_tokens=True)
        rows.append({"source": name, **word_statistics(texts, dictionary), "samples": texts[:3]})
        print(_format({k: v for k, v in rows[-1].items() if k != "samples"}), flush=True)
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
    generation, infill, words = result["generation"], result["infill"], result["words"]
    meta = result["setup"]
    lines = ["# Quality benchmark: English demo diffusion model vs same-size GPT-2 (CPU)", "",
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
    lines += ["", f"## Words (the demo model at {WORDS_TOKENS_PER_STEP} tokens per step and the AR model, both at "
              f"temperature {WORDS_TEMPERATURE})", "",
              "| text | words | in the word list | " + " | ".join(f"'{w}'" for w in FUNCTION_WORDS[:8])
              + " (per 100 words) | code punctuation per 1,000 characters |",
              "|---|---|---|" + "---|" * 8 + "---|"]
    for row in words:
        share = "-" if row["dictionary_share"] is None else f"{100 * row['dictionary_share']:.1f} %"
        rates = " | ".join(f"{row['function_words_per_100'][w]:.1f}" for w in FUNCTION_WORDS[:8])
        lines.append(f"| {row['source']} | {row['words']} | {share} | {rates} | {row['code_punctuation_per_1000']:g} |")
    for row in words:
        lines += ["", f"{row['source']}, first samples:", ""] + [f"> {text}" for text in row["samples"]]
    for kind in ("word", "span"):
        rows = [r for r in infill if r["kind"] == kind]
        if not rows:
            continue
        title = "one word" if kind == "word" else f"{meta['span_words']} consecutive words"
        lines += ["", f"## Infill: {title} of held-out paragraphs ({rows[0]['tasks']} tasks, greedy, oracle length)",
                  "", "| model / rule | target tokens per step | mean steps | exact match | token accuracy | seconds |",
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
    axis.set_title("English demo diffusion model: quality vs speed (labels: tokens per step)")
    axis.legend(fontsize=8)
    axis.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ar-model", required=True, help="directory of the AR reference model (GPT-2)")
    parser.add_argument("--data", required=True, help="the data directory the models were trained on (`prepare`)")
    parser.add_argument("--model", default=None, help="diffusion model directory (default: the bundled demo)")
    parser.add_argument("--dictionary", default=None, help="an English word list, one word per line")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--prompt-length", type=int, default=32)
    parser.add_argument("--gen-length", type=int, default=64)
    parser.add_argument("--infill-tasks", type=int, default=128)
    parser.add_argument("--infill-context", type=int, default=96, help="canvas tokens, at most")
    parser.add_argument("--span-words", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per generation setting (fastest kept)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--no-plot", action="store_true", help="skip the frontier plot (needs matplotlib)")
    args = parser.parse_args(argv)

    from transformers import AutoModelForCausalLM

    torch.set_num_threads(args.threads)
    model, tokenizer = load_pretrained(args.model, device="cpu")
    ar_model = AutoModelForCausalLM.from_pretrained(args.ar_model, local_files_only=True, dtype=torch.float32).eval()
    data = PreparedData.load(args.data)
    if data.tokenizer.get_vocab() != tokenizer.get_vocab():
        raise SystemExit("quality.py: error: --data was tokenised with another vocabulary than the model's")
    heldout = data.heldout
    prompts, continuations = generation_prompts(heldout, tokenizer.bos_token_id, tokenizer.eos_token_id,
                                                args.prompt_length, args.gen_length, args.prompts)
    result = {"setup": {"machine": cpu_name(),
                        "torch": torch.__version__, "threads": args.threads, "prompts": args.prompts,
                        "prompt_length": args.prompt_length, "gen_length": args.gen_length,
                        "span_words": args.span_words, "timing_repeats": args.repeats,
                        "infill_context": args.infill_context, "threshold": THRESHOLD, "seed": args.seed,
                        "heldout_tokens": len(heldout.ids), "dictionary": args.dictionary}}
    result["generation"] = generation_benchmark(model, tokenizer, ar_model, prompts, continuations, args.seed,
                                                args.repeats)
    result["words"] = words_benchmark(model, tokenizer, ar_model, prompts, continuations,
                                      load_dictionary(args.dictionary), args.seed)
    result["infill"] = []
    held_paragraphs = paragraphs(heldout, tokenizer.eos_token_id)
    for kind, span, count in (("word", 1, args.infill_tasks), ("span", args.span_words, args.infill_tasks // 2)):
        tasks = infill_tasks(tokenizer, held_paragraphs, count, span, args.infill_context)
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
