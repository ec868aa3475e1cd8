#!/usr/bin/env bash
# Build (and optionally push) the project's images from the committed tree:
#   <registry>/rankadaptor-gpu:<version>-<git short sha>     images/Dockerfile.gpu
#   <registry>/rankadaptor-cpu:<version>-<git short sha>     images/Dockerfile.cpu
#   <registry>/rankadaptor-mlflow:<version>-<git short sha>  images/Dockerfile.mlflow (tracking server)
# <version> is pyproject.toml's. The build context is `git archive HEAD` of the files the images
# need, so a tag always names exactly the commit it was built from; uncommitted changes to those
# files stop the build (ALLOW_DIRTY=1 builds HEAD anyway, without them).
#
#   images/build.sh [--registry REG] [--push] [--dry-run] [--only gpu|cpu|mlflow]
#
# REG defaults to $REGISTRY, then localhost:5000. --dry-run prints the docker commands only.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REGISTRY=${REGISTRY:-localhost:5000}
PUSH=0
DRY=0
FLAVOURS=(gpu cpu mlflow)
while [ $# -gt 0 ]; do
  case "$1" in
    --registry) REGISTRY=$2; shift 2 ;;
    --push) PUSH=1; shift ;;
    --dry-run) DRY=1; shift ;;
    --only) FLAVOURS=("$2"); shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument '$1' (accepted: --registry REG, --push, --dry-run, --only gpu|cpu|mlflow)" >&2; exit 2 ;;
  esac
done
for f in "${FLAVOURS[@]}"; do
  [ -f "$ROOT/images/Dockerfile.$f" ] || { echo "build.sh: no images/Dockerfile.$f (accepted: gpu, cpu, mlflow)" >&2; exit 2; }
done

cd "$ROOT"
VERSION=$(sed -n 's/^version *= *"\(.*\)"$/\1/p' pyproject.toml | head -n1)
[ -n "$VERSION" ] || { echo "build.sh: no version = \"...\" line in pyproject.toml" >&2; exit 2; }
SHA=$(git rev-parse --short HEAD)
CONTEXT_PATHS=(pyproject.toml README.md src components pipelines images)
if [ -n "$(git status --porcelain -- "${CONTEXT_PATHS[@]}")" ] && [ "${ALLOW_DIRTY:-0}" != 1 ]; then
  echo "build.sh: uncommitted changes in ${CONTEXT_PATHS[*]}; commit them (the tag names commit $SHA) or set ALLOW_DIRTY=1" >&2
  exit 1
fi

run() {
  echo "+ $*"
  [ "$DRY" = 1 ] || "$@"
}

for f in "${FLAVOURS[@]}"; do
  tag="$REGISTRY/rankadaptor-$f:$VERSION-$SHA"
  echo "+ git archive HEAD ${CONTEXT_PATHS[*]} | docker build -f images/Dockerfile.$f -t $tag -"
  if [ "$DRY" = 0 ]; then
    git archive --format=tar HEAD "${CONTEXT_PATHS[@]}" | docker build -f "images/Dockerfile.$f" -t "$tag" -
  fi
  if [ "$PUSH" = 1 ]; then
    run docker push "$tag"
  fi
done
