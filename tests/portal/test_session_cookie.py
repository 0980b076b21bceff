"""The sign-in cookie goes back to the browser only when it changed or is due to slide forward: a
response that re-sent the cookie it was given could land after a concurrent one that changed it and
undo the change (a flash lost while the page's scripts were still loading)."""

import time

import pytest
from werkzeug.http import parse_cookie

from portal.auth import session_cookie

COOKIE = "tidemark_session"


@pytest.fixture
def signed_in(world, browser):
    world.user(world.msp(), email="ana@acme.example")
    browser.sign_in("ana@acme.example")
    return browser


def set_session_cookie(resp):
    found = [v for k, v in resp.headers.items() if k == "Set-Cookie" and v.startswith(COOKIE + "=")]
    return found[0] if found else None


def test_a_static_file_or_an_unchanged_page_does_not_send_the_cookie_back(signed_in):
    for url in ("/static/app.js", "/", "/tickets"):
        resp = signed_in.get(url)
        assert resp.status_code == 200 and set_session_cookie(resp) is None, url


def test_a_flash_survives_a_slower_response_to_a_request_sent_before_it(app, signed_in):
    client = signed_in.client
    before = client.get_cookie(COOKIE).value
    with client.session_transaction() as session:  # a form's answer: its flash is in the new cookie
        session["_flashes"] = [("success", "Saved the thing.")]
    # A request the browser sent before that answer, with the cookie it had then, answered later.
    stale = app.test_client()
    stale.set_cookie(COOKIE, before)
    for url in ("/static/app.js", "/static/vendor/htmx/htmx-2.0.11.min.js", "/"):
        late = set_session_cookie(stale.get(url))
        if late:  # the browser keeps whichever cookie came last
            client.set_cookie(COOKIE, parse_cookie(late)[COOKIE])
    assert "Saved the thing." in signed_in.get("/").get_data(as_text=True)


def test_the_sign_in_still_slides_forward_every_few_minutes(monkeypatch, signed_in):
    assert set_session_cookie(signed_in.get("/")) is None
    later = time.time() + session_cookie.SLIDE_EVERY_SECONDS + 1
    monkeypatch.setattr(session_cookie.time, "time", lambda: later)
    slid = set_session_cookie(signed_in.get("/"))
    assert slid and "Expires=" in slid
    assert signed_in.get("/").status_code == 200  # the cookie it got back still signs in


def test_a_change_to_the_session_is_sent_at_once(signed_in):
    resp = signed_in.sign_out()
    assert resp.status_code == 302 and set_session_cookie(resp) is not None
    assert signed_in.get("/").status_code == 302
