# The authflow stack as container images, from one build stage:
#   docker build --target envoy -t authflow/envoy .   Envoy with the filter (authflow.wasm) built in
#   docker build --target auth -t authflow/auth .     the auth service (`authflow-auth serve`)
#   docker build --target echo -t authflow/echo .     the demo echo backend
# All run as unprivileged users. docker-compose.yml builds all three, so `docker compose up`
# needs nothing built beforehand. deploy/wasm-image/Dockerfile packages the module for Istio.
#
# No `# syntax=` line on purpose: it would make BuildKit fetch a frontend image from a registry;
# the built-in frontend (Docker Engine 20.10 and later) handles the cache mounts below.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm
# The Envoy the configs are validated against (`make deploy-check`) and the tests run.
ARG ENVOY_VERSION=v1.40.0

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
# The filter is a wasm32-wasip1 module; the rust image ships only the host target.
RUN [ -d "$(rustc --print sysroot)/lib/rustlib/wasm32-wasip1" ] || rustup target add wasm32-wasip1
WORKDIR /src
# Only what cargo builds from: an edit to docs, scripts or configs does not rebuild the images.
COPY Cargo.toml Cargo.lock ./
COPY .cargo .cargo
COPY src src
COPY crates crates
COPY auth-service auth-service
# Cache mounts keep the crate registry and compiled dependencies between builds. The release
# profile's fat LTO in one codegen unit is for the filter's module (size, speed in V8); for the
# native binaries it only adds minutes to every image build, so they are built without it.
# The module is built, trimmed and shrunk like `make wasm` does (the `wasm` profile,
# crates/wasm-trim, binaryen's wasm-opt). wasm-opt only makes the module smaller: a build
# that cannot reach a Debian mirror (an offline or proxied builder) ships the trimmed module
# as it is, with a warning, rather than failing. Panic locations name a dependency's file as
# `crate-x.y.z/src/…`, not by the directory the builder keeps it in (the registry's, or
# vendor/ for an offline builder), as `make wasm` does: the same module, 0.5 KB less.
RUN command -v wasm-opt >/dev/null || { apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends binaryen >/dev/null \
 && rm -rf /var/lib/apt/lists/*; } \
 || echo "warning: binaryen (wasm-opt) could not be installed; the module is shipped without wasm-opt" >&2
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    cargo build --release --locked -p authflow-auth-service -p authflow-echo -p authflow-wasm-trim \
 && CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS="--remap-path-prefix=$CARGO_HOME/registry/src/= --remap-path-prefix=$CARGO_HOME/registry/src/index.crates.io-1949cf8c6b5b557f/= --remap-path-prefix=$CARGO_HOME/vendor/=" \
    cargo build --profile wasm --locked --target wasm32-wasip1 -p authflow \
 && install -d /out \
 && target/release/authflow-wasm-trim target/wasm32-wasip1/wasm/authflow.wasm target/authflow.trimmed.wasm \
 && if command -v wasm-opt >/dev/null; then \
      wasm-opt -Oz --one-caller-inline-max-function-size 100 --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext --enable-simd \
        target/authflow.trimmed.wasm -o /out/authflow.wasm; \
    else cp target/authflow.trimmed.wasm /out/authflow.wasm; fi \
 && install -D -m 0755 target/release/authflow-auth /out/authflow-auth \
 && install -D -m 0755 target/release/authflow-echo /out/authflow-echo

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN groupadd --system --gid 10001 authflow \
 && useradd --system --uid 10001 --gid authflow --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin authflow

FROM envoyproxy/envoy:${ENVOY_VERSION} AS envoy
# envoy/compose.yaml loads the module from here (docker-compose.yml mounts that config).
COPY --from=build /out/authflow.wasm /etc/envoy/authflow.wasm
USER 101:101

FROM runtime AS echo
COPY --from=build /out/authflow-echo /usr/local/bin/authflow-echo
USER 10001:10001
ENV AUTHFLOW_ECHO_LISTEN=0.0.0.0:8082
EXPOSE 8082
ENTRYPOINT ["/usr/local/bin/authflow-echo"]

FROM runtime AS auth
COPY --from=build /out/authflow-auth /usr/local/bin/authflow-auth
# The data directory (SQLite database, signing keys, dev outbox) is owned by the service user;
# a named volume mounted here starts with this ownership.
RUN install -d -o 10001 -g 10001 -m 0700 /var/lib/authflow /run/authflow-kek
USER 10001:10001
# Variables win over a mounted configuration file (the service names at start each file
# setting they replace): to listen or keep data elsewhere, set these two, not the file.
# Production unless told otherwise (the compose file says development): the service's own
# default is development, which takes an http issuer, the dev outbox and no password-hash floor.
ENV AUTHFLOW_SERVER__LISTEN=0.0.0.0:8081 \
    AUTHFLOW_SERVER__DATA_DIR=/var/lib/authflow \
    AUTHFLOW_ENVIRONMENT=production
VOLUME ["/var/lib/authflow"]
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/authflow-auth"]
CMD ["serve"]
