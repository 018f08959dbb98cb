"""Dovecot's IMAP compliance suite (imaptest's 71 scripted tests) against mu's live server.

The tool lives outside the repository (shared/tools/imaptest: its build.sh builds it out of
the tree, its run-compliance.sh runs it). Dovecot 2.3.19 scores 67 passed, 0 failed, 4
skipped on it; mu must do at least as well, with a CAPABILITY that lists only what it does
(a test whose capability is missing is skipped, and a skip is not a pass).
"""

import os
import re
import subprocess

from imap_site import PASSWORD, IMAPSite

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CANDIDATES = [os.environ.get("IMAPTEST_DIR", ""), os.path.join(ROOT, "..", "shared", "tools", "imaptest"),
              "/work/shared/tools/imaptest"]
DOVECOT_PASSED = 67


def _tool() -> str:
    for folder in CANDIDATES:
        if folder and os.path.isfile(os.path.join(folder, "run-compliance.sh")):
            return os.path.abspath(folder)
    raise AssertionError("imaptest not found: set IMAPTEST_DIR to the shared tools/imaptest folder")


def test_imaptest_compliance_at_least_as_good_as_dovecot(tmp_path):
    tool = _tool()
    build = subprocess.run([os.path.join(tool, "build.sh")], capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stderr[-3000:]
    binary = build.stdout.strip().splitlines()[-1]
    site = IMAPSite(tmp_path)
    try:
        site.add_user("imaptest")
        env = dict(os.environ, IMAPTEST_BIN=binary, IMAPTEST_TIMEOUT="400")
        run = subprocess.run([os.path.join(tool, "run-compliance.sh"), "127.0.0.1", str(site.port), "imaptest",
                              PASSWORD], capture_output=True, text=True, timeout=600, env=env)
    finally:
        site.close()
    report = run.stdout + run.stderr
    summary = re.search(r"imaptest: (\d+) passed, (\d+) failed", report)
    assert summary, report[-3000:]
    passed, failed = int(summary.group(1)), int(summary.group(2))
    assert failed == 0, report[-6000:]
    assert passed >= DOVECOT_PASSED, report[-3000:]
