#!/usr/bin/env bash
# Build (and optionally push) the project's images from the committed tree, with podman or docker
# (whichever is installed; CONTAINER_ENGINE=docker|podman chooses):
#   <registry>/rankadaptor-cpu:<tag>     images/Dockerfile, torch from the PyTorch CPU index
#   <registry>/rankadaptor-gpu:<tag>     images/Dockerfile, torch from the PyTorch CUDA 13.0 index
#   <registry>/rankadaptor-mlflow:<tag>  images/Dockerfile.mlflow (tracking server)
# <registry> and <tag> default to the image names the pipeline's components use (components/,
# RANKADAPTOR_IMAGE_REGISTRY and RANKADAPTOR_IMAGE_TAG override both). Each image is also tagged
# <version>-<git short sha>, a name never reused: push that one to pin a deployment.
# The build context is `git archive HEAD` of the files the images need; uncommitted changes to those
# files stop the build (ALLOW_DIRTY=1 builds HEAD anyway, without them).
#
#   images/build.sh [--registry REG] [--tag TAG] [--only cpu|gpu|mlflow] [--base IMAGE]
#                   [--wheels DIR] [--push] [--dry-run]
#
# --base IMAGE replaces the official base (python:3.11.14-slim-bookworm) by any Debian bookworm
# image with python3 and python3-venv. --wheels DIR builds offline: pip installs every package from
# the wheels in DIR and reaches no index. --dry-run prints the commands only.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PUSH=0
DRY=0
BASE=""
WHEELS=""
FLAVOURS=(gpu cpu mlflow)
usage() { sed -n '2,20p' "$0"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --registry) export RANKADAPTOR_IMAGE_REGISTRY=$2; shift 2 ;;
    --tag) export RANKADAPTOR_IMAGE_TAG=$2; shift 2 ;;
    --only) FLAVOURS=("$2"); shift 2 ;;
    --base) BASE=$2; shift 2 ;;
    --wheels) WHEELS=$(cd "$2" 2>/dev/null && pwd) || { echo "build.sh: --wheels $2 is not a directory" >&2; exit 2; }; shift 2 ;;
    --push) PUSH=1; shift ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "build.sh: unknown argument '$1' (accepted: --registry REG, --tag TAG, --only gpu|cpu|mlflow, --base IMAGE, --wheels DIR, --push, --dry-run)" >&2; exit 2 ;;
  esac
done
for f in "${FLAVOURS[@]}"; do
  case "$f" in cpu|gpu|mlflow) ;; *) echo "build.sh: unknown flavour '$f' (accepted: gpu, cpu, mlflow)" >&2; exit 2 ;; esac
done
if [ -n "$WHEELS" ] && ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  echo "build.sh: --wheels $WHEELS holds no .whl file" >&2; exit 2
fi

ENGINE=${CONTAINER_ENGINE:-$(command -v podman >/dev/null && echo podman || echo docker)}
if [ "$DRY" = 0 ] && ! command -v "$ENGINE" >/dev/null; then
  echo "build.sh: neither podman nor docker is installed" >&2; exit 1
fi

cd "$ROOT"
VERSION=$(sed -n 's/^version *= *"\(.*\)"$/\1/p' pyproject.toml | head -n1)
[ -n "$VERSION" ] || { echo "build.sh: no version = \"...\" line in pyproject.toml" >&2; exit 2; }
# The names the pipeline's components and the serving manifest run: rankadaptor.infra.images is their one
# source (it reads the same RANKADAPTOR_IMAGE_* variables), so a default build is what they reference.
read -r REGISTRY TAG < <(PYTHONPATH=src python3 -c 'from rankadaptor.infra import images; print(images.registry(), images.tag())')
SHA=$(git rev-parse --short HEAD)
CONTEXT_PATHS=(pyproject.toml README.md src components pipelines images)
if [ -n "$(git status --porcelain -- "${CONTEXT_PATHS[@]}")" ] && [ "${ALLOW_DIRTY:-0}" != 1 ]; then
  echo "build.sh: uncommitted changes in ${CONTEXT_PATHS[*]}; commit them (the tag names commit $SHA) or set ALLOW_DIRTY=1" >&2
  exit 1
fi
# What the image was built from, as a label: a change to any context file changes it.
CONTEXT_ID=$(git ls-tree -r HEAD -- "${CONTEXT_PATHS[@]}" | git hash-object --stdin)

run() {
  echo "+ $*"
  [ "$DRY" = 1 ] || "$@"
}

for f in "${FLAVOURS[@]}"; do
  image="$REGISTRY/rankadaptor-$f"
  args=(-t "$image:$TAG" -t "$image:$VERSION-$SHA" --label "org.opencontainers.image.revision=$SHA"
        --label "org.opencontainers.image.version=$VERSION" --label "rankadaptor.context=$CONTEXT_ID")
  case "$f" in
    cpu) args+=(-f images/Dockerfile --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu) ;;
    gpu) args+=(-f images/Dockerfile --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu130) ;;
    mlflow) args+=(-f images/Dockerfile.mlflow) ;;
  esac
  [ -z "$BASE" ] || args+=(--build-arg "BASE_IMAGE=$BASE")
  [ -z "$WHEELS" ] || args+=(--build-arg OFFLINE=1)
  echo "+ $ENGINE build ${args[*]} <context: git archive HEAD ${CONTEXT_PATHS[*]}${WHEELS:+, wheels/ = $WHEELS}>"
  if [ "$DRY" = 0 ]; then
    # A fresh context directory beside the repository's other caches (hard links are free there).
    mkdir -p "$ROOT/.cache"
    ctx=$(mktemp -d "$ROOT/.cache/build-context.XXXXXX")
    trap 'rm -rf "$ctx"' EXIT
    git archive --format=tar HEAD "${CONTEXT_PATHS[@]}" | tar -x -C "$ctx"
    mkdir "$ctx/wheels"
    [ -z "$WHEELS" ] || cp -l "$WHEELS"/*.whl "$ctx/wheels/" 2>/dev/null || cp "$WHEELS"/*.whl "$ctx/wheels/"
    if [ "$ENGINE" = docker ]; then export DOCKER_BUILDKIT=1; fi  # RUN --mount needs BuildKit
    "$ENGINE" build "${args[@]}" "$ctx"
    rm -rf "$ctx"
    trap - EXIT
  fi
  if [ "$PUSH" = 1 ]; then
    run "$ENGINE" push "$image:$TAG"
    run "$ENGINE" push "$image:$VERSION-$SHA"
  fi
done
