"""History lines say what people saw on the form: a field's label, a client's name (never another
MSP's), not `client_id → 1`."""

import html
import re

from sqlalchemy import select

from portal.extensions import db
from portal.models import User
from portal.services import audit, commit, tickets
from portal.services.mailboxes import save_mailbox
from tests.mailfactory import email


def _rows(body: str) -> list[tuple[str, str, str]]:
    found = re.findall(r'<tr><th scope="row">(.*?)</th>\s*<td class="old">(.*?)</td>\s*<td aria-hidden="true">→</td>'
                       r'\s*<td class="new">(.*?)</td></tr>', body)
    return [tuple(html.unescape(x) for x in row) for row in found]


def test_a_mailbox_moved_to_another_client_shows_labels_and_names(app, world, msp, admin):
    contoso = world.client(msp, "Contoso")
    fabrikam = world.client(msp, "Fabrikam")
    box = world.mailbox(contoso, poll_interval=60)
    save_mailbox(msp, fabrikam, {"address": box.address, "host": "127.0.0.1", "username": "support",
                                 "poll_interval": 120}, keys=app.config["TIDEMARK_ENCRYPTION_KEY"], actor=None,
                 mailbox=box)
    commit()
    rows = _rows(admin.get(f"/mailboxes/{box.id}/history").get_data(as_text=True))
    assert ("Client", "Contoso", "Fabrikam") in rows and ("Fetch every (seconds)", "60", "120") in rows, rows
    assert not any(label.endswith("_id") or "_" in label for label, _old, _new in rows), rows


def test_an_id_of_another_msps_client_is_not_named(app, world, msp, admin):
    contoso = world.client(msp, "Contoso")
    other = world.msp("Other MSP")
    secret = world.client(other, "Their Secret Client")
    box = world.mailbox(contoso)
    audit.record(None, msp.id, "mailbox", box.id, "updated", {"client_id": [secret.id, contoso.id],
                                                              "keep_raw_attachment": [False, True]})
    commit()
    body = admin.get(f"/mailboxes/{box.id}").get_data(as_text=True)
    rows = _rows(body)
    assert ("Client", "a deleted client", "Contoso") in rows, rows
    assert ("Attach the original email (.eml) to new tickets", "no", "yes") in rows
    assert "Their Secret Client" not in body


def test_each_record_type_is_labelled_by_its_own_form(app, world, msp, admin):
    contoso = world.client(msp, "Contoso")
    box = world.mailbox(contoso)
    ana = db.session.scalar(select(User).where(User.email == "ana@acme.example"))
    # "host" is the mailbox form's "Server"; a client has no such field: its name in words.
    audit.record(None, msp.id, "client", contoso.id, "updated", {"host": ["a", "b"]})
    audit.record(None, msp.id, "mailbox", box.id, "updated", {"host": ["a", "b"]})
    audit.record(None, msp.id, "user", ana.id, "updated", {"email": ["a@x.example", "b@x.example"]})
    commit()
    assert ("Host", "a", "b") in _rows(admin.get(f"/clients/{contoso.id}/history").get_data(as_text=True))
    assert ("Server", "a", "b") in _rows(admin.get(f"/mailboxes/{box.id}/history").get_data(as_text=True))
    users = _rows(admin.get(f"/users/{ana.id}/history").get_data(as_text=True))
    assert ("Email address", "a@x.example", "b@x.example") in users


def test_a_tickets_history_says_assigned_to(app, world, acme, browser):
    ticket = world.deliver(acme.box, email(sender="alice@contoso.com", subject="Printer")).ticket
    tickets.update_fields(ticket, tickets.FieldsInput(priority=ticket.priority, assignee=str(acme.ana.id)), acme.tom)
    commit()
    browser.sign_in("tom@acme.example")
    rows = _rows(browser.get(f"/tickets/{ticket.reference}/changes").get_data(as_text=True))
    assert [label for label, _old, _new in rows] == ["Assigned to"], rows


def test_client_names_of_a_history_page_are_read_in_one_query(app, world, msp, admin, sql_statements):
    clients = [world.client(msp, f"Client {n}") for n in range(6)]
    box = world.mailbox(clients[0])
    url = f"/mailboxes/{box.id}/history"
    audit.record(None, msp.id, "mailbox", box.id, "updated", {"client_id": [clients[0].id, clients[1].id]})
    commit()
    admin.get(url)  # the session's first request warms up
    with sql_statements() as one:
        admin.get(url)
    for a, b in zip(clients[1:], clients[2:]):
        audit.record(None, msp.id, "mailbox", box.id, "updated", {"client_id": [a.id, b.id]})
    commit()
    admin.get(url)
    with sql_statements() as five:
        rows = _rows(admin.get(url).get_data(as_text=True))
    assert [r for r in rows if r[0] == "Client"] == [("Client", f"Client {n}", f"Client {n + 1}") for n in (4, 3, 2, 1, 0)] + [("Client", "—", "Client 0")]  # and its creation
    assert len(five) == len(one), [" ".join(s.split())[:100] for s in five]
