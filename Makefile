# mu — `make run` starts the server; `make test` runs the whole suite. Both build .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ADDRESS ?= :8080
# Debian packages the tests drive mu with (swaks, Postfix's smtp-source/smtp-sink, Chromium).
TEST_DEBS := swaks postfix chromium openssl

.PHONY: run test bench lint fuzz dist install system-packages clean

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -q -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(VENV)/bin/pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $@

system-packages:
	@missing=""; \
	command -v swaks >/dev/null 2>&1 || missing="$$missing swaks"; \
	[ -x /usr/sbin/smtp-source ] || missing="$$missing postfix"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

run: $(VENV)/.runtime
	$(PY) mu.py --serve --address $(ADDRESS)

test: $(VENV)/.dev system-packages
	$(PY) -m pytest -q -p no:cacheprovider tests

bench: $(VENV)/.dev system-packages
	$(PY) bench/run.py

fuzz: $(VENV)/.dev
	MU_FUZZ_EXAMPLES=5000 $(PY) -m pytest -q -p no:cacheprovider tests/test_fuzz.py

lint: $(VENV)/.dev
	$(PY) -m compileall -q mu mu.py tests bench

clean:
	rm -rf $(VENV) dist test-artifacts
