"""Loss curves of the committed training logs: ``python training/plot_logs.py``.

Reads ``training/logs/english_diffusion.jsonl`` and ``training/logs/english_ar.jsonl`` (written by
``python -m fastdiff.training fit``, copied here by ``training/reproduce.sh``) and writes
``training/logs/loss_curves.png``: training loss (mean over each logging interval) and held-out
loss against the step, with a dotted line where each training piece began.
"""
import json
from pathlib import Path

LOGS = Path(__file__).resolve().parent / "logs"
RUNS = (("english_diffusion.jsonl", "English diffusion (masked-token loss)"),
        ("english_ar.jsonl", "English GPT-2 AR (next-token loss)"))


def read(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [(read(LOGS / name), title) for name, title in RUNS if (LOGS / name).exists()]
    figure, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 4), squeeze=False)
    for axis, (records, title) in zip(axes[0], runs):
        train = [(r["step"], r["loss"]) for r in records if "loss" in r]
        held = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
        axis.plot(*zip(*train), label="training loss", linewidth=1)
        if held:
            axis.plot(*zip(*held), marker="o", label="held-out loss")
        for record in records:
            if record.get("event") == "piece_start" and record["step"] > 0:
                axis.axvline(record["step"], color="gray", linestyle=":", linewidth=1)
        pieces = sum(1 for r in records if r.get("event") == "piece_start")
        axis.set_title(f"{title}: {pieces} pieces")
        axis.set_xlabel("step")
        axis.set_ylabel("cross-entropy (nats)")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(LOGS / "loss_curves.png", dpi=110)
    print(f"wrote {LOGS / 'loss_curves.png'}")


if __name__ == "__main__":
    main()
