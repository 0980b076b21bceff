"""The simple (rich-text) template editor, switching to and from the raw sources, and the MSP's layout."""

from email import message_from_bytes, policy

from sqlalchemy import select

from portal.extensions import db
from portal.mail.rich import render_texts
from portal.models import AuditEntry, EmailLayout, EmailTemplate
from portal.outbound import servers as outbound_svc
from portal.outbound.templates import preview_context, template_in_effect
from portal.services import commit

RAW = "Raw {{ ticket.reference }}\nHello {{ contact.name }}\n"
SIMPLE = {"mode": "simple", "subject": "We have {{ ticket.reference }}",
          "body": '<div>Hello {{ contact.name }}, <b>thanks</b>.</div><div onclick="x()">Bye</div><script>alert(1)</script>'}


def test_a_new_template_opens_in_the_simple_editor_with_chips_and_the_default_as_its_start(admin, tree):
    contoso = tree[1]
    page = admin.get(f"/clients/{contoso.id}/emails/closed").get_data(as_text=True)
    assert 'name="mode" value="simple"' in page and 'aria-current="page">Simple editor' in page
    assert 'data-composer-snippet="{{ ticket.reference }}"' in page
    assert "we have closed ticket {{ ticket.reference }}" in page  # the built-in text, as the body to start from
    assert 'name="text_source"' not in page and "replace_sources" not in page
    source = admin.get(f"/clients/{contoso.id}/emails/closed?mode=source").get_data(as_text=True)
    assert 'name="text_source"' in source and 'name="body"' not in source


def test_saving_a_simple_body_stores_it_sanitised_and_sends_both_parts_in_the_msps_layout(admin, tree):
    msp, contoso, berlin = tree
    resp = admin.post(f"/clients/{contoso.id}/emails/closed", {**SIMPLE, "shared": "1"})
    assert resp.status_code == 303
    row = db.session.scalar(select(EmailTemplate))
    assert row.subject == SIMPLE["subject"] and row.text_source is None and row.html_source is None
    assert "thanks" in row.body and "onclick" not in row.body and "<script" not in row.body
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "template closed saved"))
    assert entry.changes["subject"] == [None, SIMPLE["subject"]]
    assert admin.get(f"/clients/{contoso.id}/emails/closed").get_data(as_text=True).count('aria-current="page">Simple') == 1
    db.session.add(EmailLayout(msp_id=msp.id, css=".card { color: #101010; }", header="", footer="By {{ msp.name }}"))
    db.session.commit()
    effect = template_in_effect(berlin, "closed")  # shared with Berlin
    mail = render_texts(effect.texts, effect.layout, preview_context(berlin))
    assert mail.subject == "We have T-1042"
    assert "Hello Anna Müller, thanks." in mail.text and "By Acme" in mail.text
    assert 'class="card" style="color: #101010;"' in mail.html and "<b>thanks</b>" in mail.html


def test_without_javascript_the_body_is_the_plain_text_typed(admin, tree):
    contoso = tree[1]
    resp = admin.post(f"/clients/{contoso.id}/emails/closed",
                      {"mode": "simple", "subject": "S", "body": "", "body_text": "Hi {{ contact.name }}\n<3"})
    assert resp.status_code == 303
    assert db.session.scalar(select(EmailTemplate)).body == "<div>Hi {{ contact.name }}</div><div>&lt;3</div>"


def test_problems_in_the_simple_editor_come_back_on_their_field(admin, tree):
    contoso = tree[1]
    resp = admin.post(f"/clients/{contoso.id}/emails/closed",
                      {"mode": "simple", "subject": "", "body": "<p>{{ ticket.nope }}</p>"})
    page = resp.get_data(as_text=True)
    assert resp.status_code == 422 and 'id="subject-error"' in page and "the subject must not be empty" in page
    assert 'name="mode" value="simple"' in page and db.session.scalar(select(EmailTemplate)) is None


def test_switching_raw_sources_to_the_simple_editor_asks_first(admin, tree):
    contoso = tree[1]
    url = f"/clients/{contoso.id}/emails/reply"
    admin.post(url, {"text_source": RAW, "html_source": "RAW\n<p>x</p>"})
    assert 'name="mode" value="source"' in admin.get(url).get_data(as_text=True)  # its own raw sources: source
    page = admin.get(url + "?mode=simple").get_data(as_text=True)
    assert "replaces its plain-text and HTML sources" in page and 'name="replace_sources"' in page
    assert "Hello {{ contact.name }}" in page  # the text source, to start from
    refused = admin.post(url, SIMPLE)
    assert refused.status_code == 422 and "Tick the box to confirm" in refused.get_data(as_text=True)
    row = db.session.scalar(select(EmailTemplate))
    assert row.text_source == RAW and row.body is None
    assert admin.post(url, {**SIMPLE, "replace_sources": "1"}).status_code == 303
    db.session.refresh(row)
    assert row.body and row.text_source is None and row.html_source is None
    # Back to the sources: they are made from the body, and saving them drops the body.
    source = admin.get(url + "?mode=source").get_data(as_text=True)
    assert "replaces its body with these two sources" in source and "We have {{ ticket.reference }}" in source
    assert admin.post(url, {"mode": "source", "text_source": RAW, "html_source": ""}).status_code == 303
    db.session.refresh(row)
    assert row.text_source == RAW and row.body is None and row.subject is None


def test_posts_without_the_csrf_token_change_nothing(admin, tree):
    msp, contoso, _ = tree
    assert admin.post(f"/clients/{contoso.id}/emails/closed", SIMPLE, token=False).status_code == 302
    assert admin.post(f"/clients/{msp.id}/emails/layout", {"css": "", "header": "", "footer": "x"},
                      token=False).status_code == 302
    assert db.session.scalar(select(EmailTemplate)) is None and db.session.scalar(select(EmailLayout)) is None


def test_check_and_preview_work_in_the_simple_editor(admin, tree):
    contoso = tree[1]
    check = admin.post(f"/clients/{contoso.id}/emails/closed/check", SIMPLE, htmx=True).get_data(as_text=True)
    assert "We have T-1042" in check and "Hello Anna Müller, thanks." in check
    bad = admin.post(f"/clients/{contoso.id}/emails/closed/check",
                     {**SIMPLE, "body": "<p>a</p>\n<p>{{ whoever }}</p>"}, htmx=True).get_data(as_text=True)
    assert "body line 2: unknown variable &#39;whoever&#39;" in bad
    preview = admin.post(f"/clients/{contoso.id}/emails/closed/preview", SIMPLE)
    html = preview.get_data(as_text=True)
    assert preview.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert "<b>thanks</b>" in html and "Plain-text part" in html and "<script>alert" not in html


def test_the_layout_page_saves_the_msps_layout_for_every_client(admin, tree, make_browser, world):
    msp, contoso, _ = tree
    page = admin.get(f"/clients/{contoso.id}/emails/layout").get_data(as_text=True)
    assert f"The email layout of {msp.name}" in page and ".card {" in page  # the built-in layout to start from
    bad = admin.post(f"/clients/{msp.id}/emails/layout", {"css": "", "header": "", "footer": "{{ nope }}"})
    assert bad.status_code == 422 and "unknown variable" in bad.get_data(as_text=True)
    ok = admin.post(f"/clients/{contoso.id}/emails/layout",
                    {"css": "p { color: #0a0a0a; }", "header": "Hi", "footer": "{{ msp.name }}"})
    assert ok.status_code == 303
    row = db.session.get(EmailLayout, msp.id)
    assert (row.css, row.header, row.footer) == ("p { color: #0a0a0a; }", "Hi", "{{ msp.name }}")
    preview = admin.post(f"/clients/{msp.id}/emails/layout/preview",
                         {"css": "blockquote { color: #0b0b0b; }", "header": "", "footer": ""}).get_data(as_text=True)
    assert 'style="color: #0b0b0b;"' in preview
    tech = make_browser()
    tech.sign_in("tom@acme.example")
    assert tech.get(f"/clients/{msp.id}/emails/layout").status_code == 403
    other = world.msp("Other MSP")
    world.user(other, email="eve@other.example")
    eve = make_browser()
    eve.sign_in("eve@other.example")
    assert eve.get(f"/clients/{msp.id}/emails/layout").status_code == 404
    assert eve.post(f"/clients/{msp.id}/emails/layout", {"footer": "mine"}).status_code == 404
    db.session.refresh(row)
    assert row.footer == "{{ msp.name }}"


def test_a_test_email_from_the_simple_editor_carries_both_parts(app, admin, tree, smtp_server):
    contoso = tree[1]
    outbound_svc.save_smtp_server({"host": "127.0.0.1", "port": smtp_server.port, "security": "none",
                                   "from": "noreply@acme.example"}, keys=app.config["TIDEMARK_ENCRYPTION_KEY"])
    commit()
    sent = admin.post(f"/clients/{contoso.id}/emails/closed/test", {**SIMPLE, "recipient": "me@acme.example"})
    assert "Sent to me@acme.example" in sent.get_data(as_text=True)
    mail = message_from_bytes(smtp_server.last().data, policy=policy.default)
    assert mail["Subject"] == "We have T-1042"
    assert "Hello Anna Müller, thanks." in mail.get_body(("plain",)).get_content()
    assert "<b>thanks</b>" in mail.get_body(("html",)).get_content()
