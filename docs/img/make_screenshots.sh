#!/usr/bin/env bash
# Screenshots of the MLflow UI after a run (README "What you see in MLflow"): the bank experiment, its runs
# table, one trial and the registered model version. Usage, from the repository root after `make run`:
#   docs/img/make_screenshots.sh [BACKEND_STORE_URI] [MODEL_NAME] [VERSION]
# BACKEND_STORE_URI defaults to the embedded store of `make run` (sqlite:///$PWD/runs/default/mlflow/mlflow.db).
set -euo pipefail
STORE=${1:-sqlite:///$PWD/runs/default/mlflow/mlflow.db}
MODEL=${2:-}
VERSION=${3:-1}
PORT=${PORT:-5055}
OUT=$(dirname "$0")
PY=${PYTHON:-.venv/bin/python}
BROWSER=${BROWSER:-chromium}
URI=http://127.0.0.1:$PORT

"$(dirname "$PY")/mlflow" server --backend-store-uri "$STORE" --host 127.0.0.1 --port "$PORT" --workers 1 &
SERVER=$!
trap 'kill $SERVER' EXIT
until curl -sf "$URI/health" >/dev/null; do sleep 1; done

api() { curl -sf "$URI/api/2.0/mlflow/$1"; }
EXP=$(api "experiments/get-by-name?experiment_name=rankadaptor-bank" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["experiment"]["experiment_id"])')
RUN=$(curl -sf -X POST -H 'Content-Type: application/json' -d "{\"experiment_ids\":[\"$EXP\"],\"order_by\":[\"attributes.start_time DESC\"],\"max_results\":1}" \
      "$URI/api/2.0/mlflow/runs/search" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["runs"][0]["info"]["run_id"])')
[ -n "$MODEL" ] || MODEL=$(api "registered-models/search" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["registered_models"][0]["name"])')

shot() {  # shot FILE URL: one headless screenshot, shrunk below 300 KB
  "$BROWSER" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$(mktemp -d)" --window-size=1800,900 \
    --virtual-time-budget=15000 --screenshot="$OUT/$1" "$2" 2>/dev/null
  "$PY" -c 'import sys; from PIL import Image; i = Image.open(sys.argv[1]).convert("RGB"); i.quantize(128).save(sys.argv[1], optimize=True)' "$OUT/$1"
}
shot mlflow-experiment.png "$URI/#/experiments/$EXP?workflowType=machine_learning"
shot mlflow-runs.png "$URI/#/experiments/$EXP/runs?workflowType=machine_learning&compareRunsMode=TABLE"
shot mlflow-trial.png "$URI/#/experiments/$EXP/runs/$RUN?workflowType=machine_learning"
shot mlflow-model-version.png "$URI/#/models/$MODEL/versions/$VERSION"
