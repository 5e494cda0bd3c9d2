# The sign-in pages in a real browser (tests/browser/): headless Debian Chromium driven by
# Selenium through Debian's chromedriver, against `make run`'s stack on free 127.0.0.1 ports.
# Included by the top-level Makefile, which defines VENV, ENVOY, CARGO, SUDO and `wasm` / `$(ENVOY)`.
#
#   make browser-test          the browser tests (part of `make test`); screenshots in target/browser-screenshots/
#   make browser-screenshots   the same, writing the screenshots into docs/screenshots/

BROWSER_PY := $(VENV)/bin/python
BROWSER_TOOLS_STAMP := $(VENV)/.authflow-browser-tools
BROWSER_TEST_TIMEOUT ?= 300

.PHONY: browser-tools browser-test browser-screenshots

browser-tools: $(ENVOY) $(BROWSER_TOOLS_STAMP)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  echo "installing Chromium and its driver (apt-get)"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

$(BROWSER_TOOLS_STAMP): $(ENVOY) tests/browser/requirements.txt
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/browser/requirements.txt
	@touch $@

# Selenium Manager stays offline (SE_OFFLINE): the tests name /usr/bin/chromium and
# /usr/bin/chromedriver, and nothing may download a browser.
browser-test: wasm browser-tools
	$(CARGO) build -p authflow-auth-service -p authflow-echo
	cd tests/browser && SE_OFFLINE=true timeout $(BROWSER_TEST_TIMEOUT) $(abspath $(BROWSER_PY)) -m unittest -v

browser-screenshots:
	AUTHFLOW_SCREENSHOTS=$(abspath docs/screenshots) $(MAKE) --no-print-directory browser-test
