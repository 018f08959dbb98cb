# mu — `make run` starts the server; `make test` runs the whole suite. Both build .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ADDRESS ?= :8080
# Debian packages the tests drive mu with: swaks and msmtp (submitting mail); Postfix (smtp-source/smtp-sink, and private
# instances as a remote MX and as a relay into mu); OpenDKIM checking mu's signatures; Chromium;
# real-world messages (CPython's email tests, SpamAssassin's samples, enmime's test mail).
# The interop tier (tests/interop.py) also needs openssl for its certificates, libunbound for
# OpenDKIM's resolver, and unshare/mount for the peers' loopback-only resolv.conf.
# Each is named by a file it installs, so a machine that has it installs nothing.
TEST_DEBS := \
	swaks:/usr/bin/swaks \
	isync:/usr/bin/mbsync \
	neomutt:/usr/bin/neomutt \
	tmux:/usr/bin/tmux \
	dovecot-imapd:/usr/lib/dovecot/imap \
	dovecot-dev:/usr/lib/dovecot/dovecot-config \
	msmtp:/usr/bin/msmtp \
	postfix:/usr/sbin/smtp-source \
	chromium:/usr/bin/chromium \
	openssl:/usr/bin/openssl \
	opendkim:/usr/sbin/opendkim \
	opendkim-tools:/usr/sbin/opendkim-testkey \
	libpython3.11-testsuite:/usr/lib/python3.11/test/test_email/data/msg_01.txt \
	spamassassin:/usr/share/doc/spamassassin/examples/sample-spam.txt \
	golang-github-jhillyerd-enmime-dev:/usr/share/gocode/src/github.com/jhillyerd/enmime/testdata \
	libunbound8:/usr/lib/x86_64-linux-gnu/libunbound.so.8 \
	util-linux:/usr/bin/unshare \
	mount:/bin/mount

.PHONY: run test bench lint fuzz dist install system-packages clean

$(VENV)/.runtime: requirements.txt
	[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV)
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

# Install into /opt/mu: the program (lib/ with its own venv, docs/, scripts/, deploy/ and
# the `mu` command), replaced whole at every run so nothing of an older version stays; the
# systemd unit; the mu user and its data folder. The settings file /etc/mu/mu.env is created
# once and never overwritten. Run as root; re-running it is the upgrade (docs: Upgrading).
PREFIX ?= /opt/mu
SYSCONFDIR ?= /etc/mu
UNITDIR ?= /etc/systemd/system
DATADIR ?= /var/lib/mu
MU_USER ?= mu
PATHS_SED := -e 's|/opt/mu|$(PREFIX)|g' -e 's|/etc/mu|$(SYSCONFDIR)|g' -e 's|/var/lib/mu|$(DATADIR)|g'
install:
	rm -rf $(PREFIX).new
	install -d $(PREFIX).new/lib $(PREFIX).new/scripts $(PREFIX).new/docs $(PREFIX).new/deploy
	cp -r mu views mu.py requirements.txt $(PREFIX).new/lib/
	find $(PREFIX).new/lib -name __pycache__ -prune -exec rm -rf {} +
	cp -r docs/. $(PREFIX).new/docs/
	install -m 755 scripts/generate-dkim-keys.sh $(PREFIX).new/scripts/
	install -m 644 deploy/Caddyfile deploy/nginx.conf deploy/mu.env $(PREFIX).new/deploy/
	sed $(PATHS_SED) deploy/certbot-deploy-hook > $(PREFIX).new/deploy/certbot-deploy-hook
	sed $(PATHS_SED) deploy/mu > $(PREFIX).new/mu
	chmod 755 $(PREFIX).new/deploy/certbot-deploy-hook $(PREFIX).new/mu
	$(PYTHON) -m venv $(PREFIX).new/lib/.venv
	$(PREFIX).new/lib/.venv/bin/pip install --disable-pip-version-check -q -r $(PREFIX).new/lib/requirements.txt
	rm -rf $(PREFIX).old
	if [ -e $(PREFIX) ]; then mv $(PREFIX) $(PREFIX).old; fi
	mv $(PREFIX).new $(PREFIX)
	rm -rf $(PREFIX).old
	id -u $(MU_USER) >/dev/null 2>&1 || useradd --system --user-group --home-dir $(DATADIR) --shell /usr/sbin/nologin $(MU_USER)
	install -d -m 700 -o $(MU_USER) -g $(MU_USER) $(DATADIR)
	@# Files a command once run as root left behind would keep the server out: give them back.
	find $(DATADIR) ! -user $(MU_USER) -exec chown $(MU_USER):$(MU_USER) {} +
	install -d -m 755 $(SYSCONFDIR)
	@if [ -e $(SYSCONFDIR)/mu.env ]; then echo "kept $(SYSCONFDIR)/mu.env"; else \
	  sed $(PATHS_SED) deploy/mu.env > $(SYSCONFDIR)/mu.env && chgrp $(MU_USER) $(SYSCONFDIR)/mu.env && \
	  chmod 640 $(SYSCONFDIR)/mu.env && echo "created $(SYSCONFDIR)/mu.env"; fi
	install -d $(UNITDIR)
	sed $(PATHS_SED) -e 's|^User=mu|User=$(MU_USER)|' -e 's|^Group=mu|Group=$(MU_USER)|' deploy/mu.service > $(UNITDIR)/mu.service
	chmod 644 $(UNITDIR)/mu.service
	@echo "installed in $(PREFIX). Next (docs/README.md, Installing):"
	@echo "  edit $(SYSCONFDIR)/mu.env (MAIL_DOMAIN), then: $(PREFIX)/mu users add NAME --admin"
	@echo "  systemctl daemon-reload && systemctl enable --now mu   (upgrading: systemctl restart mu)"

clean:
	rm -rf $(VENV) dist build test-artifacts
