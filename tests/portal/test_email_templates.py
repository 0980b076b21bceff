"""Email templates per client in the browser: in effect, edit with checks, preview, test send."""

import io

from sqlalchemy import select

from portal.extensions import db
from portal.mail.render import render
from portal.outbound.templates import preview_context, template_in_effect
from portal.models import AuditEntry, EmailTemplate
from portal.services import commit
from portal.outbound import servers as outbound_svc


GOOD = "Got it: {{ ticket.reference }}\nHello {{ contact.name }},\nwe are on it.\n"


def test_the_page_says_which_template_is_in_effect_and_where_it_comes_from(admin, tree):
    msp, contoso, berlin = tree
    assert "built-in default" in admin.get(f"/clients/{berlin.id}/emails").get_data(as_text=True)
    admin.post(f"/clients/{contoso.id}/emails/ticket_created", {"text_source": GOOD, "html_source": "", "shared": "1"})
    page = admin.get(f"/clients/{berlin.id}/emails").get_data(as_text=True)
    assert "shared by" in page and "Contoso" in page
    assert "its own, shared with sub-clients" in admin.get(f"/clients/{contoso.id}/emails").get_data(as_text=True)


def test_saving_checks_the_template_and_names_the_line(admin, tree):
    contoso = tree[1]
    resp = admin.post(f"/clients/{contoso.id}/emails/ticket_created",
                      {"text_source": "Subject {{ ticket.reference }}\nHi {{ ticket.nope }}", "html_source": ""})
    body = resp.get_data(as_text=True)
    assert resp.status_code == 422 and "Line 2" in body
    assert db.session.scalar(select(EmailTemplate)) is None
    ok = admin.post(f"/clients/{contoso.id}/emails/ticket_created", {"text_source": GOOD, "html_source": ""})
    assert ok.status_code == 303
    saved = db.session.scalar(select(EmailTemplate))
    assert saved.text_source == GOOD and saved.shared is False
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "template ticket_created saved"))
    assert entry.changes["text"] == [None, GOOD]


def test_an_uploaded_template_file_is_used(admin, tree):
    contoso = tree[1]
    admin.post(f"/clients/{contoso.id}/emails/closed",
               {"text_source": "", "html_source": "", "text_file": (io.BytesIO(GOOD.encode()), "closed.template")},
               content_type="multipart/form-data")
    assert db.session.scalar(select(EmailTemplate)).text_source == GOOD


def test_the_live_check_shows_problems_or_the_rendered_subject(admin, tree):
    contoso = tree[1]
    bad = admin.post(f"/clients/{contoso.id}/emails/reply/check", {"text_source": "x\n{% if %}", "html_source": ""},
                     htmx=True).get_data(as_text=True)
    assert "line 2" in bad
    good = admin.post(f"/clients/{contoso.id}/emails/reply/check", {"text_source": GOOD, "html_source": ""},
                      htmx=True).get_data(as_text=True)
    assert "Got it: T-1042" in good and "<html" not in good


def test_the_html_preview_is_a_locked_down_document(admin, tree):
    contoso = tree[1]
    resp = admin.post(f"/clients/{contoso.id}/emails/ticket_created/preview",
                      {"text_source": "", "html_source": "Hi {{ ticket.reference }}\n<p style='color:red'>x</p><script>alert(1)</script>"})
    body = resp.get_data(as_text=True)
    assert "T-1042" in body
    assert resp.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert "script-src" not in resp.headers["Content-Security-Policy"]  # nothing may run in it


def test_reverting_uses_the_inherited_template_again(admin, tree):
    contoso = tree[1]
    admin.post(f"/clients/{contoso.id}/emails/closed", {"text_source": GOOD, "html_source": ""})
    admin.post(f"/clients/{contoso.id}/emails/closed/revert")
    assert db.session.scalar(select(EmailTemplate)) is None


def test_send_test_email_arrives_or_says_why_not(app, admin, tree, smtp_server):
    contoso = tree[1]
    url = f"/clients/{contoso.id}/emails/ticket_created/test"
    missing = admin.post(url, {"text_source": GOOD, "html_source": "", "recipient": "me@acme.example"})
    assert "set the default outgoing gateway" in missing.get_data(as_text=True)
    outbound_svc.save_smtp_server({"host": "127.0.0.1", "port": smtp_server.port, "security": "none",
                                   "from": "noreply@acme.example"}, keys=app.config["TIDEMARK_ENCRYPTION_KEY"])
    commit()
    sent = admin.post(url, {"text_source": GOOD, "html_source": "", "recipient": "me@acme.example"})
    assert "Sent to me@acme.example" in sent.get_data(as_text=True)
    assert smtp_server.last().message["Subject"] == "Got it: T-1042"
    bad = admin.post(url, {"text_source": GOOD, "html_source": "", "recipient": "not-an-address"})
    assert "Not sent" in bad.get_data(as_text=True)


def test_technicians_read_but_do_not_edit_and_other_msps_get_404(make_browser, world, tree):
    contoso = tree[1]
    tech = make_browser()
    tech.sign_in("tom@acme.example")
    assert tech.get(f"/clients/{contoso.id}/emails").status_code == 200
    assert tech.get(f"/clients/{contoso.id}/emails/reply").status_code == 403
    assert tech.post(f"/clients/{contoso.id}/emails/reply", {"text_source": GOOD}).status_code == 403
    other = world.msp("Other MSP")
    world.user(other, email="eve@other.example")
    eve = make_browser()
    eve.sign_in("eve@other.example")
    assert eve.get(f"/clients/{contoso.id}/emails").status_code == 404
    assert eve.get(f"/clients/{contoso.id}/emails/reply").status_code == 404  # Eve is an admin of her own MSP


def test_a_template_set_on_the_msp_applies_to_clients_without_their_own(admin, tree):
    """No "share" tick needed on the MSP, and rows saved unshared before still apply."""
    msp, contoso, berlin = tree
    page = admin.get(f"/clients/{msp.id}/emails/closed").get_data(as_text=True)
    assert 'name="shared"' not in page and "Every client without its own closed template uses this one" in page
    admin.post(f"/clients/{msp.id}/emails/closed", {"text_source": "MSP closed {{ ticket.reference }}\nBye from {{ msp.name }}",
                                                    "html_source": ""})
    row = db.session.scalar(select(EmailTemplate))
    assert row.shared is True
    row.shared = False  # as saved before the rule
    commit()
    effect = template_in_effect(berlin, "closed")
    assert effect.source.id == msp.id
    assert render((effect.text_source, effect.html_source), preview_context(berlin)).subject == "MSP closed T-1042"
    admin.post(f"/clients/{contoso.id}/emails/closed", {"text_source": GOOD, "html_source": ""})
    assert template_in_effect(contoso, "closed").source.id == contoso.id  # its own wins
    assert template_in_effect(berlin, "closed").source.id == msp.id  # contoso's is not shared


def test_the_preview_and_check_sign_with_the_edited_msps_name(admin, tree):
    msp, contoso, _ = tree
    source = {"text_source": "Hi {{ ticket.reference }}\nRegards, {{ msp.name }} for {{ client.name }}",
              "html_source": "Hi\n<p>Regards, {{ msp.name }}</p>"}
    preview = admin.post(f"/clients/{contoso.id}/emails/closed/preview", source).get_data(as_text=True)
    assert f"Regards, {msp.name}" in preview and "Harbor IT" not in preview
    check = admin.post(f"/clients/{contoso.id}/emails/closed/check", source, htmx=True).get_data(as_text=True)
    assert f"Regards, {msp.name} for Contoso" in check and "Harbor IT" not in check
