# The compose stack for real (docker-compose.yml, Dockerfile): built, started and walked through.
# Included by the top-level Makefile (ENVOY, WASM and DEPLOY_TOOLS_STAMP come from there and
# mk/deploy.mk); see scripts/compose-test.sh. Needs root (apt-get, its own dockerd).
#
#   make compose-test   install docker.io / mmdebstrap / the Compose plugin if missing, start a
#                       private dockerd, make the base images locally (no registry needed),
#                       the README's compose walkthrough (from `docker compose up --build --wait`
#                       to `docker compose down -v`), stop the daemon. CI runs it after `make test`.

.PHONY: compose-test

compose-test: wasm $(ENVOY) $(DEPLOY_TOOLS_STAMP)
	scripts/compose-test.sh
