# make bench — the filter side by side with Envoy's jwt_authn, ext_authz and no auth, and
# revocations pushed (long poll) against polled. Method and latest results: docs/bench.md.
# Knobs: BENCH_DURATION (s per run), BENCH_REPEATS, BENCH_ARGS (extra flags for
# bench/bench.py, e.g. `--only D,E` or `--only push`).

BENCH_DURATION ?= 5
BENCH_REPEATS ?= 3
BENCH_ARGS ?=
# Extra arguments for the profiler (`--dpop`: a DPoP request's pieces; `--quick`).
BENCH_PROFILE_ARGS ?=
BENCH_TARGET_DIR := target/bench

.PHONY: bench bench-tools bench-build

# wrk from Debian; `apt-get update` once first, only when wrk is missing.
bench-tools:
	@command -v wrk >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq wrk; }
	@command -v taskset >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq util-linux; }

# Release artifacts: the filter (make wasm), the no-op filter (case B), the
# token minter, the sidecar fleet (case S) and the auth service (cases F, P, W, S).
bench-build: wasm envoy postgres bench-tools
	$(CARGO) build --release --target wasm32-wasip1 --manifest-path bench/noop-filter/Cargo.toml --target-dir $(BENCH_TARGET_DIR)
	$(CARGO) run --quiet -p authflow-wasm-trim -- $(BENCH_TARGET_DIR)/wasm32-wasip1/release/authflow_bench_noop.wasm $(BENCH_TARGET_DIR)/authflow_bench_noop.trimmed.wasm
	$(CARGO) build --release --manifest-path bench/tokens/Cargo.toml --target-dir $(BENCH_TARGET_DIR)
	$(CARGO) build --release --manifest-path bench/fleet/Cargo.toml --target-dir $(BENCH_TARGET_DIR)
	$(CARGO) build --release -p authflow-auth-service --bin authflow-auth

bench: bench-build
	BENCH_NOOP_WASM=$(abspath $(BENCH_TARGET_DIR)/wasm32-wasip1/release/authflow_bench_noop.wasm) \
	BENCH_NOOP_TRIMMED_WASM=$(abspath $(BENCH_TARGET_DIR)/authflow_bench_noop.trimmed.wasm) \
	BENCH_TOKENS_BIN=$(abspath $(BENCH_TARGET_DIR)/release/authflow-bench-tokens) \
	BENCH_AUTH_BIN=$(abspath target/release/authflow-auth) \
	BENCH_FLEET_BIN=$(abspath $(BENCH_TARGET_DIR)/release/authflow-bench-fleet) \
	python3 bench/bench.py --duration $(BENCH_DURATION) --repeats $(BENCH_REPEATS) $(BENCH_ARGS)

# Where the filter's verification time goes, piece by piece, natively and in V8
# (Node's WASI runs the wasm32-wasip1 build): the signature primitives of the
# current crates, faster candidates checked against them, the cache when full.
# With --revocations Node 20 faults now and then while exiting after the
# run's large Wasm memory, unless its background threads are off (the results
# are the same: everything is pinned to one CPU).
.PHONY: bench-profile
bench-profile: toolchain
	$(CARGO) build --release --manifest-path bench/verify-profile/Cargo.toml --target-dir $(BENCH_TARGET_DIR)
	$(CARGO) build --release --target wasm32-wasip1 --manifest-path bench/verify-profile/Cargo.toml --target-dir $(BENCH_TARGET_DIR)
	taskset -c 0 $(BENCH_TARGET_DIR)/release/authflow-verify-profile $(BENCH_PROFILE_ARGS)
	@command -v node >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq nodejs; }
	taskset -c 0 node --no-warnings $(if $(findstring --revocations,$(BENCH_PROFILE_ARGS)),--single-threaded) bench/verify-profile/run-node.mjs $(BENCH_TARGET_DIR)/wasm32-wasip1/release/authflow-verify-profile.wasm $(BENCH_PROFILE_ARGS)
