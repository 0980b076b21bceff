"""Redirects to an address the request brought go only to a page of this site: back after a
refused CSRF token (the Referer), and on after signing in (next)."""

import pytest

from tests.conftest import PASSWORD


@pytest.fixture
def ana(world):
    return world.user(world.msp("Acme MSP"), email="ana@acme.example", role="technician")


@pytest.mark.parametrize("referer, location", [
    ("https://evil.example/x", "/"),
    ("//evil.example/x", "/"),
    ("http://localhost.evil.example/clients", "/"),
    ("http://localhost//evil.example/x", "/"),
    ("/\\evil.example/x", "/"),
    ("http://localhost/clients?q=acme", "/clients?q=acme"),
    ("/clients", "/clients"),
    (None, "/"),
])
def test_a_refused_csrf_token_goes_back_only_to_this_site(browser, ana, referer, location):
    browser.sign_in("ana@acme.example")
    headers = {"Referer": referer} if referer else {}
    resp = browser.post("/account", {"name": "X", "csrf_token": "stale"}, headers=headers)
    assert resp.status_code == 302 and resp.headers["Location"] == location


@pytest.mark.parametrize("referer", ["https://evil.example/x", "//evil.example/x", "http://localhost/clients", None])
def test_a_refused_csrf_token_on_htmx_reloads_the_page_it_came_from(browser, ana, referer):
    browser.sign_in("ana@acme.example")
    headers = {"Referer": referer} if referer else {}
    resp = browser.post("/account", {"name": "X", "csrf_token": "stale"}, htmx=True, headers=headers)
    assert resp.status_code == 400 and resp.headers["HX-Refresh"] == "true"
    assert "Location" not in resp.headers and "HX-Redirect" not in resp.headers


@pytest.mark.parametrize("target", ["/\\evil.example/x", "/\t/evil.example/x", "http://localhost/clients"])
def test_next_after_sign_in_is_a_path_of_this_site(browser, ana, target):
    browser.get("/sign-in")
    resp = browser.post("/sign-in", {"email": "ana@acme.example", "password": PASSWORD},
                        query_string={"next": target})
    assert resp.headers["Location"] == ("/clients" if target.startswith("http") else "/")
