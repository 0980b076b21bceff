"""Issue #17 in the portal: a client's language (form, page, inheritance), the alternatives of
the acknowledgement (the template editor, the mailbox's and the route's choice, refused when
unknown), the routing check naming the template, the quoted history in the client's language,
and the configuration import refusing an unknown alternative."""

import re
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import Client, EmailTemplate, Mailbox, Message, Route
from portal.outbound import templates as template_svc
from portal.outbound.variants import variant_names
from portal.services import commit, config_io
from tests.mailfactory import email
from tests.portal.test_mailbox_form_sections import sections
from tests.portal.test_mailbox_forms import form as mailbox_form
from tests.portal.test_route_forms import route_form

SHORT = "Short: {{ ticket.reference }}\nWe have it."


def fresh(model, row_id):
    db.session.expire_all()
    return db.session.get(model, row_id)


def test_a_client_chooses_the_language_of_its_mail_and_sub_clients_inherit_it(admin, tree):
    msp, contoso, berlin = tree
    page = admin.get(f"/clients/{contoso.id}/edit").get_data(as_text=True)
    assert '<option value="de">German (Deutsch)</option>' in page and "As the client above (English at the top)" in page
    resp = admin.post(f"/clients/{contoso.id}/edit", {"name": "Contoso", "allow": "contoso.com", "language": "fr",
                                                      "parent_id": str(msp.id)},
                      htmx=True)
    body = resp.get_data(as_text=True)
    assert resp.status_code == 422 and "fr is not a language Tidemark writes mail in. Choose one of: en, de." in body
    assert fresh(Client, contoso.id).language is None
    resp = admin.post(f"/clients/{contoso.id}/edit", {"name": "Contoso", "allow": "contoso.com", "language": "de",
                                                      "parent_id": str(msp.id)})
    assert resp.status_code == 303 and fresh(Client, contoso.id).language == "de"
    own = re.sub(r"\s+", " ", admin.get(f"/clients/{contoso.id}").get_data(as_text=True))
    assert ('<dt>Language of its mail</dt> <dd> <span class="value">German (Deutsch)</span> '
            '<span class="source">set here</span>') in own
    below = re.sub(r"\s+", " ", admin.get(f"/clients/{berlin.id}").get_data(as_text=True))
    assert re.search(r'<span class="value">German \(Deutsch\)</span> <span class="source">inherited from <a [^>]+>'
                     r'Contoso</a>', below)
    assert "Contoso Berlin" in admin.get(f"/clients/{berlin.id}").get_data(as_text=True)
    msp_page = re.sub(r"\s+", " ", admin.get(f"/clients/{msp.id}").get_data(as_text=True))
    assert '<dt>Language of its mail</dt> <dd> <span class="muted">not set</span> ' \
           '<span class="source">built-in default</span>' in msp_page


def test_the_editor_keeps_alternatives_of_the_acknowledgement_inherited_by_sub_clients(admin, tree):
    _msp, contoso, berlin = tree
    page = admin.get(f"/clients/{contoso.id}/emails").get_data(as_text=True)
    assert "Alternatives of the acknowledgement" in page
    assert f'href="/clients/{contoso.id}/emails/ticket_created?variant=short"' in page
    assert f'href="/clients/{contoso.id}/emails/ticket_created?variant=detailed"' in page
    editor = admin.get(f"/clients/{contoso.id}/emails/ticket_created?variant=after-hours").get_data(as_text=True)
    assert "the “after-hours” alternative" in editor and "A new alternative, starting from the standard template." in editor
    assert f'action="/clients/{contoso.id}/emails/ticket_created?variant=after-hours"' in editor
    resp = admin.post(f"/clients/{contoso.id}/emails/ticket_created?variant=after-hours",
                      {"mode": "source", "text_source": SHORT, "html_source": "", "shared": "1"})
    assert resp.status_code == 303, resp.get_data(as_text=True)
    row = db.session.scalar(select(EmailTemplate).where(EmailTemplate.client_id == contoso.id))
    assert (row.event, row.variant, row.shared) == ("ticket_created", "after-hours", True)
    # The standard template is untouched; the sub-client may choose the new name, shared down to it.
    assert template_svc.template_in_effect(contoso, "ticket_created").template is None
    assert variant_names(berlin) == ["after-hours", "detailed", "short"]
    below = admin.get(f"/clients/{berlin.id}/emails").get_data(as_text=True)
    assert re.search(r"<td>after-hours</td>\s*<td>shared by <a [^>]*>Contoso</a>", below)
    # A name that is not one is refused before anything is written.
    resp = admin.get(f"/clients/{contoso.id}/emails/ticket_created?variant=After Hours!", headers={})
    assert resp.status_code == 303
    assert "lower-case letters, digits and dashes" in admin.get(resp.headers["Location"]).get_data(as_text=True)
    assert admin.get(f"/clients/{contoso.id}/emails/closed?variant=short").status_code == 303
    # Removing the alternative leaves the standard template alone.
    assert admin.post(f"/clients/{contoso.id}/emails/ticket_created/revert?variant=after-hours").status_code == 303
    assert db.session.scalar(select(EmailTemplate)) is None and variant_names(berlin) == ["detailed", "short"]


def test_the_mailbox_form_chooses_an_acknowledgement_in_its_new_tickets_section(admin, msp):
    resp = admin.post("/mailboxes/new", mailbox_form(msp, acknowledgement_variant="nope"), htmx=True)
    body = resp.get_data(as_text=True)
    assert resp.status_code == 422 and 'id="acknowledgement_variant-error"' in body
    assert "Acme MSP has no acknowledgement called &#39;nope&#39;; choose one of: detailed, short" in body
    assert sections(body)["tickets"][0] is True  # the section holding the error is open
    resp = admin.post("/mailboxes/new", mailbox_form(msp, acknowledgement_variant="detailed"))
    assert resp.status_code == 303, resp.get_data(as_text=True)
    box = db.session.scalar(select(Mailbox))
    assert box.acknowledgement_variant == "detailed"
    page = admin.get(f"/mailboxes/{box.id}/edit").get_data(as_text=True)
    assert '<option selected value="detailed">detailed</option>' in page
    assert sections(page)["tickets"][1].endswith("acknowledged (detailed)")
    tickets = re.search(r'data-section="tickets".*?</details>', page, re.S).group(0)
    assert 'name="acknowledgement_variant"' in tickets


def test_the_route_form_refuses_an_unknown_alternative_and_keeps_a_known_one(admin, world, msp, tree):
    _msp, contoso, _berlin = tree
    box = world.mailbox(msp, routes=[{"name": "Everything else", "client": msp, "fallback": True}])
    template_svc.save_template(contoso, "ticket_created", SHORT, None, False, None, variant="vip")
    commit()
    url = f"/mailboxes/{box.id}/routes/new"
    resp = admin.post(url, route_form(contoso, name="VIP", recipients="vip@acme.example",
                                      acknowledgement_variant="gold"), htmx=True)
    body = resp.get_data(as_text=True)
    assert resp.status_code == 422 and 'id="acknowledgement_variant-error"' in body
    assert "Contoso has no acknowledgement called &#39;gold&#39;; choose one of: detailed, short, vip" in body
    # Contoso's own alternative (not shared) is Contoso's alone: a route to the MSP may not choose it.
    resp = admin.post(url, route_form(msp, name="VIP", recipients="vip@acme.example", acknowledgement_variant="vip"),
                      htmx=True)
    assert resp.status_code == 422 and "Acme MSP has no acknowledgement called" in resp.get_data(as_text=True)
    resp = admin.post(url, route_form(contoso, name="VIP", recipients="vip@acme.example", acknowledgement_variant="vip"))
    assert resp.status_code == 303
    route = db.session.scalar(select(Route).where(Route.name == "VIP"))
    assert route.acknowledgement_variant == "vip"
    edit = admin.get(f"/mailboxes/{box.id}/routes/{route.id}/edit").get_data(as_text=True)
    assert '<option selected value="vip">vip</option>' in edit and '<option value="">as the mailbox says</option>' in edit
    assert 'acknowledged with "vip"' in admin.get(f"/mailboxes/{box.id}").get_data(as_text=True)


def test_the_routing_check_names_the_acknowledgement_it_would_send(admin, world, msp, tree):
    _msp, contoso, _berlin = tree
    contoso.language = "de"
    box = world.mailbox(msp, acknowledgement_variant="detailed", routes=[
        {"name": "VIP", "client": contoso, "recipients": ["vip@acme.example"], "acknowledgement_variant": "short"},
        {"name": "Everything else", "client": msp, "fallback": True}])
    admin.get("/unprocessed/check")
    resp = admin.post("/unprocessed/check", {"mailbox_id": str(box.id), "sender": "ann@contoso.com",
                                             "to": "vip@acme.example", "subject": "check"}, htmx=True)
    body = resp.get_data(as_text=True)
    assert resp.status_code == 200, body
    assert ("<dt>Acknowledgement</dt><dd>yes, to the sender, with the &#34;short&#34; acknowledgement "
            "(built-in, in German (Deutsch))</dd>") in body
    assert "with the &#34;short&#34; acknowledgement (the route&#39;s choice)" in body  # the trace
    template_svc.save_template(contoso, "ticket_created", SHORT, None, False, None, variant="short")
    commit()
    body = admin.post("/unprocessed/check", {"mailbox_id": str(box.id), "sender": "ann@contoso.com",
                                             "to": "support@acme.example", "subject": "check"},
                      htmx=True).get_data(as_text=True)
    assert "with the &#34;detailed&#34; acknowledgement (built-in, in English)" in body


def test_the_quoted_history_is_written_in_the_clients_language(world, acme, tech):
    ticket = world.deliver(acme.box, email(sender="alice@contoso.com", subject="Drucker", body="Er druckt leer.")).ticket
    for m in db.session.scalars(select(Message).where(Message.ticket_id == ticket.id)):
        m.created_at = m.sent_at = datetime(2026, 1, 15, 17, 45, tzinfo=UTC)
    acme.contoso.language, acme.contoso.timezone = "de", "Europe/Berlin"
    commit()
    quoted = tech.get(f"/tickets/{ticket.reference}/history").get_data(as_text=True)
    assert "Am Donnerstag, 15. Januar 2026, 18:45 CET schrieb alice@contoso.com:" in quoted


@pytest.mark.parametrize("entry, where, message", [
    ({"address": "desk@acme.example", "client": "Acme MSP", "host": "imap.acme.example",
      "acknowledgement_variant": "gold"}, "mailboxes[0].acknowledgement_variant",
     "Acme MSP has no acknowledgement called 'gold'"),
    ({"address": "desk@acme.example", "client": "Acme MSP", "host": "imap.acme.example", "routes": [
        {"name": "VIP", "client": "Acme MSP", "recipients": ["vip@acme.example"], "acknowledgement_variant": "gold"},
        {"name": "Else", "client": "Acme MSP", "fallback": True}]}, "mailboxes[0]",
     "route 1 (VIP): Acme MSP has no acknowledgement called 'gold'"),
])
def test_the_configuration_import_refuses_an_unknown_alternative(app, msp, entry, where, message):
    with pytest.raises(config_io.ConfigError) as refused:
        config_io.import_config({"mailboxes": [entry]}, keys=app.config["TIDEMARK_ENCRYPTION_KEY"])
    db.session.rollback()
    found = "; ".join(f"{k}: {m}" for k, ms in refused.value.errors.items() for m in ms)
    assert any(k.startswith(where) for k in refused.value.errors) and message in found, found
    assert db.session.scalar(select(Mailbox)) is None


def test_the_configuration_import_takes_an_alternative_defined_in_the_same_file(app, msp):
    keys = app.config["TIDEMARK_ENCRYPTION_KEY"]
    config_io.import_config({
        "clients": [{"name": "Acme MSP", "language": "de"}],
        "email_templates": [{"client": "Acme MSP", "event": "ticket_created", "variant": "after-hours",
                             "text_source": SHORT}],
        "mailboxes": [{"address": "desk@acme.example", "client": "Acme MSP", "host": "imap.acme.example",
                       "acknowledgement_variant": "after-hours"}]}, keys=keys)
    commit()
    assert db.session.scalar(select(Mailbox)).acknowledgement_variant == "after-hours"
    assert fresh(Client, msp.id).language == "de"
    with pytest.raises(config_io.ConfigError) as refused:
        config_io.import_config({"clients": [{"name": "Acme MSP", "language": "fr"}]}, keys=keys)
    db.session.rollback()
    assert "clients[0].language" in refused.value.errors
