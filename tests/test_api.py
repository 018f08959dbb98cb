"""The JSON API: direct messages, folders, paging, read state, per-user delete, errors."""

import pytest


@pytest.fixture(scope="module")
def pair(mu):
    a, b = mu.add_user(), mu.add_user()
    return (a, mu.token(a)), (b, mu.token(b))


def test_direct_message_round_trip(mu, pair):
    (a, ta), (b, tb) = pair
    sent = mu.send(ta, b, subject="Hello", body="Hi Bob")
    assert sent["from"] == a and sent["to"] == [b] and sent["message_id"].startswith("<")
    assert sent["created_at"].endswith("+00:00") and sent["thread_id"] == sent["id"]
    inbox = mu.inbox(tb)
    msg = inbox["messages"][0]
    assert msg["id"] == sent["id"] and msg["read"] is False and inbox["unread"] >= 1
    assert msg["body"] == "Hi Bob"   # list entries are whole message objects
    assert mu.inbox(ta, folder="sent")["messages"][0]["id"] == sent["id"]
    got = mu.http("GET", f"/api/mail/{sent['id']}", tb).json()
    assert got["body"] == "Hi Bob" and got["read"] is True
    assert not any(m["id"] == sent["id"] and not m["read"] for m in mu.inbox(tb)["messages"])


def test_several_recipients_and_local_address_forms(mu, pair):
    (a, ta), (b, tb) = pair
    c = mu.add_user()
    sent = mu.send(ta, f"{b}, {c.upper()}@MU.TEST", subject="group")
    assert sorted(sent["to"]) == sorted([b, c])
    assert mu.inbox(mu.token(c))["messages"][0]["subject"] == "group"


def test_reply_threads_with_parent(mu, pair):
    (a, ta), (b, tb) = pair
    first = mu.send(ta, b, subject="topic")
    reply = mu.send(tb, a, subject="", body="answer", reply_to=first["id"])
    assert reply["thread_id"] == first["thread_id"] and reply["subject"] == "Re: topic"
    assert reply["in_reply_to"] == first["message_id"]


def test_delete_is_per_user(mu, pair):
    (a, ta), (b, tb) = pair
    sent = mu.send(ta, b, subject="keep mine")
    assert mu.http("DELETE", f"/api/mail/{sent['id']}", tb).status == 204
    assert mu.http("GET", f"/api/mail/{sent['id']}", tb).status == 404
    assert mu.http("GET", f"/api/mail/{sent['id']}", ta).status == 200


def test_other_users_message_is_404(mu, pair):
    (a, ta), (b, tb) = pair
    outsider = mu.token(mu.add_user())
    sent = mu.send(ta, b, subject="private")
    for method, path in (("GET", f"/api/mail/{sent['id']}"), ("GET", f"/api/mail/{sent['id']}/raw"),
                         ("DELETE", f"/api/mail/{sent['id']}")):
        resp = mu.http(method, path, outsider)
        assert resp.status == 404 and "error" in resp.json()
    assert mu.http("GET", f"/api/mail/{sent['id']}", tb).status == 200


def test_paging_newest_first_with_before(mu):
    a, b = mu.add_user(), mu.add_user()
    ta, tb = mu.token(a), mu.token(b)
    ids = [mu.send(ta, b, subject=f"n{i}")["id"] for i in range(7)]
    page1 = mu.inbox(tb, limit=3)
    assert [m["id"] for m in page1["messages"]] == ids[::-1][:3] and page1["unread"] == 7
    page2 = mu.inbox(tb, limit=3, before=page1["messages"][-1]["id"])
    assert [m["id"] for m in page2["messages"]] == ids[::-1][3:6]


def test_search(mu, pair):
    (a, ta), (b, tb) = pair
    mu.send(ta, b, subject="quarterly numbers", body="the zebra report")
    found = mu.http("GET", "/api/mail?folder=inbox&q=zebra", tb).json()["messages"]
    assert [m["subject"] for m in found] == ["quarterly numbers"]
    assert found[0]["body"] == "the zebra report"


def test_list_entries_carry_long_bodies_too(mu, pair):
    (a, ta), (b, tb) = pair
    long_body = "line of a long letter\n" * 300   # stored as a blob, not inline
    sent = mu.send(ta, b, subject="long", body=long_body)
    listed = next(m for m in mu.inbox(tb)["messages"] if m["id"] == sent["id"])
    assert listed["body"] == long_body and listed["read"] is False


def test_raw_internal_message_is_rfc5322(mu, pair):
    (a, ta), (b, tb) = pair
    sent = mu.send(ta, b, subject="Grüße", body="unicode ✓")
    raw = mu.http("GET", f"/api/mail/{sent['id']}/raw", tb)
    assert raw.status == 200 and raw.headers["content-type"].startswith("message/rfc822")
    assert b"Subject: =?utf-8?" in raw.body and f"Message-ID: {sent['message_id']}".encode() in raw.body


@pytest.mark.parametrize("body,status", [
    ({"to": "", "subject": "x", "body": "y"}, 400),
    ({"subject": "x", "body": "y"}, 400),
    ({"to": "no-such-user-xyz", "subject": "x", "body": "y"}, 400),
    ({"to": "bad@@address", "subject": "x", "body": "y"}, 400),
    ({"to": "USER", "subject": "s" * 999, "body": "y"}, 400),
    ({"to": "USER", "subject": 5, "body": "y"}, 400),
    ({"to": "USER", "subject": "x", "body": "y", "reply_to": "nope"}, 400),
])
def test_bad_send_input_400_writes_nothing(mu, pair, body, status):
    (a, ta), (b, tb) = pair
    body = {k: (v.replace("USER", b) if isinstance(v, str) else v) for k, v in body.items()}
    before = mu.inbox(ta, folder="sent", limit=500)["messages"]
    resp = mu.http("POST", "/api/mail", ta, body)
    assert resp.status == status and resp.json()["error"]
    assert mu.inbox(ta, folder="sent", limit=500)["messages"] == before


def test_invalid_json_and_content_type(mu, pair):
    (a, ta), (b, tb) = pair
    assert mu.http("POST", "/api/mail", ta, raw=b"{not json", headers={"Content-Type": "application/json"}).status == 400
    resp = mu.http("POST", "/api/mail", ta, raw=b"to=x", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 400 and "error" in resp.json()


def test_body_over_max_size_413(make_mu):
    mu = make_mu(MAIL_MAX_SIZE="4096")
    a, b = mu.add_user(), mu.add_user()
    resp = mu.http("POST", "/api/mail", mu.token(a), {"to": b, "subject": "big", "body": "x" * 5000})
    assert resp.status == 413 and "error" in resp.json()


def test_missing_or_bad_token_401(mu):
    assert mu.http("GET", "/api/mail").status == 401
    resp = mu.http("GET", "/api/mail", "not-a-token")
    assert resp.status == 401 and resp.json()["error"]


def test_admin_blocklist_api(mu, pair):
    (a, ta), _ = pair
    admin = mu.add_user(admin=True)
    tadmin = mu.token(admin)
    assert mu.http("GET", "/api/admin/blocklist", ta).status == 403
    assert mu.http("POST", "/api/admin/blocklist", ta, {"value": "x@y.org"}).status == 403
    assert mu.http("POST", "/api/admin/blocklist", tadmin, {"value": "x@y.org"}).status == 201
    assert mu.http("POST", "/api/admin/blocklist", tadmin, {"value": "not valid"}).status == 400
    values = [e["value"] for e in mu.http("GET", "/api/admin/blocklist", tadmin).json()["entries"]]
    assert "x@y.org" in values
    assert mu.http("DELETE", "/api/admin/blocklist/x@y.org", tadmin).status == 204
    assert mu.http("DELETE", "/api/admin/blocklist/x@y.org", tadmin).status == 404


def test_restart_keeps_every_message(make_mu):
    mu = make_mu()
    a, b = mu.add_user(), mu.add_user()
    ta, tb = mu.token(a), mu.token(b)
    ids = {mu.send(ta, b, subject=f"m{i}")["id"] for i in range(20)}
    mu.restart()
    assert {m["id"] for m in mu.inbox(tb, limit=100)["messages"]} == ids
    mu.kill()
    mu.start()
    assert {m["id"] for m in mu.inbox(tb, limit=100)["messages"]} == ids
    assert mu.http("GET", "/api/mail", tb).status == 200   # tokens survive restarts
