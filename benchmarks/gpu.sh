#!/usr/bin/env bash
# The GPU figures of benchmarks/RESULTS.md in one go, on one GPU: recover throughput (plain peft, ours,
# ours compiled) and evaluate throughput, both on the random-init 1.1B LLaMA shape, so no model download.
# Runs from a checkout without installing the package (src/ on PYTHONPATH); the environment needs the
# pinned torch, transformers, peft and lm-eval. Prints the tables and keeps them in OUT_DIR.
#
#   benchmarks/gpu.sh [OUT_DIR]          (default: benchmarks/out)
#   DEVICE=cpu TINY=1 benchmarks/gpu.sh  (the same steps at tiny size, as a check of the script)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/out}
device=${DEVICE:-cuda}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false
python=${PYTHON:-python3}
if [[ -n "${TINY:-}" ]]; then
  size=(--tiny); rows=(--shape tiny --tasks piqa,arc_challenge --limit 12)
else
  size=(); rows=(--shape 1.1b --limit 100)
fi

{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
  "$python" -c "import torch, transformers, peft, lm_eval; print('torch', torch.__version__, 'transformers',
transformers.__version__, 'peft', peft.__version__, 'lm_eval', lm_eval.__version__)"; } 2>&1 | tee "$out/environment.txt"
"$python" benchmarks/recover_throughput.py "${size[@]}" --device "$device" --compile 2>&1 | tee "$out/recover.txt"
recover=$?
"$python" benchmarks/evaluate_throughput.py "${rows[@]}" --device "$device" 2>&1 | tee "$out/evaluate.txt"
evaluate=$?
echo "exit status: recover $recover, evaluate $evaluate" | tee -a "$out/environment.txt"
exit $(( recover || evaluate ))
