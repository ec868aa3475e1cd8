#!/usr/bin/env bash
# Prepare this machine to run the pipeline's steps in real containers, offline, and build the CPU
# image: what tests/integration/test_containers.py (and so `make test` in CI) needs. Each step is skipped when
# already done, so a rerun takes seconds:
#   1. podman, runc and debootstrap (apt-get, as root), when podman is missing;
#   2. podman set to runc without default ulimits (crun, the default runtime, cannot set
#      RLIMIT_NOFILE in unprivileged CI containers), in a containers.conf.d drop-in;
#   3. the base image localhost/rankadaptor-base:bookworm: Debian bookworm (minbase, python3,
#      python3-venv) made by debootstrap from Debian's packages, since no registry may be reachable;
#      its root filesystem is kept in .cache/images/ so that a rerun imports it in seconds;
#   4. a wheel directory .cache/wheels/cpu with torch==2.13.0 and images/requirements.txt, filled by
#      the pip of $PYTHON (default python3) with its own configuration (index, certificates, find-links;
#      TORCH_INDEX=URL takes torch from that index instead);
#   5. the CPU image, built offline from 3 and 4 by images/build.sh, unless an image of the same
#      name already carries the current commit's context label.
# Prints the CPU image's name last. Exit status 3 with one line: no container runtime here (none
# installable, or podman cannot start a container).
#
#   images/setup-podman.sh            # as root on a CI machine: installs what is missing
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=$ROOT/.cache
PYTHON=${PYTHON:-python3}
BASE_IMAGE=localhost/rankadaptor-base:bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
log() { echo "setup-podman: $*" >&2; }

# 1. the engine
if ! command -v podman >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing podman, runc and debootstrap"
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc debootstrap; } >/dev/null \
      || { echo "apt-get install podman runc debootstrap failed: no container runtime" >&2; exit 3; }
  else
    echo "podman is not installed and cannot be installed here (needs root and apt-get)" >&2; exit 3
  fi
fi

# 2. runc, no default ulimits (root only: /etc/containers is the system-wide configuration)
DROPIN=/etc/containers/containers.conf.d/50-rankadaptor.conf
if [ "$(id -u)" = 0 ] && command -v runc >/dev/null && [ ! -f "$DROPIN" ]; then
  mkdir -p "$(dirname "$DROPIN")"
  printf '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n' > "$DROPIN"
  log "wrote $DROPIN (runtime runc, no default ulimits)"
fi

# 3. the Debian base image
if ! podman image exists "$BASE_IMAGE"; then
  rootfs_tar=$CACHE/images/debian-bookworm-python3.tar
  if [ ! -s "$rootfs_tar" ]; then
    command -v debootstrap >/dev/null || { echo "debootstrap is not installed: apt-get install debootstrap" >&2; exit 3; }
    log "debootstrap bookworm (minbase, python3, python3-venv) from $DEBIAN_MIRROR"
    mkdir -p "$CACHE/images"
    dir=$(mktemp -d "$CACHE/images/rootfs.XXXXXX")
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$dir" "$DEBIAN_MIRROR" >/dev/null
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
    tar -C "$dir" -cf "$rootfs_tar.part" . && mv "$rootfs_tar.part" "$rootfs_tar"
    rm -rf "$dir"
  fi
  podman import -q "$rootfs_tar" "$BASE_IMAGE" >/dev/null
  log "imported $BASE_IMAGE"
fi

# The runtime must start a container here (not so in some unprivileged CI containers).
if ! err=$(podman run --rm --network host "$BASE_IMAGE" true 2>&1); then
  echo "podman cannot run containers here: $(echo "$err" | tail -n1)" >&2; exit 3
fi

# 4. the wheels, for pip inside the build (no index reachable from it)
WHEELS=$CACHE/wheels/cpu
stamp=$WHEELS/.requirements
if ! cmp -s "$ROOT/images/requirements.txt" "$stamp"; then
  log "filling $WHEELS (torch==2.13.0, images/requirements.txt, setuptools)"
  mkdir -p "$WHEELS"
  "$PYTHON" -m pip download -q --no-deps -d "$WHEELS" ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} torch==2.13.0
  "$PYTHON" -m pip wheel -q -w "$WHEELS" --find-links "$WHEELS" torch==2.13.0 -r "$ROOT/images/requirements.txt" \
    "setuptools>=69" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  cp "$ROOT/images/requirements.txt" "$stamp"
fi

# 5. the CPU image
read -r image context < <("$ROOT/images/build.sh" --only cpu --dry-run \
  | sed -n 's/^+ [a-z]* build -t \([^ ]*\) .*rankadaptor.context=\([0-9a-f]*\).*/\1 \2/p')
[ -n "$image" ] || { echo "images/build.sh --dry-run named no image (see above)" >&2; exit 1; }
have=$(podman image inspect --format '{{index .Config.Labels "rankadaptor.context"}}' "$image" 2>/dev/null || true)
if [ "$have" != "$context" ]; then
  log "building $image offline"
  "$ROOT/images/build.sh" --only cpu --base "$BASE_IMAGE" --wheels "$WHEELS" >&2
fi
echo "$image"
