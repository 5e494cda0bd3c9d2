#!/usr/bin/env bash
# Builds the Wasm OCI image (deploy/wasm-image/Dockerfile) with the first container tool found —
# docker buildx (with a reachable engine), podman, buildah — and exports it as an OCI image
# layout, from which `make wasm-digest` reads the manifest digest Istio verifies. A docker
# without buildx (e.g. Debian's docker.io) cannot export an OCI layout, so it does not count;
# nor does buildx's default `docker` driver on an engine without the containerd image store
# ("OCI exporter is not supported for the docker driver"): podman or buildah is tried then.
#
#   build.sh WASM IMAGE OUTDIR
#     WASM    the built module (target/authflow.wasm)
#     IMAGE   the image reference, e.g. registry.example.com/authflow/authflow-wasm:0.1.0
#     OUTDIR  work directory: OUTDIR/context (build context), OUTDIR/oci (the OCI layout)
#
# Timestamps are pinned to the epoch, so the same module gives the same digest.
# Exit 3 when no container tool is usable (nothing is built; `make deploy-check` skips then).
set -euo pipefail

wasm=$1 image=$2 out=$3
here=$(cd "$(dirname "$0")" && pwd)
tag=${image##*:}
[[ $image == *:* && $tag != */* ]] || tag=latest

if [[ ! -f $wasm ]]; then
  echo "wasm-image: $wasm is missing; run \`make wasm\` first" >&2
  exit 1
fi
rm -rf "$out/context" "$out/oci"
mkdir -p "$out/context"
cp "$wasm" "$out/context/plugin.wasm"

# docker buildx with an engine, able to export an OCI layout: a builder of another driver
# (docker-container, kubernetes, remote), or the engine's containerd image store.
docker_exports_oci() {
  command -v docker >/dev/null 2>&1 && docker buildx version >/dev/null 2>&1 && docker info >/dev/null 2>&1 || return 1
  local driver
  driver=$(docker buildx inspect 2>/dev/null | sed -n 's/^Driver: *//p' | head -n 1)
  [[ -n $driver && $driver != docker ]] && return 0
  docker info -f '{{json .DriverStatus}}' 2>/dev/null | grep -q 'io.containerd.snapshotter'
}

if docker_exports_oci; then
  echo "wasm-image: building $image with docker buildx"
  SOURCE_DATE_EPOCH=0 docker buildx build --provenance=false --sbom=false \
    -f "$here/Dockerfile" -t "$image" \
    --output "type=oci,dest=$out/oci,tar=false,rewrite-timestamp=true" "$out/context"
  SOURCE_DATE_EPOCH=0 docker buildx build --provenance=false --sbom=false \
    -f "$here/Dockerfile" -t "$image" --load "$out/context"
elif command -v podman >/dev/null 2>&1; then
  echo "wasm-image: building $image with podman"
  podman build --timestamp 0 -f "$here/Dockerfile" -t "$image" "$out/context"
  podman push "$image" "oci:$out/oci:$tag"
elif command -v buildah >/dev/null 2>&1; then
  # Private storage under OUTDIR: no daemon, no system-wide image store touched.
  store=(--root "$out/storage" --runroot "$out/run" --storage-driver vfs)
  echo "wasm-image: building $image with buildah"
  buildah "${store[@]}" bud --quiet --isolation chroot --timestamp 0 -f "$here/Dockerfile" -t "$image" "$out/context"
  buildah "${store[@]}" push --quiet "$image" "oci:$out/oci:$tag"
  buildah "${store[@]}" rmi --prune >/dev/null 2>&1 || true  # drop images a previous module left untagged
  echo "wasm-image: image kept in buildah storage $out/storage (push with: buildah ${store[*]} push $image docker://$image)"
else
  cat >&2 <<MSG
wasm-image: no container tool found (docker buildx with a running engine that can export an OCI
  layout — the containerd image store, or \`docker buildx create --use\` — podman or buildah).
  Install one, e.g.  apt-get install buildah   (needs no daemon), then run \`make wasm-image\` again.
  The recipe is deploy/wasm-image/Dockerfile: an image FROM scratch holding /plugin.wasm.
MSG
  exit 3
fi
echo "wasm-image: OCI layout in $out/oci"
