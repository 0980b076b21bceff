"""Field errors in the product's words: no library's text (idna's code points, email_validator's
quoted empty string) reaches the person at the form."""

import html

LIBRARY_WORDS = ("Codepoint", "codepoint", "@-sign", "''", "IDNA", "is not a valid")


def _body(resp) -> str:
    return html.unescape(resp.get_data(as_text=True))


def _no_library_words(body: str) -> None:
    assert not any(w in body for w in LIBRARY_WORDS), [w for w in LIBRARY_WORDS if w in body]


def test_a_web_address_in_the_allow_list_is_explained_and_spaces_separate_entries(db, admin, tree):
    msp = tree[0]
    resp = admin.post("/clients/new", {"name": "Berlin", "parent_id": msp.id,
                                       "allow": "http://berlin fabrikam.example boss@gmail.com"}, htmx=True)
    body = _body(resp)
    assert resp.status_code == 422
    assert "“http://berlin” is not a domain name: type only the name, e.g. contoso.com (no http:// and no path)." \
        in body
    _no_library_words(body)
    assert "one per line or separated by spaces or commas" in body
    assert body.count("<li>") == 1  # the other two were read as two good entries, not one bad one


def test_a_bad_domain_and_a_bad_address_are_said_plainly(db, admin, tree):
    resp = admin.post("/clients/new", {"name": "Odd", "parent_id": tree[0].id, "allow": "exa_mple.com\nboss@"},
                      htmx=True)
    body = _body(resp)
    assert resp.status_code == 422
    assert "“exa_mple.com” is not a domain name like contoso.com" in body
    assert "“boss@” is not an email address like name@contoso.com." in body
    _no_library_words(body)


def test_the_override_recipient_is_said_plainly(admin):
    resp = admin.post("/settings/mail", {"auto_mail_limit_per_hour": "5", "override_recipient": "qa@"})
    body = _body(resp)
    assert resp.status_code == 422 and "“qa@” is not an email address like name@contoso.com." in body
    _no_library_words(body)


def test_an_invitation_to_no_address_is_said_plainly(admin):
    resp = admin.post("/users/invite", {"email": " ", "name": "Nia", "role": "technician"}, htmx=True)
    body = _body(resp)
    assert resp.status_code == 422 and "Enter their email address." in body
    _no_library_words(body)
    resp = admin.post("/users/invite", {"email": "nia@", "name": "Nia", "role": "technician"}, htmx=True)
    body = _body(resp)
    assert resp.status_code == 422 and "“nia@” is not an email address like name@contoso.com." in body
    _no_library_words(body)


def test_a_test_email_to_no_address_is_said_plainly(app, admin, smtp_gateway):
    body = _body(admin.post("/settings/mail/test", {"recipient": ""}, htmx=True))
    assert "Not sent: type an email address, e.g. name@contoso.com." in body
    body = _body(admin.post("/settings/mail/test", {"recipient": "qa@"}, htmx=True))
    assert "Not sent: “qa@” is not an email address like name@contoso.com." in body
    _no_library_words(body)
