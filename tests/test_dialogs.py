"""Every scripted dialog in tests/dialogs/ played against a live mu (format: tests/dialogs.py)."""

import subprocess
from pathlib import Path

import pytest

from conftest import Mu
from dialogs import Player, parse

DIALOGS = sorted((Path(__file__).parent / "dialogs").glob("*.dialog"))


@pytest.fixture(scope="module")
def server_for(tmp_path_factory, mu_env):
    """server_for(settings) -> a running Mu with those `!` settings, one per distinct set."""
    started = {}
    folder = tmp_path_factory.mktemp("dialogs")

    def get(settings: tuple) -> Mu:
        if settings not in started:
            env, blocked = dict(mu_env), []
            for setting in settings:
                if setting == "tls":
                    cert, key = folder / "cert.pem", folder / "key.pem"
                    if not cert.exists():
                        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                                        str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=mu.test"],
                                       check=True, capture_output=True)
                    env.update(MAIL_TLS_CERT=str(cert), MAIL_TLS_KEY=str(key))
                elif setting.startswith("blocklist "):
                    blocked.append(setting.split(" ", 1)[1])
                else:
                    name, _, value = setting.partition("=")
                    env[name] = value
            mu = Mu(str(folder / f"home{len(started)}"), env).start()
            mu.add_user("dialog", credits=4)
            for value in blocked:
                mu.cli("blocklist", "add", value)
            started[settings] = mu
        return started[settings]

    yield get
    for mu in started.values():
        mu.stop()


@pytest.mark.parametrize("path", DIALOGS, ids=[p.stem for p in DIALOGS])
def test_dialog(path, server_for):
    dialog = parse(path)
    assert dialog.about, f"{path.name}: the first comment line says what the dialog checks"
    server = server_for(dialog.settings)
    port = {"smtp": server.smtp_port, "submission": server.submission_port,
            "submissions": server.submissions_port}[dialog.port]
    Player(dialog, port).play()
