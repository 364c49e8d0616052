"""Writing a benchmark run: the JSON results file, the markdown table and the PNG plot."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional

# Speedup columns of the table: peer method -> column title.
SPEEDUP_COLUMNS = {
    "gpt2-hf-greedy": "× HF greedy",
    "gpt2-hf-sample": "× HF sampling",
    "gpt2-hf-static": "× HF static",
    "gpt2-static-graph": "× graph AR",
    "seed-naive": "× seed loop",
    "seed-batched": "× batched seed loop",
    "llada-eager": "× LLaDA loop",
}

TABLE_HEADER = ["scenario", "B", "steps", "tok/step", "wall s", "tok/s", "NFE", "ms/step", "peak MiB",
                *SPEEDUP_COLUMNS.values()]

# Plot markers of the seed loops (one point each: the blog's 10 steps)
SEED_MARKERS = {"seed-naive": "X", "seed-batched": "P"}

# Plot styles: curves over the step counts, and the GPT-2 peers as horizontal lines.
CURVE_STYLES = {
    "fastdiff-torch": dict(color="tab:blue", linestyle="-"),
    "fastdiff-triton": dict(color="tab:orange", linestyle="-"),
    "fastdiff-triton-graphs": dict(color="tab:green", linestyle="-"),
    "llada-eager": dict(color="tab:red", linestyle="--"),
}
GPT2_STYLES = {
    "gpt2-hf-greedy": dict(color="tab:gray", linestyle=":"),
    "gpt2-hf-sample": dict(color="tab:olive", linestyle=":"),
    "gpt2-hf-static": dict(color="tab:cyan", linestyle="-."),
    "gpt2-static-graph": dict(color="tab:purple", linestyle="-."),
}


def _number(value: Optional[float], digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _seconds(value: float) -> str:
    return f"{value:.3f}" if value >= 0.1 else f"{value * 1e3:.1f} ms"


def _load(device: Dict[str, object]) -> str:
    """``", 1-minute load average 0.8 -> 1.2"``: how busy the machine was (CPU timings depend on it)."""
    start, end = device.get("load_average_at_start"), device.get("load_average_at_end")
    if device["type"] != "cpu" or not start or not end:
        return ""
    return f", {device['torch_threads']} thread(s), 1-minute load average {start[0]:g} → {end[0]:g}"


def markdown_table(document: Dict[str, object]) -> str:
    """The results as a markdown table (one row per scenario, batch by batch), preceded by a line
    naming the device and versions and followed by the seed reproduction."""
    device, versions, config = document["device"], document["versions"], document["config"]
    lines = [
        f"Device: {device['name']} ({device['type']}); torch {versions['torch']}, transformers "
        f"{versions['transformers']}, triton {versions['triton'] or 'absent'}, fastdiff {versions['fastdiff']}"
        f"{' @ ' + versions['git_commit'] if versions.get('git_commit') else ''}. Size `{document['size']}`: "
        f"{config['dtype']}, {config['prompt_length']} prompt + {config['gen_length']} generated tokens, "
        f"median of {config['repeats']} runs{_load(device)}.",
        "",
        "| " + " | ".join(TABLE_HEADER) + " |",
        "|" + "|".join("---" if i == 0 else "--:" for i in range(len(TABLE_HEADER))) + "|",
    ]
    rows = sorted(document["results"], key=lambda r: r["batch"])
    for r in rows:
        steps = "–" if r["steps"] is None else str(r["steps"])
        head = [r["label"], str(r["batch"]), steps, f"{r['tokens_per_step']:g}"]
        if r["status"] != "ok":
            cells = [f"{r['status']}: {r['reason']}"] + ["–"] * (len(TABLE_HEADER) - len(head) - 1)
        else:
            speedups = [_number(r["speedup_vs"].get(peer), 2) + ("×" if peer in r["speedup_vs"] else "")
                        for peer in SPEEDUP_COLUMNS]
            cells = [_seconds(r["wall_s"]), f"{r['tokens_per_s']:.0f}", str(r["nfe"]), f"{r['ms_per_step']:.2f}",
                     _number(r["peak_gpu_mib"], 0), *speedups]
        lines.append("| " + " | ".join(head + cells) + " |")
    seed = document.get("seed_reproduction")
    if seed:
        lines += ["", (f"Seed reproduction (batch {seed['batch']}): naive RoBERTa-diffusion loop (10 steps) "
                       f"{seed['naive_diffusion_s']:.3f} s vs GPT-2 `generate` sampling (top-k 50, top-p 0.95, "
                       f"T 0.8) {seed['gpt2_generate_s']:.3f} s: ratio {seed['ratio']:.2f}, "
                       f"{seed['ratio_range'][0]:.2f}-{seed['ratio_range'][1]:.2f} over the {seed['repeats']} "
                       f"repeats (blog: 13 s vs 9 s, {seed['blog']['ratio']:.2f}).")]
    return "\n".join(lines)


def plot(document: Dict[str, object], path: Path) -> None:
    """Generated tokens/s against tokens per step, one panel per batch size: fastdiff and the LLaDA loop
    as curves over the step counts, the seed loop as a point, the GPT-2 peers as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import FixedLocator, NullLocator

    results = [r for r in document["results"] if r["status"] == "ok"]
    batches = sorted({r["batch"] for r in document["results"]})
    x_values = sorted({r["tokens_per_step"] for r in results if r["steps"] is not None})
    figure, axes = plt.subplots(1, len(batches), figsize=(5.5 * len(batches), 6.5), squeeze=False)
    for axis, batch in zip(axes[0], batches):
        rows = [r for r in results if r["batch"] == batch]
        for method, style in CURVE_STYLES.items():
            curve = sorted((r["tokens_per_step"], r["tokens_per_s"], r["label"]) for r in rows if r["method"] == method)
            if curve:
                x, y, labels = zip(*curve)
                axis.plot(x, y, marker="o", label=labels[0], **style)
        for r in rows:
            if r["method"] in SEED_MARKERS:
                axis.plot([r["tokens_per_step"]], [r["tokens_per_s"]], marker=SEED_MARKERS[r["method"]], markersize=10,
                          linestyle="none", color="black", label=r["label"])
            elif r["method"] in GPT2_STYLES:
                axis.axhline(r["tokens_per_s"], label=r["label"], **GPT2_STYLES[r["method"]])
        axis.set_xscale("log")
        axis.set_yscale("log")
        if x_values:
            axis.xaxis.set_major_locator(FixedLocator(x_values))
            axis.xaxis.set_minor_locator(NullLocator())
            axis.set_xticklabels([f"{x:g}" for x in x_values])
        axis.set_xlabel("tokens committed per step")
        axis.set_ylabel("generated tokens / s")
        axis.set_title(f"batch {batch}")
        axis.grid(True, which="both", alpha=0.3)
    legend = {}
    for axis in axes[0]:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    if legend:
        figure.legend(list(legend.values()), list(legend.keys()), loc="lower center", ncol=2, fontsize=8)
    figure.suptitle(f"{document['device']['name']} ({document['size']} size, {document['config']['dtype']})")
    legend_rows = (len(legend) + 1) // 2
    figure.tight_layout(rect=(0, 0.03 + 0.03 * legend_rows if legend else 0, 1, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_all(document: Dict[str, object], out_dir: Path, plot_png: bool = True) -> Dict[str, object]:
    """Write ``<stem>.json``, ``<stem>.md`` and (with matplotlib) ``<stem>.png`` into ``out_dir``, where
    ``stem`` is ``document["device"]["stem"]``.

    Returns:
        ``document`` plus ``table`` (the markdown) and ``written`` (the paths written). The JSON file
        names the table and plot files under ``files``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = document["device"]["stem"]
    table = markdown_table(document)
    written: List[Path] = []
    table_path = out_dir / f"{stem}.md"
    table_path.write_text(table + "\n", encoding="utf-8")
    written.append(table_path)
    png_path = out_dir / f"{stem}.png"
    if plot_png:
        try:
            plot(document, png_path)
            written.append(png_path)
        except ImportError:
            print("PNG skipped: matplotlib is not installed (pip install 'fastdiff-sampler[bench]')")
    json_path = out_dir / f"{stem}.json"
    saved = dict(document, files=dict(table=table_path.name, plot=png_path.name if png_path in written else None))
    json_path.write_text(json.dumps(saved, indent=2) + "\n", encoding="utf-8")
    written.insert(0, json_path)
    return dict(saved, table=table, written=written)
