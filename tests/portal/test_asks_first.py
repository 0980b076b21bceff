"""Actions that ask first (hx-confirm) still ask when the page's script has not run: a plain
form submit gets a page that asks, and only its "yes" acts."""

import re
from pathlib import Path

from portal.models import Mailbox, Route

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
CONFIRMING_TAG = re.compile(r"<(?:form|button)\b[^>]*?\bhx-confirm=[^>]*>", re.S)
ENDPOINT = re.compile(r"url_for\('([a-z_]+\.[a-z_]+)'")
VARIABLE = re.compile(r"hx-post=\"\{\{ (\w+) \}\}\"")


def confirming_endpoints() -> dict[str, str]:
    """Every endpoint a form or button posts to after hx-confirm, with the template it is in."""
    found = {}
    for path in TEMPLATES.rglob("*.html"):
        text = path.read_text()
        for match in CONFIRMING_TAG.finditer(text):
            tag = match.group()
            names = ENDPOINT.findall(tag)
            if not names and (var := VARIABLE.search(tag)):  # the nearest {% set var = url_for(...) %} above
                before = text[:match.start()]
                names = re.findall(r"\{% set " + var.group(1) + r" = url_for\('([a-z_]+\.[a-z_]+)'", before)
            assert names, f"{path.name}: a tag asks first but its target was not found: {tag[:120]}"
            found[names[-1]] = path.name
    return found


def test_every_action_that_asks_in_the_browser_also_asks_without_script(app):
    endpoints = confirming_endpoints()
    assert {"mailboxes.delete", "mailboxes.make_route_live", "unprocessed.teach"} <= set(endpoints)
    missing = [f"{e} ({t})" for e, t in endpoints.items() if not hasattr(app.view_functions[e], "asks_first")]
    assert not missing, f"these ask with hx-confirm but act on a plain submit: {missing}"


def test_a_plain_delete_asks_and_only_yes_deletes(world, browser, db):
    msp = world.msp("Acme MSP")
    world.user(msp, email="ana@acme.example", role="admin")
    box = world.mailbox(msp)
    browser.sign_in("ana@acme.example")
    here = f"/mailboxes/{box.id}"

    resp = browser.post(f"{here}/delete", headers={"Referer": f"http://localhost{here}"}, confirmed=False)
    page = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert "Delete this mailbox?" in page and "Nothing is done yet" in page
    assert 'name="confirmed" value="yes"' in page
    assert f'href="{here}"' in page  # Cancel goes back where the click came from
    db.session.expire_all()
    assert db.session.get(Mailbox, box.id) is not None

    resp = browser.post(f"{here}/delete")  # with confirmed=yes
    assert resp.status_code == 303
    db.session.expire_all()
    assert db.session.get(Mailbox, box.id) is None


def test_htmx_requests_were_asked_in_the_browser_and_act(world, browser, db):
    msp = world.msp("Acme MSP")
    world.user(msp, email="ana@acme.example", role="admin")
    box = world.mailbox(msp)
    browser.sign_in("ana@acme.example")
    resp = browser.post(f"/mailboxes/{box.id}/delete", htmx=True, confirmed=False)
    assert resp.status_code == 200 and resp.headers.get("HX-Redirect") == "/mailboxes"
    db.session.expire_all()
    assert db.session.get(Mailbox, box.id) is None


def test_the_asking_page_carries_the_form_over_and_refuses_a_foreign_referer(world, browser, db):
    msp = world.msp("Acme MSP")
    contoso = world.client(msp, "Contoso")
    world.user(msp, email="ana@acme.example", role="admin")
    box = world.mailbox(msp, routes=[
        {"name": "Contoso", "client": contoso, "recipients": ["contoso@acme.example"], "test_mode": True},
        {"name": "Everything else", "client": msp, "fallback": True}])
    browser.sign_in("ana@acme.example")
    route = db.session.query(Route).filter_by(mailbox_id=box.id, name="Contoso").one()
    url = f"/mailboxes/{box.id}/routes/{route.id}/make-live"

    resp = browser.post(url, {"note": "a<b"}, headers={"Referer": "https://elsewhere.example/x"}, confirmed=False)
    page = resp.get_data(as_text=True)
    assert "Make this route live?" in page
    assert 'name="note" value="a&lt;b"' in page  # what the form held goes along, escaped
    assert 'href="/"' in page and "elsewhere.example" not in page
    db.session.expire_all()
    assert db.session.get(Route, route.id).test_mode

    browser.post(url)
    db.session.expire_all()
    assert not db.session.get(Route, route.id).test_mode
