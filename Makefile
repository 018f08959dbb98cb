# mu — `make run` starts the server; `make test` runs the whole suite. Both build .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ADDRESS ?= :8080
# Debian packages the tests drive mu with: swaks; Postfix (smtp-source/smtp-sink, and private
# instances as a remote MX and as a relay into mu); OpenDKIM checking mu's signatures; Chromium;
# real-world messages (CPython's email tests, SpamAssassin's samples, enmime's test mail).
# Each is named by a file it installs, so a machine that has it installs nothing.
TEST_DEBS := \
	swaks:/usr/bin/swaks \
	isync:/usr/bin/mbsync \
	neomutt:/usr/bin/neomutt \
	tmux:/usr/bin/tmux \
	dovecot-imapd:/usr/lib/dovecot/imap \
	dovecot-dev:/usr/lib/dovecot/dovecot-config \
	postfix:/usr/sbin/smtp-source \
	chromium:/usr/bin/chromium \
	openssl:/usr/bin/openssl \
	opendkim:/usr/sbin/opendkim \
	opendkim-tools:/usr/sbin/opendkim-testkey \
	libpython3.11-testsuite:/usr/lib/python3.11/test/test_email/data/msg_01.txt \
	spamassassin:/usr/share/doc/spamassassin/examples/sample-spam.txt \
	golang-github-jhillyerd-enmime-dev:/usr/share/gocode/src/github.com/jhillyerd/enmime/testdata \
	libunbound8:/usr/lib/x86_64-linux-gnu/libunbound.so.8

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
	for pair in $(TEST_DEBS); do \
	  [ -e "$${pair#*:}" ] || missing="$$missing $${pair%%:*}"; \
	done; \
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
	MU_FUZZ_EXAMPLES=5000 $(PY) -m pytest -q -p no:cacheprovider tests/test_fuzz.py tests/test_imap_fuzz.py

lint: $(VENV)/.dev
	$(PY) -m pyflakes mu mu.py tests bench

# A single executable file: a zipapp carrying mu and its pure-Python dependencies.
dist: $(VENV)/.runtime
	rm -rf build/dist && mkdir -p build/dist dist
	$(VENV)/bin/pip install --disable-pip-version-check -q --no-compile --target build/dist -r requirements.txt
	rm -rf build/dist/bin build/dist/*.dist-info
	cp -r mu views build/dist/
	printf 'import sys\nfrom mu.cli import main\nsys.exit(main())\n' > build/dist/__main__.py
	$(PYTHON) -m zipapp build/dist -o dist/mu -p "/usr/bin/env python3"
	@echo "built dist/mu ($$(du -h dist/mu | cut -f1))"

# Install into /opt/mu (the program in lib/ with its own venv, the `mu` command beside it)
# and the systemd unit. Run as root.
PREFIX ?= /opt/mu
install:
	install -d $(PREFIX)/lib $(PREFIX)/scripts $(PREFIX)/docs
	cp -r mu views mu.py requirements.txt $(PREFIX)/lib/
	cp -r docs/. $(PREFIX)/docs/
	install -m 755 scripts/generate-dkim-keys.sh $(PREFIX)/scripts/
	install -m 755 deploy/mu $(PREFIX)/mu
	$(PYTHON) -m venv $(PREFIX)/lib/.venv
	$(PREFIX)/lib/.venv/bin/pip install --disable-pip-version-check -q -r $(PREFIX)/lib/requirements.txt
	id -u mu >/dev/null 2>&1 || useradd --system --home-dir /var/lib/mu --shell /usr/sbin/nologin mu
	install -d -m 700 -o mu -g mu /var/lib/mu
	install -m 644 deploy/mu.service /etc/systemd/system/mu.service
	@echo "installed in $(PREFIX); edit MAIL_DOMAIN in /etc/systemd/system/mu.service, then:"
	@echo "  systemctl daemon-reload && systemctl enable --now mu"

clean:
	rm -rf $(VENV) dist build test-artifacts
