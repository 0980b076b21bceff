"""Unprocessed mail as a service: placing, teaching, deciding again, discarding, and the
routing check that runs the real decision without saving anything."""

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from portal.extensions import db
from portal.models import AllowEntry, AuditEntry, Client, Message, RawMessage, Ticket
from portal.inbound import unprocessed as svc
from portal.inbound.replay import CheckInput, Pipeline, check_routing
from portal.services import ValidationError, commit
from tests.mailfactory import email


@pytest.fixture
def pipeline(app):
    return Pipeline(secret=app.config["SECRET_KEY"].encode(), host=app.config["TIDEMARK_MAIL_HOST"])


@pytest.fixture
def desk(world):
    msp = world.msp("Acme MSP")
    contoso = world.client(msp, "Contoso", allow=["contoso.com"])
    fabrikam = world.client(msp, "Fabrikam", allow=["fabrikam.example"])
    box = world.mailbox(msp, address="desk@acme.example", acknowledge=False, routes=[
        {"name": "Contoso BCC", "client": contoso, "recipients": ["*"], "senders": ["contoso.com"]},
        {"name": "Everything else", "client": msp, "fallback": True}])
    admin = world.user(msp, email="ann@acme.example")
    return msp, contoso, fabrikam, box, admin


def bcc(sender, subject="Need help"):
    """Mail the mailbox only got as BCC: the routes above cannot place it."""
    return email(sender=sender, to=["someone@elsewhere.example"], subject=subject)


def count(model):
    return db.session.scalar(select(func.count()).select_from(model))


def test_bcc_mail_from_a_stranger_waits_with_its_reason_and_only_for_its_msp(world, desk):
    msp, *_ = desk
    waiting = world.deliver(desk[3], bcc("it@newcustomer.example"))
    other = world.msp("Other MSP")
    assert waiting.outcome == "unprocessed"
    rows, total = svc.list_mail(msp.id)
    assert total == 1 and rows[0].sender == "it@newcustomer.example" and rows[0].mailbox.address == "desk@acme.example"
    assert "BCC" in rows[0].why
    assert svc.count_waiting(msp.id) == 1 and svc.count_waiting(other.id) == 0
    assert svc.get_mail(other.id, waiting.message.id) is None


def test_teaching_a_domain_places_every_waiting_mail_from_it(world, desk, pipeline):
    msp, contoso, _f, box, admin = desk
    first = world.deliver(box, bcc("it@newcustomer.example", "first"))
    second = world.deliver(box, bcc("boss@mail.newcustomer.example", "second"))
    stranger = world.deliver(box, bcc("x@unrelated.example", "third"))
    lesson = svc.teach(first.message, contoso, "domain", admin, pipeline)
    commit()
    assert lesson.added and lesson.value == "newcustomer.example"
    assert sorted(o.ticket.reference for o in lesson.placed) == ["T-1", "T-2"]  # the counter moves on
    tickets = db.session.scalars(select(Ticket).order_by(Ticket.id)).all()
    assert [(t.subject, t.client_id) for t in tickets] == [("first", contoso.id), ("second", contoso.id)]
    assert "taught by ann@acme.example" in " ".join(first.message.trace)
    assert db.session.get(Message, stranger.message.id).outcome == "unprocessed"
    assert svc.count_waiting(msp.id) == 1
    entry = db.session.scalar(select(AllowEntry).where(AllowEntry.value == "newcustomer.example"))
    assert entry.client_id == contoso.id
    audited = {(e.record_type, e.action) for e in db.session.scalars(select(AuditEntry))}
    assert {("client", "updated"), ("message", "taught")} <= audited
    assert second.message.raw_message.state == "decided"


def test_teaching_an_address_leaves_the_rest_of_the_domain_waiting(world, desk, pipeline):
    _msp, contoso, _f, box, admin = desk
    first = world.deliver(box, bcc("it@newcustomer.example"))
    other = world.deliver(box, bcc("sales@newcustomer.example"))
    lesson = svc.teach(first.message, contoso, "address", admin, pipeline)
    commit()
    assert lesson.value == "it@newcustomer.example" and len(lesson.placed) == 1
    assert db.session.get(Message, other.message.id).outcome == "unprocessed"


def test_teaching_refuses_a_sender_another_client_already_claims(world, desk, pipeline):
    msp, _contoso, fabrikam, box, admin = desk
    world.client(msp, "Newco", allow=["newcustomer.example"])
    waiting = world.deliver(box, bcc("it@newcustomer.example"))
    with pytest.raises(ValidationError) as exc:
        svc.teach(waiting.message, fabrikam, "domain", admin, pipeline)
    assert "already on the allow-list of Newco" in exc.value.errors["client_id"][0]


def test_assign_creates_the_ticket_like_routed_mail_with_the_acknowledgement(world, desk, pipeline):
    msp, contoso, _f, _box, admin = desk
    box = world.mailbox(msp, address="help@acme.example", acknowledge=True, routes=[
        {"name": "Fallback", "client": msp, "fallback": True}])
    waiting = world.deliver(box, bcc("it@newcustomer.example"))
    outcome = svc.assign(waiting.message, contoso, admin, pipeline)
    commit()
    ticket = outcome.ticket
    assert (ticket.reference, ticket.client_id, ticket.contact.email) == ("T-1", contoso.id, "it@newcustomer.example")
    assert waiting.message.outcome == "created" and waiting.message.ticket_id == ticket.id
    acks = db.session.scalars(select(Message).where(Message.direction == "out", Message.ticket_id == ticket.id)).all()
    assert [m.details["event"] for m in acks] == ["ticket_created"]
    assert "assigned by ann@acme.example to Contoso" in waiting.message.trace
    entry = db.session.scalar(select(AuditEntry).where(AuditEntry.action == "assigned"))
    assert entry.record_id == waiting.message.id and entry.changes["ticket"] == [None, "T-1"]
    with pytest.raises(ValidationError):  # placed: no longer waiting
        svc.assign(waiting.message, contoso, admin, pipeline)


def test_assign_refuses_another_msps_client_and_a_disabled_one(world, desk, pipeline):
    from portal.services.clients import set_client_disabled

    _msp, contoso, _f, box, admin = desk
    stranger = world.client(world.msp("Other MSP"), "Theirs")
    waiting = world.deliver(box, bcc("it@newcustomer.example"))
    with pytest.raises(ValidationError) as exc:
        svc.assign(waiting.message, stranger, admin, pipeline)
    assert "client_id" in exc.value.errors
    set_client_disabled(contoso, True, None)
    with pytest.raises(ValidationError) as exc:
        svc.assign(waiting.message, contoso, admin, pipeline)
    assert "disabled" in exc.value.errors["client_id"][0]
    assert count(Ticket) == 0


def test_append_follows_the_status_rules_and_only_finds_own_tickets(world, desk, pipeline):
    msp, contoso, _f, box, admin = desk
    ticket = world.deliver(box, email(sender="alice@contoso.com", to=["desk@acme.example"])).ticket
    ticket.status = "waiting"
    commit()
    theirs_box = world.mailbox(world.msp("Other MSP"), address="help@other.example")
    theirs = world.deliver(theirs_box, email(to=["help@other.example"])).ticket
    waiting = world.deliver(box, bcc("it@newcustomer.example"))
    with pytest.raises(ValidationError) as exc:
        svc.append(waiting.message, "T-99", admin, pipeline)
    assert exc.value.errors["reference"] == ["There is no ticket T-99."]
    assert theirs.reference == "T-1" and theirs.msp_id != msp.id  # same reference, other MSP: ours is found
    outcome = svc.append(waiting.message, " t-1 ", admin, pipeline)
    commit()
    assert outcome.ticket.id == ticket.id and ticket.status == "open" and waiting.message.outcome == "appended"
    assert count(Ticket) == 2


def test_rerun_uses_the_configuration_as_it_is_now(world, app, desk, pipeline):
    from portal.services.mailboxes import save_mailbox
    from portal.services.routes import RouteInput

    msp, contoso, _f, box, admin = desk
    waiting = world.deliver(box, bcc("it@newcustomer.example"))
    again = svc.rerun(waiting.message, admin, pipeline)
    commit()
    assert again.result.outcome == "unprocessed" and not again.placed
    save_mailbox(msp, msp, {}, keys=app.config["TIDEMARK_ENCRYPTION_KEY"], actor=None, mailbox=box, routes=[
        RouteInput(name="Contoso BCC", client=contoso, recipients=["*"],
                   senders=["contoso.com", "newcustomer.example"]),
        RouteInput(name="Everything else", client=msp, fallback=True)])
    commit()
    placed = svc.rerun(waiting.message, admin, pipeline)
    commit()
    assert placed.placed and placed.ticket.client_id == contoso.id
    assert [e.action for e in db.session.scalars(select(AuditEntry).where(AuditEntry.record_type == "message"))] \
        == ["re-run", "re-run"]


def test_failed_mail_waits_with_its_error_and_a_rerun_places_it(world, app, desk, pipeline, monkeypatch):
    from portal.inbound import batch, fetch

    msp, contoso, _f, box, admin = desk
    stored = fetch.store_raw(box, email(sender="alice@contoso.com", to=["desk@acme.example"], subject="poison"),
                             server_id="1", folder="INBOX")
    commit()
    real = batch.decide
    monkeypatch.setattr(batch, "decide", lambda stored, ctx: (_ for _ in ()).throw(RuntimeError("disk full")))
    for _ in range(3):
        fetch.decide_pending(box, pipeline.secret, commit)
    monkeypatch.setattr(batch, "decide", real)
    rows, _total = svc.list_mail(msp.id)
    assert rows[0].failed and "disk full" in rows[0].why and rows[0].subject == "poison"  # read from the bytes
    outcome = svc.rerun(rows[0].message, admin, pipeline)
    commit()
    assert outcome.placed and outcome.ticket.client_id == contoso.id
    assert db.session.get(RawMessage, stored.id).state == "decided"


def test_discard_hides_and_restore_brings_back_within_thirty_days(world, desk):
    msp, *_, box, admin = desk
    waiting = world.deliver(box, bcc("it@newcustomer.example"))
    svc.discard(waiting.message, admin)
    commit()
    assert svc.count_waiting(msp.id) == 0 and svc.count_discarded(msp.id) == 1
    assert svc.list_mail(msp.id, discarded=True)[0][0].discarded_by == "ann@acme.example"
    svc.restore(waiting.message, admin)
    commit()
    assert waiting.message.outcome == "unprocessed" and svc.count_discarded(msp.id) == 0
    svc.discard(waiting.message, admin)
    commit()
    for entry in db.session.scalars(select(AuditEntry).where(AuditEntry.action == "discarded")):
        entry.at = entry.at - timedelta(days=31)
    commit()
    assert svc.count_discarded(msp.id) == 0 and svc.count_waiting(msp.id) == 0
    with pytest.raises(ValidationError):
        svc.restore(waiting.message, admin)


def test_routing_check_tells_the_decision_and_saves_nothing(world, desk, pipeline):
    msp, contoso, _f, box, _admin = desk
    world.deliver(box, email(sender="alice@contoso.com", to=["desk@acme.example"]))
    before = (count(Ticket), count(Message), count(RawMessage), db.session.get(Client, msp.id).last_ticket_number)
    routed = check_routing(msp.id, CheckInput(mailbox_id=box.id, sender="bob@contoso.com",
                                              to="someone@elsewhere.example", subject="Printer"), pipeline)
    assert (routed.outcome, routed.client, routed.route, routed.ticket) == ("created", "Contoso", "Contoso BCC", "T-2")
    assert any("route 'Contoso BCC'" in line for line in routed.trace)
    assert routed.reads["subject"] == "Printer"
    stranger = check_routing(msp.id, CheckInput(mailbox_id=box.id, sender="x@nowhere.example",
                                                to="someone@elsewhere.example"), pipeline)
    assert stranger.outcome == "unprocessed" and stranger.ticket is None and "BCC" in stranger.trace[-1]
    commit()
    after = (count(Ticket), count(Message), count(RawMessage), db.session.get(Client, msp.id).last_ticket_number)
    assert after == before


def test_routing_check_of_a_reply_shows_the_status_change_without_making_it(world, desk, pipeline):
    msp, *_, box, _admin = desk
    ticket = world.deliver(box, email(sender="alice@contoso.com", to=["desk@acme.example"])).ticket
    ticket.status = "waiting"
    commit()
    raw = email(sender="alice@contoso.com", to=["desk@acme.example"], subject="Re: Printer [T-1]").decode()
    result = check_routing(msp.id, CheckInput(mailbox_id=box.id, raw=raw), pipeline)
    assert (result.outcome, result.ticket, result.status) == ("appended", "T-1", "open")
    commit()
    db.session.expire_all()
    assert db.session.get(Ticket, ticket.id).status == "waiting" and count(Message) == 1


def test_routing_check_names_the_wrong_fields_and_other_msps_mailboxes(world, desk, pipeline):
    box = desk[3]
    other = world.msp("Other MSP")
    with pytest.raises(ValidationError) as exc:
        check_routing(other.id, CheckInput(mailbox_id=box.id, sender="nobody", to="a@b.example, nope"), pipeline)
    assert set(exc.value.errors) == {"mailbox_id", "sender", "to"}


def test_reprocessing_twice_hands_out_two_ticket_numbers(world, app, desk):
    from portal.inbound.replay import context_for, replay
    from portal.services.mailboxes import save_mailbox
    from portal.services.routes import RouteInput

    msp, contoso, _f, box, _admin = desk
    one = world.deliver(box, bcc("it@newcustomer.example", "one"))
    two = world.deliver(box, bcc("it@newcustomer.example", "two"))
    save_mailbox(msp, msp, {}, keys=app.config["TIDEMARK_ENCRYPTION_KEY"], actor=None, mailbox=box, routes=[
        RouteInput(name="New", client=contoso, recipients=["*"], senders=["newcustomer.example"]),
        RouteInput(name="Everything else", client=msp, fallback=True)])
    commit()
    refs = []
    for waiting in (one, two):
        stored = waiting.message.raw_message
        refs.append(replay(stored, context_for(stored, Pipeline(app.config["SECRET_KEY"].encode()))).ticket.reference)
        commit()
    assert refs == ["T-1", "T-2"]
