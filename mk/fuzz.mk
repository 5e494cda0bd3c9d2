# Fuzzing with cargo-fuzz (libFuzzer): the crate in fuzz/, its targets and
# checked-in seed corpora. Included by the top-level Makefile. See docs/fuzzing.md.
#
#   make fuzz         every target in turn for FUZZ_TIME seconds (default 60);
#                     new inputs go to fuzz/.corpus/<target>, crashes to fuzz/artifacts/<target>
#   make fuzz-smoke   every target replays its checked-in corpus, then mutates for
#                     FUZZ_SMOKE_TIME seconds (part of `make test`)
#   make fuzz-build   build the targets only
#
# FUZZ_SANITIZER: none by default. The code under test is safe Rust, so what a
# run looks for is panics and failed assertions; AddressSanitizer would cost
# 2-3x throughput for no extra finding. Use FUZZ_SANITIZER=address to check anyway.

FUZZ_TARGETS ?= request_decision config jwks revocation_feed fingerprint path p256_differential ed25519_differential rsa_differential dpop_proof return_to shared_data forward_edits set_cookie
FUZZ_TIME ?= 60
FUZZ_SMOKE_TIME ?= 3
FUZZ_SANITIZER ?= none
FUZZ_ARGS ?=
FUZZ_CARGO := cargo +nightly fuzz
FUZZ_FLAGS = --sanitizer $(FUZZ_SANITIZER)

.PHONY: fuzz fuzz-smoke fuzz-build fuzz-tools

# What a bare machine needs: a nightly toolchain and cargo-fuzz.
fuzz-tools:
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked

fuzz-build: fuzz-tools
	cd fuzz && $(FUZZ_CARGO) build $(FUZZ_FLAGS)

# The first corpus directory receives new inputs, so the checked-in one is only read.
fuzz: fuzz-build
	@set -e; for t in $(FUZZ_TARGETS); do \
	  echo "== fuzz $$t for $(FUZZ_TIME) s"; \
	  mkdir -p fuzz/.corpus/$$t; \
	  (cd fuzz && $(FUZZ_CARGO) run $(FUZZ_FLAGS) $$t .corpus/$$t corpus/$$t -- \
	    -max_total_time=$(FUZZ_TIME) -print_final_stats=1 $(FUZZ_ARGS)); \
	done

# Quiet unless something fails: then the end of libFuzzer's report (the panic
# message and the input file it saved under fuzz/artifacts/<target>/).
fuzz-smoke: fuzz-build
	@set -e; for t in $(FUZZ_TARGETS); do \
	  rm -rf fuzz/.smoke/$$t && mkdir -p fuzz/.smoke/$$t; \
	  log=fuzz/.smoke/$$t.log; \
	  if ! (cd fuzz && $(FUZZ_CARGO) run $(FUZZ_FLAGS) $$t .smoke/$$t corpus/$$t -- \
	      -max_total_time=$(FUZZ_SMOKE_TIME) -print_final_stats=1) >$$log 2>&1; then \
	    tail -n 60 $$log; echo "fuzz-smoke: $$t FAILED (log: $$log)"; exit 1; \
	  fi; \
	  echo "fuzz-smoke: $$t ok, $$(grep -o 'stat::number_of_executed_units: *[0-9]*' $$log | grep -o '[0-9]*$$') inputs run"; \
	done
