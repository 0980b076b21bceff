"""The script sweep (issue #20), beside the route sweep: every page of app.url_map is opened by
an admin; every form it shows that posts is sent with `<script>` (breaking out of an attribute
first) in each of its text fields and text areas, the other fields as the page filled them; then
every page is opened again. No answer, neither the form's own (an error shown with the typed
value, or the page after saving) nor any page showing what was stored, may hold the script
unescaped.

The pages and their forms come from the app and its templates, not from a list here: a new form
is swept as soon as a page shows it. Sign-out forms are left out (the sweep needs its session).
"""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

import lxml.html
from sqlalchemy import text
from werkzeug.exceptions import HTTPException

from portal.extensions import db
from tests.portal.test_route_sweep import SIGNS_OUT, alpha, signed_in, sweep  # noqa: F401 - alpha is a fixture

UNESCAPED = '<script>alert("tm-xss'


def payload(n: int) -> str:
    """Breaks out of an attribute first; numbered, since names must differ (a client's, a policy's)."""
    return f'"\'><script>alert("tm-xss-{n}")</script>'
NOT_TEXT = {"hidden", "checkbox", "radio", "submit", "button", "image", "reset", "file"}


def html_of(resp) -> str | None:
    if resp is None or not (resp.content_type or "").startswith("text/html"):
        return None
    return resp.get_data(as_text=True)


def posting_forms(page: str, page_url: str) -> list[tuple[str, dict, list[str], bool]]:
    """(action path, fields as the page filled them, the names of the text fields, sent by htmx)
    of each form that posts and has a text field."""
    try:
        doc = lxml.html.fromstring(page)
    except (ValueError, lxml.etree.ParserError):
        return []
    found = []
    for form in doc.forms:
        action = form.get("hx-post") or (form.get("action") if (form.get("method") or "").lower() == "post" else None)
        if action is None:
            continue
        fields, text_fields = {}, []
        for el in form.inputs:
            name = el.get("name")
            if not name:
                continue
            if el.tag == "textarea":
                fields[name] = el.value or ""
                text_fields.append(name)
            elif el.tag == "select":
                chosen = el.value_options[:1] if el.value is None else el.value
                fields[name] = list(chosen) if el.multiple else chosen
            else:
                kind = (el.get("type") or "text").lower()
                if kind in ("checkbox", "radio"):
                    if el.checked:
                        fields.setdefault(name, el.get("value", "on"))
                elif kind == "hidden":
                    fields[name] = el.get("value", "")
                elif kind not in NOT_TEXT:
                    fields[name] = el.get("value", "")
                    text_fields.append(name)
        if text_fields:
            found.append((urlsplit(urljoin(page_url, action)).path, fields, text_fields, bool(form.get("hx-post"))))
    return found


def endpoint_of(app, path: str, method: str) -> str | None:
    try:
        return app.url_map.bind("localhost").match(path, method=method)[0]
    except HTTPException:
        return None


def test_script_in_every_text_field_of_every_form_never_comes_back_unescaped(app, alpha, make_browser):  # noqa: F811
    admin = signed_in(make_browser, alpha.admin.email)
    pages = [req.url for req in sweep(app, alpha)
             if req.method == "GET" and not req.public and req.endpoint not in SIGNS_OUT]
    problems, sent, seen = [], 0, set()

    def look(resp, what: str) -> None:
        body = html_of(resp)
        if body and UNESCAPED in body:
            at = body.index(UNESCAPED)
            problems.append(f"{what}: the script comes back unescaped: …{body[max(0, at - 120):at + 40]!r}")

    def send(action: str, fields: dict, htmx: bool, where: str) -> bool:
        """Posts the form; whether it was accepted."""
        nonlocal sent
        sent += 1
        try:
            resp = admin.post(action, fields, htmx=htmx)
        except Exception as exc:  # noqa: BLE001 - TESTING propagates what would be a 500
            problems.append(f"POST {action} ({where}): 500 ({exc!r})")
            db.session.rollback()
            return False
        if resp.status_code >= 500:
            problems.append(f"POST {action} ({where}): {resp.status_code}")
        look(resp, f"POST {action} ({where})")
        if resp.status_code in (302, 303) and resp.headers.get("Location"):
            look(admin.get(resp.headers["Location"]), f"the page after POST {action} ({where})")
        return resp.status_code < 400

    def as_stored(url: str, action: str, fields: dict) -> dict:
        """The same form read again from its page: what the last accepted post stored stays."""
        for again, now, _text, _htmx in posting_forms(html_of(admin.get(url)) or "", url):
            if again == action and set(now) == set(fields):
                return now
        return fields

    for url in pages:
        page = html_of(admin.get(url))
        if not page:
            continue
        for action, fields, text_fields, htmx in posting_forms(page, url):
            endpoint = endpoint_of(app, action, "POST")
            key = (endpoint, tuple(sorted(fields)))
            if endpoint is None or endpoint in SIGNS_OUT or key in seen:
                continue
            seen.add(key)
            # Every text field at once (mostly refused: the form comes back with what was typed),
            # then each alone with the rest as the page had them (what is valid is stored).
            send(action, {**fields, **{name: payload(sent + i) for i, name in enumerate(text_fields)}}, htmx,
                 f"form on {url}, every text field")
            for name in text_fields if len(text_fields) > 1 else ():
                if send(action, {**fields, name: payload(sent)}, htmx, f"form on {url}, {name}"):
                    fields = as_stored(url, action, fields)
    # Every page again, now that the forms have stored what they accepted; as htmx asks, too.
    for url in pages:
        look(admin.get(url), f"GET {url}")
        look(admin.hx_get(url), f"GET {url} (htmx)")

    assert len(seen) >= 20, f"only {len(seen)} forms found: is the sweep still reading the pages?"
    stored = sum(db.session.scalar(text(f"SELECT count(*) FROM {table} WHERE {column} LIKE '%tm-xss%'"))
                 for table, column in (("clients", "name"), ("messages", "body_text"), ("users", "name"),
                                       ("canned_responses", "name")))
    assert stored >= 4, "the forms stored no script: the pages after them show nothing to check"
    assert not problems, f"{len(problems)} of {sent} posts and {2 * len(pages)} pages:\n" + "\n".join(problems)
