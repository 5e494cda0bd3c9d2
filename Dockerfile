# syntax=docker/dockerfile:1
#
# The authflow services as container images, from one build stage:
#   docker build --target auth -t authflow/auth .     the auth service (`authflow-auth serve`) — the default target
#   docker build --target echo -t authflow/echo .     the demo echo backend
# Both run as an unprivileged user (uid 10001). docker-compose.yml builds both.
# The filter itself is not built here: it is a .wasm loaded by Envoy (`make wasm`), and
# deploy/wasm-image/Dockerfile packages it for Istio.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
# Cache mounts keep the crate registry and compiled dependencies between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p authflow-auth-service -p authflow-echo \
 && install -D -m 0755 target/release/authflow-auth /out/authflow-auth \
 && install -D -m 0755 target/release/authflow-echo /out/authflow-echo

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN groupadd --system --gid 10001 authflow \
 && useradd --system --uid 10001 --gid authflow --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin authflow

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
RUN install -d -o 10001 -g 10001 -m 0700 /var/lib/authflow
USER 10001:10001
ENV AUTHFLOW_LISTEN=0.0.0.0:8081 \
    AUTHFLOW_DATA_DIR=/var/lib/authflow
VOLUME ["/var/lib/authflow"]
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/authflow-auth"]
CMD ["serve"]
