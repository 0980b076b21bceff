"""Issue #17: a client's language and the acknowledgement a mailbox or route chooses, as the
customer receives them (through a real SMTP server, aiosmtpd on loopback)."""

import re

import pytest

from portal.outbound import templates as template_svc
from portal.services import clients as client_svc
from portal.services import commit
from tests.mailfactory import email
from workers.sending import send_due

GERMAN_DATE = re.compile(r"(Montag|Dienstag|Mittwoch|Donnerstag|Freitag|Samstag|Sonntag), \d{1,2}\. "
                         r"(Januar|Februar|März|April|Mai|Juni|Juli|August|September|Oktober|November|Dezember) "
                         r"20\d\d, \d\d:\d\d CET")


@pytest.fixture
def desk(app, world, smtp_gateway):
    """Acme MSP (English, the default); Contoso below it writes German and reads Berlin time, and
    Contoso Berlin below Contoso sets neither; a mailbox that acknowledges."""
    app.config["TIDEMARK_JOBS_SYNC"] = False  # each test runs the sender by hand
    msp = world.msp("Acme MSP")
    contoso = client_svc.create_client(msp, client_svc.ClientInput(
        name="Contoso", allow=["contoso.com"], language="de", timezone="Europe/Berlin"), None)
    client_svc.create_client(contoso, client_svc.ClientInput(name="Contoso Berlin", allow=["contoso.de"]), None)
    commit()
    box = world.mailbox(msp, response_address="help@acme.example")
    return msp, contoso, box


def parts(message):
    return message.get_body(("plain",)).get_content(), message.get_body(("html",)).get_content()


def test_a_german_client_gets_the_german_acknowledgement_with_german_dates(world, desk, smtp_server):
    _msp, _contoso, box = desk
    world.deliver(box, email(sender="Anna <anna@contoso.com>", subject="Drucker druckt nicht"))
    assert send_due() == {"sent": 1}
    text, html = parts(smtp_server.last().message)
    assert "vielen Dank für Ihre Nachricht" in text and "Eröffnet:" in text and "Kind regards" not in text
    assert GERMAN_DATE.search(text), text
    assert '<html lang="de">' in html and "Wir haben Ihre Anfrage erhalten" in html and GERMAN_DATE.search(html)
    # A sub-client that sets no language inherits its parent's.
    world.deliver(box, email(sender="jan@contoso.de", subject="Kein Netz"))
    assert send_due() == {"sent": 1}
    assert "vielen Dank für Ihre Nachricht" in parts(smtp_server.last().message)[0]
    # The MSP sets none: English, with the date as the portal writes it.
    world.deliver(box, email(sender="bob@elsewhere.example", subject="Printer"))
    assert send_due() == {"sent": 1}
    text, _html = parts(smtp_server.last().message)
    assert "thank you for your message" in text and re.search(r"Opened: +20\d\d-\d\d-\d\d \d\d:\d\d UTC", text)


def test_a_clients_own_template_stays_as_written_in_its_language(world, desk, smtp_server):
    _msp, contoso, box = desk
    template_svc.save_template(contoso, "ticket_created", "Got it: {{ ticket.subject }}\nOpened {{ ticket.created }}.",
                               None, True, None)
    commit()
    world.deliver(box, email(sender="anna@contoso.com", subject="Drucker"))
    send_due()
    received = smtp_server.last().message
    text = received.get_body(("plain",)).get_content()
    assert "Got it: Drucker" in received["Subject"] and "vielen Dank" not in text
    assert GERMAN_DATE.search(text), text  # its dates are still written in the client's language


@pytest.fixture
def routed(world, desk):
    """The mailbox acknowledges with "detailed"; its VIP route (vip@acme.example → Contoso) with
    "short"; the fallback route chooses nothing."""
    msp, contoso, _box = desk
    box = world.mailbox(msp, address="desk@acme.example", response_address="desk@acme.example",
                        acknowledgement_variant="detailed", routes=[
                            {"name": "VIP", "client": contoso, "recipients": ["vip@acme.example"],
                             "acknowledgement_variant": "short"},
                            {"name": "Everything else", "client": msp, "fallback": True}])
    return msp, contoso, box


def test_a_route_choosing_short_and_a_mailbox_choosing_detailed_send_those(world, routed, smtp_server):
    _msp, _contoso, box = routed
    vip = world.deliver(box, email(sender="anna@contoso.com", to=("vip@acme.example",), subject="Server down"))
    assert 'acknowledgement to the sender with the "short" acknowledgement (the route\'s choice)' in vip.trace[-1]
    assert send_due() == {"sent": 1}
    text, html = parts(smtp_server.last().message)
    # The built-in short one, in the client's German.
    assert "Ihre Anfrage hat die Ticketnummer" in text and "Wie es weitergeht" not in text
    assert "Anfrage erhalten" in html
    other = world.deliver(box, email(sender="bob@elsewhere.example", to=("desk@acme.example",), subject="Printer",
                                     body="The printer is jammed again."))
    assert 'with the "detailed" acknowledgement (the mailbox\'s choice)' in other.trace[-1]
    assert send_due() == {"sent": 1}
    text, _html = parts(smtp_server.last().message)
    assert "What happens next" in text and "You wrote" in text and "The printer is jammed again." in text


def test_the_clients_own_short_wins_over_the_built_in_and_reaches_its_sub_clients(world, routed, smtp_server):
    msp, contoso, box = routed
    template_svc.save_template(contoso, "ticket_created", "Kurz: {{ ticket.reference }}\nIst angekommen.", None,
                               True, None, variant="short")
    commit()
    world.deliver(box, email(sender="anna@contoso.com", to=("vip@acme.example",), subject="Server down"))
    send_due()
    received = smtp_server.last().message
    assert "Kurz: T-" in received["Subject"] and "Ist angekommen." in received.get_body(("plain",)).get_content()
    # The standard template of the client is untouched by its alternative.
    standard = template_svc.template_in_effect(contoso, "ticket_created")
    assert standard.template is None and "vielen Dank" in standard.text_source
    # A sibling of Contoso (under the MSP) does not see Contoso's "short": it has the built-in one.
    fabrikam = world.client(msp, "Fabrikam")
    assert template_svc.template_in_effect(fabrikam, "ticket_created", "short").template is None
