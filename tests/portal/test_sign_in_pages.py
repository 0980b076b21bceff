"""An OAuth2 mailbox's sign-in on its page and on the dashboard: the grant's state, when the grant
and the client secret expire with the days left, marked from 14 days before; the dashboard's
"Sign-in grants" lists only what needs a person, within the signed-in MSP."""

import re
from datetime import datetime, time, timedelta, timezone

import pytest

from portal.extensions import db
from portal.models import Mailbox
from portal.models.base import utcnow
from portal.services import commit
from portal.services import mailbox_oauth as oauth_svc

OAUTH = {"provider": "generic", "client_id": "tidemark-test", "client_secret": "app-secret",
         "token_url": "http://127.0.0.1:9/token", "authorize_url": "http://127.0.0.1:9/authorize"}


def noon_in(days):
    return datetime.combine(utcnow().date() + timedelta(days=days), time(12), timezone.utc)


def oauth_mailbox(app, world, msp, address, *, grant_days=None, secret_days=None, reconnect=None, status="active",
                  connected=True):
    secret = (utcnow() + timedelta(days=secret_days)).date().isoformat() if secret_days is not None else None
    box = world.mailbox(msp, address=address, auth="oauth2", password=None, username=address,
                        oauth={**OAUTH, "secret_expires": secret})
    box = db.session.get(Mailbox, box.id)
    if connected:
        oauth_svc.store_grant(box.oauth, app.config["TIDEMARK_ENCRYPTION_KEY"], access_token="at",
                              access_expires_at=utcnow() + timedelta(hours=1), refresh_token="rt",
                              account=f"robot@{address.split('@')[1]}",
                              grant_expires_at=noon_in(grant_days) if grant_days else None)
        box.status = status
    if reconnect:
        oauth_svc.reconnect_needed(box.oauth, reconnect)
    commit()
    return box


def section(page: str, title_id: str) -> str:
    found = re.search(rf'<section class="card"[^>]*aria-labelledby="{title_id}">(.*?)</section>', page, re.S)
    assert found, f"no section {title_id}"
    return found.group(1)


def text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


@pytest.fixture
def acme(world):
    msp = world.msp("Acme MSP")
    world.user(msp, email="ana@acme.example")
    return msp


def test_the_mailbox_page_shows_the_grant_and_both_expiries_with_days_left(app, world, browser, acme):
    box = oauth_mailbox(app, world, acme, "m365@acme.example", grant_days=10, secret_days=40)
    browser.sign_in("ana@acme.example")
    page = section(browser.get(f"/mailboxes/{box.id}").get_data(as_text=True), "sign-in-title")
    assert "connected as robot@acme.example" in text(page)
    grant = re.search(r'id="grant-expires">(.*?)</dd>', page, re.S).group(1)
    secret = re.search(r'id="secret-expires">(.*?)</dd>', page, re.S).group(1)
    assert (utcnow() + timedelta(days=10)).date().isoformat() in grant
    assert '<span class="badge late">in 10 days</span>' in grant  # within 14 days: marked
    assert '<span class="badge">in 40 days</span>' in secret  # not yet


def test_reconnect_needed_expired_secret_and_not_connected_say_so(app, world, browser, acme):
    broken = oauth_mailbox(app, world, acme, "broken@acme.example", secret_days=-2,
                           reconnect="The provider refused the grant (invalid_grant): it was revoked.")
    fresh = oauth_mailbox(app, world, acme, "fresh@acme.example", status="draft", connected=False)
    password = world.mailbox(acme, address="plain@acme.example")
    browser.sign_in("ana@acme.example")
    page = section(browser.get(f"/mailboxes/{broken.id}").get_data(as_text=True), "sign-in-title")
    assert "reconnect needed: The provider refused the grant (invalid_grant): it was revoked." in text(page)
    assert '<span class="badge failed">expired 2 days ago</span>' in page
    page = section(browser.get(f"/mailboxes/{fresh.id}").get_data(as_text=True), "sign-in-title")
    assert re.search(r'id="grant-state" data-grant-state><span class="grant-state">not connected', page)
    assert "no date given: type it in the settings" in page
    assert 'id="sign-in"' not in browser.get(f"/mailboxes/{password.id}").get_data(as_text=True)


def test_the_dashboard_lists_only_what_needs_a_person_in_this_msp(app, world, browser, acme):
    beta = world.msp("Beta MSP")
    oauth_mailbox(app, world, acme, "soon@acme.example", grant_days=3, secret_days=200)
    oauth_mailbox(app, world, acme, "secret@acme.example", grant_days=90, secret_days=12)
    oauth_mailbox(app, world, acme, "broken@acme.example", reconnect="AADSTS7000222: the client secret expired.")
    oauth_mailbox(app, world, acme, "fine@acme.example", grant_days=60, secret_days=60)
    oauth_mailbox(app, world, acme, "off@acme.example", grant_days=2, status="disabled")
    oauth_mailbox(app, world, beta, "theirs@beta.example", grant_days=1, secret_days=1)
    browser.sign_in("ana@acme.example")
    grants = section(browser.get("/").get_data(as_text=True), "grants-title")
    listed = re.findall(r'>([a-z]+@[a-z.]+)</a>', grants)
    # Reconnect needed first, then the soonest expiry.
    assert listed == ["broken@acme.example", "soon@acme.example", "secret@acme.example"]
    row = text(grants[grants.index("soon@acme.example"):])
    assert row.startswith("soon@acme.example connected as robot@acme.example")
    assert "reconnect needed: AADSTS7000222: the client secret expired." in text(grants)
    assert '<span class="badge late">in 3 days</span>' in grants and '<span class="badge late">in 12 days</span>' in grants
    # The part that refreshes itself carries it too.
    fragment = browser.hx_get("/").get_data(as_text=True)
    assert "soon@acme.example" in section(fragment, "grants-title") and "theirs@beta.example" not in fragment


def test_the_dashboard_says_when_no_sign_in_needs_attention(app, world, browser, acme):
    oauth_mailbox(app, world, acme, "fine@acme.example", grant_days=60, secret_days=60)
    browser.sign_in("ana@acme.example")
    grants = section(browser.get("/").get_data(as_text=True), "grants-title")
    assert "No OAuth2 mailbox needs reconnecting, and no grant or client secret expires within 14 days." in grants
    assert "fine@acme.example" not in grants
