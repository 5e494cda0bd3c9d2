#!/usr/bin/env python3
"""Check an OCI image layout holds the module the way Istio extracts it, and print its digest.

Istio's Wasm image fetcher (pkg/wasm/imagefetcher.go) takes the image's LAST layer; for the
"compat" variant that layer has media type application/vnd.oci.image.layer.v1.tar+gzip (or the
Docker equivalent) and holds a file named plugin.wasm. It compares the WasmPlugin's `sha256`
with the hex digest of the image manifest. This script applies the same rules to the layout
written by `make wasm-image`, checks the extracted bytes are exactly the built module, and
prints the manifest digest (hex, no prefix) on stdout.

usage: oci_digest.py LAYOUT_DIR [--wasm FILE]
Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
}


def blob(layout: Path, digest: str) -> bytes:
    algo, hexd = digest.split(":", 1)
    data = (layout / "blobs" / algo / hexd).read_bytes()
    if hashlib.new(algo, data).hexdigest() != hexd:
        raise SystemExit(f"blob {digest} does not match its digest")
    return data


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("layout", type=Path)
    ap.add_argument("--wasm", type=Path, help="the module the image must contain, byte for byte")
    args = ap.parse_args()
    layout = args.layout
    if json.loads((layout / "oci-layout").read_text()).get("imageLayoutVersion") != "1.0.0":
        raise SystemExit(f"{layout}: not an OCI image layout")
    index = json.loads((layout / "index.json").read_text())
    manifests = index.get("manifests", [])
    if len(manifests) != 1:
        raise SystemExit(f"{layout}: expected one image in the layout, found {len(manifests)}")
    desc = manifests[0]
    manifest_bytes = blob(layout, desc["digest"])
    manifest = json.loads(manifest_bytes)
    if manifest.get("mediaType", desc.get("mediaType")) not in (
        "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"):
        raise SystemExit(f"{layout}: {desc['digest']} is not a single-image manifest (an index would make Istio pick a platform)")
    layers = manifest.get("layers", [])
    if not layers:
        raise SystemExit(f"{layout}: image has no layers")
    last = layers[-1]
    if last["mediaType"] not in LAYER_TYPES:
        raise SystemExit(f"{layout}: last layer is {last['mediaType']}, Istio expects a tar+gzip layer")
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob(layout, last["digest"])))) as tar:
        members = [m for m in tar.getmembers() if Path(m.name).name == "plugin.wasm" and m.isfile()]
        if not members:
            raise SystemExit(f"{layout}: no plugin.wasm in the last layer")
        module = tar.extractfile(members[0]).read()  # type: ignore[union-attr]
    if module[:4] != b"\0asm":
        raise SystemExit(f"{layout}: plugin.wasm is not a Wasm binary")
    if args.wasm and module != args.wasm.read_bytes():
        raise SystemExit(f"{layout}: plugin.wasm differs from {args.wasm}")
    digest = desc["digest"].split(":", 1)[1]
    print(f"image layout ok: {len(layers)} layer(s), plugin.wasm {len(module)} bytes, manifest sha256:{digest}", file=sys.stderr)
    print(digest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
