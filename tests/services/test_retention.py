"""Retention (issue #17): an MSP's raw mail of closed tickets and of discarded unprocessed mail
goes after its days, by the hourly job, in bounded batches; the tickets keep their text. Rows
older and newer than the cutoff, on SQLite and PostgreSQL (TEST_DATABASE_URL)."""

import logging
from datetime import timedelta

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.inbound import retention
from portal.inbound import unprocessed as unprocessed_svc
from portal.inbound.context import IngestContext
from portal.inbound.replay import replay
from portal.models import Attachment, AuditEntry, Message, RawMessage
from portal.models.base import utcnow
from portal.services import ValidationError, commit
from tests.mailfactory import email
from workers.maintenance import purge_old_mail

DAYS = 30


def _closed(world, box, subject, days_ago, status="closed"):
    ticket = world.deliver(box, email(sender="alice@contoso.com", to=[box.address], subject=subject)).ticket
    ticket.status, ticket.updated_at = status, utcnow() - timedelta(days=days_ago)
    commit()
    return ticket


def _discarded(world, box, subject, days_ago):
    """Unprocessed (only BCC'd to the mailbox), then discarded `days_ago`."""
    message = world.deliver(box, email(sender="x@elsewhere.example", to=["x@elsewhere.example"],
                                       subject=subject)).message
    assert message.outcome == "unprocessed"
    unprocessed_svc.discard(message, None)
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.record_id == message.id,
                                                        AuditEntry.action == "discarded")).one()
    entry.at = utcnow() - timedelta(days=days_ago)
    commit()
    return message


def _raw_kept(message) -> bool:
    return db.session.scalar(select(RawMessage.raw.is_not(None)).where(RawMessage.id == message.raw_message_id))


def _eml_count(ticket) -> int:
    return len(db.session.scalars(select(Attachment).join(Message).where(
        Message.ticket_id == ticket.id, Attachment.filename == "original.eml")).all())


@pytest.fixture
def desk(world):
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    retention.save_retention(msp, {"retention_raw_days": DAYS, "retention_unprocessed_days": DAYS}, None)
    commit()
    box = world.mailbox(msp, acknowledge=False, keep_raw_attachment=True)
    return msp, box


def test_raw_mail_older_than_the_cutoff_goes_and_newer_stays(world, desk, caplog):
    msp, box = desk
    old = _closed(world, box, "old closed", DAYS + 5)
    archived = _closed(world, box, "old archived", DAYS + 5, status="archived")
    recent = _closed(world, box, "recently closed", DAYS - 5)
    still_open = _closed(world, box, "old but open", DAYS + 5, status="open")
    gone = _discarded(world, box, "discarded long ago", DAYS + 5)
    fresh = _discarded(world, box, "discarded lately", DAYS - 5)
    waiting = world.deliver(box, email(sender="y@elsewhere.example", to=["y@elsewhere.example"])).message
    # Another MSP that set no retention keeps everything, however old.
    other = world.msp("Other MSP")
    other_box = world.mailbox(other, address="desk@other.example", keep_raw_attachment=True, acknowledge=False)
    theirs = _closed(world, other_box, "theirs", 400)

    with caplog.at_level(logging.INFO, logger="portal.inbound.retention"):
        assert purge_old_mail() == 2 + 2 + 1  # two raw, two .eml, one discarded

    db.session.expire_all()
    for ticket in (old, archived):
        (message,) = ticket.messages
        assert not _raw_kept(message) and _eml_count(ticket) == 0
        assert message.body_text.strip() == "It burns." and message.subject == ticket.subject  # the text stays
    for ticket in (recent, still_open, theirs):
        assert _raw_kept(ticket.messages[0]) and _eml_count(ticket) == 1
    assert not _raw_kept(gone) and db.session.get(Message, gone.id).outcome == "discarded"
    assert _raw_kept(fresh) and _raw_kept(waiting)
    (entry,) = db.session.scalars(select(AuditEntry).where(AuditEntry.action == retention.PURGED)).all()
    assert (entry.msp_id, entry.record_type, entry.record_id, entry.actor_label) == (msp.id, "client", msp.id,
                                                                                      "retention")
    assert entry.changes == {"raw mail of closed tickets": [None, 2],
                             "original emails attached to closed tickets": [None, 2],
                             "discarded unprocessed mail": [None, 1]}
    assert "Acme MSP: removed 2 raw mail of closed tickets" in caplog.text
    # Nothing left to do: the next run removes nothing and records nothing.
    assert purge_old_mail() == 0
    assert len(db.session.scalars(select(AuditEntry).where(AuditEntry.action == retention.PURGED)).all()) == 1


def test_each_run_does_a_bounded_batch_and_the_next_one_goes_on(world, desk):
    msp, box = desk
    tickets = [_closed(world, box, f"old {i}", DAYS + 1) for i in range(3)]
    first = retention.purge_all(utcnow(), batch=2)
    commit()
    assert (first[msp.id].raw, first[msp.id].eml) == (2, 2)
    assert sum(_raw_kept(t.messages[0]) for t in tickets) == 1
    second = retention.purge_all(utcnow(), batch=2)
    commit()
    assert (second[msp.id].raw, second[msp.id].eml) == (1, 1)
    assert not any(_raw_kept(t.messages[0]) for t in tickets)


def test_a_mail_discarded_again_lately_counts_from_its_last_discard(world, desk):
    _msp, box = desk
    message = _discarded(world, box, "back and forth", 1)
    unprocessed_svc.restore(message, None)
    unprocessed_svc.discard(message, None)  # today
    first = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "discarded").order_by(AuditEntry.id)).first()
    first.at = utcnow() - timedelta(days=DAYS + 5)  # the first discard is past the cutoff, the last is not
    commit()
    assert retention.purge_all(utcnow()) == {}
    assert _raw_kept(message)


def test_retention_is_off_by_default_and_checked_when_set(world):
    msp = world.msp("Plain MSP")
    assert (msp.retention_raw_days, msp.retention_unprocessed_days) == (None, None)
    with pytest.raises(ValidationError) as refused:
        retention.save_retention(msp, {"retention_raw_days": 0, "retention_unprocessed_days": 7}, None)
    assert set(refused.value.errors) == {"retention_raw_days", "retention_unprocessed_days"}
    changes = retention.save_retention(msp, {"retention_raw_days": 90, "retention_unprocessed_days": ""}, None)
    assert changes == {"retention_raw_days": [None, 90]}


def test_a_ticket_message_whose_original_went_is_not_decided_again(world, desk):
    _msp, box = desk
    ticket = _closed(world, box, "old closed", DAYS + 5)
    retention.purge_all(utcnow())
    commit()
    (message,) = ticket.messages
    stored = db.session.get(RawMessage, message.raw_message_id)
    with pytest.raises(ValidationError, match="removed after the MSP's retention period"):
        replay(stored, IngestContext(box, b"s"))
    db.session.rollback()
    assert db.session.get(Message, message.id).ticket_id == ticket.id
