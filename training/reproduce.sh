#!/usr/bin/env bash
# Reproduces the shipped demo model (fastdiff/demo_model) and the same-size GPT-2 reference model of
# the quality benchmark, from the standard library of the Python that runs it.
#
#   training/reproduce.sh [demo|ar|all]        (default: all; run from anywhere)
#
# Exactness: bit-identical weights need the same corpus (CPython 3.11.7's standard library: the
# script checks the corpus fingerprints against training/corpus_manifest.json and stops if they
# differ), the same package versions (torch 2.13.0+cpu, transformers 5.23.0, tokenizers 0.23.3),
# the same thread count (2, set below) and the same kind of CPU (x86-64 with AVX-512; the shipped
# model was trained on an "Intel Xeon Processor @ 2.00GHz"). Training runs in pieces of at most
# ~9 minutes (`--max-minutes 9`): each piece saves a checkpoint and exits with status 75, and the
# loop below starts the next one; the result does not depend on where the pieces end.
#
# Outputs go to $WORK (default /tmp/fastdiff-train): data/, runs/, models/. The script then compares
# the exported demo weights with the shipped ones byte for byte, and copies the training logs to
# training/logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
WORK=${WORK:-/tmp/fastdiff-train}
what=${1:-all}

if [ ! -f "$WORK/data/manifest.json" ]; then
    nice -n 10 "$PYTHON" -m fastdiff.training prepare "$WORK/data" --vocab-size 4096 --heldout-percent 5
fi
if [ ! -f training/corpus_manifest.json ]; then  # first run: record the corpus
    cp "$WORK/data/manifest.json" training/corpus_manifest.json
fi
"$PYTHON" - "$WORK/data/manifest.json" training/corpus_manifest.json <<'PY'
import json, sys
built, expected = (json.load(open(p)) for p in sys.argv[1:])
keys = ("train_fingerprint", "heldout_fingerprint", "tokenizer_sha256")
different = [k for k in keys if built[k] != expected[k]]
if different:
    sys.exit(f"corpus differs from the one the shipped model was trained on ({', '.join(different)}): "
             f"this Python is {built['python']}, the model's was {expected['python']}")
print("corpus and tokenizer identical to the shipped model's")
PY

# the settings shared by both models: 4 layers, hidden 256, 4 heads, 256-token windows, 1500 steps of
# 16 windows (about 2.2 epochs of the training files), AdamW at 1e-3 with 100 warm-up steps and
# cosine decay to 1e-4, seed 0, 2 threads
common=(--data "$WORK/data" --hidden-size 256 --num-layers 4 --num-heads 4 --seq-length 256 --batch-size 16
        --steps 1500 --learning-rate 1e-3 --warmup-steps 100 --min-lr-ratio 0.1 --seed 0 --threads 2
        --save-every 50 --log-every 10 --eval-every 100 --max-minutes 9 --no-progress)

fit_in_pieces() {
    local status
    while true; do
        set +e
        nice -n 10 "$PYTHON" -m fastdiff.training fit "$@"
        status=$?
        set -e
        [ "$status" -eq 75 ] || return "$status"
        echo "piece done; resuming"
    done
}

if [ "$what" = demo ] || [ "$what" = all ]; then
    # diffusion: ModernBERT-style masked LM (GeGLU width 640: 4.1M parameters), mask ratio uniform in
    # [0.1, 1] per batch, the first 0..64 tokens of a window never masked
    fit_in_pieces "${common[@]}" --out "$WORK/runs/demo-diffusion" --objective diffusion --architecture modernbert \
        --intermediate-size 640 --mask-ratio 0.1:1.0 --prefix-length 0:64
    "$PYTHON" -m fastdiff.training export --run "$WORK/runs/demo-diffusion" --out "$WORK/models/demo_model" --dtype float16
    cp "$WORK/runs/demo-diffusion/log.jsonl" training/logs/demo_diffusion.jsonl
    if [ ! -f fastdiff/demo_model/model.safetensors ]; then  # first run: install the model
        mkdir -p fastdiff/demo_model
        cp "$WORK/models/demo_model"/* fastdiff/demo_model/
        echo "demo model: installed into fastdiff/demo_model"
    elif cmp -s "$WORK/models/demo_model/model.safetensors" fastdiff/demo_model/model.safetensors; then
        echo "demo model: weights identical to fastdiff/demo_model/model.safetensors"
    else
        echo "demo model: weights DIFFER from fastdiff/demo_model/model.safetensors" >&2
        exit 1
    fi
fi

if [ "$what" = ar ] || [ "$what" = all ]; then
    # the GPT-2-architecture reference: same size, data, tokenizer and optimiser, next-token loss
    # (feed-forward width 1024: 4.3M parameters); 600 steps instead of 1500 (the same schedule
    # compressed), because it trains slower per step on the CPU and only scores samples
    fit_in_pieces "${common[@]}" --steps 600 --out "$WORK/runs/ar-gpt2" --objective causal --architecture gpt2 \
        --intermediate-size 1024
    "$PYTHON" -m fastdiff.training export --run "$WORK/runs/ar-gpt2" --out "$WORK/models/ar_gpt2" --dtype float16
    cp "$WORK/runs/ar-gpt2/log.jsonl" training/logs/ar_gpt2.jsonl
    echo "AR reference model: $WORK/models/ar_gpt2"
fi
