"""The in-process tier itself: the web app answers without a server process."""

from inproc import InProcess


def test_api_round_trip_in_process(tmp_path):
    site = InProcess(tmp_path)
    site.add_user("alice")
    site.add_user("bobby")
    token = site.token("alice")
    resp = site.web.request("POST", "/api/mail", token=token, json_body={"to": "bobby", "subject": "hi", "body": "x"})
    assert resp.status == 201, resp.text
    got = site.web.request("GET", "/api/mail?folder=inbox", token=site.token("bobby")).json()
    assert [m["subject"] for m in got["messages"]] == ["hi"]
    assert site.web.request("GET", "/api/me").status == 401


def test_login_keeps_session_cookie(tmp_path):
    site = InProcess(tmp_path)
    site.add_user("carol", password="secret99")
    page = site.web.request("GET", "/login")
    csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    resp = site.web.request("POST", "/login", form={"username": "carol", "password": "secret99", "csrf": csrf})
    assert resp.status in (302, 303) and "mu_session" in site.web.cookies
    assert site.web.request("GET", "/api/me").json()["name"] == "carol"
