#!/usr/bin/env bash
# The GPU figures of benchmarks/RESULTS.md in one go, on one GPU, on the random-init 1.1B LLaMA shape (no
# model download): recover throughput (HF Trainer baseline, ours, each speed lever, all levers) and
# evaluate throughput (lm-eval at its fastest batch size vs ours). Runs from a checkout without installing
# the package (src/ on PYTHONPATH). Wheels in .whl/ (the pinned transformers, peft, lm-eval and its
# requirements, liger-kernel) are installed into a scratch directory first; each benchmark has a time
# limit, and one that fails or runs out of time still leaves its tables and the rows it finished.
#
#   benchmarks/speed/gpu.sh [OUT_DIR]          (default: benchmarks/out)
#   DEVICE=cpu TINY=1 benchmarks/speed/gpu.sh  (the same steps at tiny size, as a check of the script)
#   EAGER=ours,liger COMPILED=all benchmarks/speed/gpu.sh   (other recover_throughput.py variants; '' skips a run)
#
# Three runs, each with its own time limit, the compiled variants last (their compilation is the slowest
# and least predictable part): recover (baseline + eager variants), evaluate, recover_compiled (baseline
# again + compiled variants). OUT_DIR gets environment.txt and <run>.txt + <run>.json for each run.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${1:-benchmarks/out}
device=${DEVICE:-cuda}
mkdir -p "$out"
python=${PYTHON:-python3}
site=${WHEEL_SITE:-/tmp/rankadaptor-site}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TQDM_DISABLE=1
if compgen -G ".whl/*.whl" >/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    .whl/*.whl 2>&1 | tail -5
  export PYTHONPATH="src:$site${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
fi
if [[ -n "${TINY:-}" ]]; then
  recover=(--tiny); evaluate=(--shape tiny --tasks piqa,arc_challenge --limit 12); limits=(300 300 400)
else
  recover=(); evaluate=(--shape 1.1b --limit 50); limits=(150 100 170)
fi
[[ "$device" == cpu ]] && recover+=(--threads "${OMP_NUM_THREADS:-1}") && evaluate+=(--threads "${OMP_NUM_THREADS:-1}")
eager=${EAGER-ours,packing,packing-flex,dropout0,prefetch,liger}
compiled=${COMPILED-compile,all}

{ date -u; echo "device $device; PYTHONPATH $PYTHONPATH"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
  "$python" - <<'PY'
import importlib, platform
print("python", platform.python_version())
for name in ("torch", "transformers", "peft", "accelerate", "lm_eval", "datasets", "pyarrow", "fsspec", "triton",
             "liger_kernel", "numpy", "tokenizers", "huggingface_hub"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "?"), module.__file__.rsplit("/", 2)[0])
    except Exception as e:
        print(name, "NOT IMPORTABLE:", type(e).__name__, str(e)[:200])
import torch
print("cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PY
} 2>&1 | tee "$out/environment.txt"

noise='^recover: |Warning|warnings.warn|it/s\]|`pretrained` model kwarg|HF model type is neither|already-initialized model'
status=0
run() {  # name, time limit, script, arguments...
  local name=$1 limit=$2 script=$3 start=$SECONDS
  shift 3
  timeout -k 10 "$limit" "$python" -m "benchmarks.speed.${script%.py}" "$@" --device "$device" --json "$out/$name.json" 2>&1 |
    grep -v -E "$noise" | tee "$out/$name.txt"
  local code=${PIPESTATUS[0]}
  echo "$name: exit status $code after $((SECONDS - start)) s (limit $limit s)" | tee -a "$out/$name.txt" "$out/environment.txt"
  status=$(( status || code ))
}
[[ -n "$eager" ]] && run recover "${limits[0]}" recover_throughput.py "${recover[@]}" --variants "$eager"
run evaluate "${limits[1]}" evaluate_throughput.py "${evaluate[@]}"
[[ -n "$compiled" ]] && run recover_compiled "${limits[2]}" recover_throughput.py "${recover[@]}" --variants "$compiled"
exit $status
