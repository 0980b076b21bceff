"""Plus addressing with several tags (issue #17, item 9): one mail addressed to two tagged tickets
goes onto both, each under its own status rules; a tag that is forged, names nothing or repeats
another is ignored, and the trace says so for each."""

import logging

import pytest
from sqlalchemy import func, select

from portal.extensions import db
from portal.mail.refs import RefFormat
from portal.models import Message, RawMessage
from tests.mailfactory import email as any_email

DESK = "desk@acme.example"


@pytest.fixture
def desk(world):
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    return world.mailbox(msp, address=DESK, plus_addressing="mixed")


def email(**kw) -> bytes:
    return any_email(**{"to": [DESK], **kw})


def tag(app, reference: str, address: str = DESK) -> str:
    return RefFormat().plus_address(address, reference, app.config["SECRET_KEY"].encode())


def messages_of(ticket_id: int) -> list[Message]:
    return db.session.scalars(select(Message).where(Message.ticket_id == ticket_id, Message.direction == "in")
                              .order_by(Message.id)).all()


def test_a_mail_to_two_tagged_tickets_goes_onto_both(world, app, desk):
    from portal.services import commit

    first = world.deliver(desk, email(subject="printer", body="The printer.")).ticket
    second = world.deliver(desk, email(subject="scanner", body="The scanner.")).ticket
    second.status = "waiting"
    commit()
    raws_before = db.session.scalar(select(func.count()).select_from(RawMessage))

    result = world.deliver(desk, email(to=[tag(app, first.reference)], cc=[tag(app, second.reference)],
                                       subject="both of them", body="Both are fixed, thanks."))

    assert result.ticket.id == first.id and result.outcome == "appended"
    on_first, on_second = messages_of(first.id)[-1], messages_of(second.id)[-1]
    assert on_first.id == result.message.id and on_second.id != on_first.id
    assert on_second.subject == "both of them" and on_second.body_text.strip() == "Both are fixed, thanks."
    assert on_second.outcome == "appended" and second.status == "open"  # its own status rule: waiting → open
    # One raw mail: the copy refers to it through the message that carries it.
    assert db.session.scalar(select(func.count()).select_from(RawMessage)) == raws_before + 1
    assert on_first.raw_message_id is not None and on_second.raw_message_id is None
    assert f"thread: plus address tag {first.reference} on {first.reference}" in result.trace
    assert f"thread: plus address tag {second.reference} on {second.reference}" in result.trace
    assert f"a copy of the message is on {second.reference} too" in result.trace
    assert on_second.trace == result.trace


def test_forged_unknown_and_repeated_tags_are_ignored_and_named(world, app, desk):
    from portal.services import commit

    first = world.deliver(desk, email(subject="printer", body="The printer.")).ticket
    merged = world.deliver(desk, email(subject="printer again", body="Again.")).ticket
    merged.status, merged.merged_into_id = "merged", first.id
    commit()
    forged = tag(app, first.reference).replace(first.reference, "T-77")
    result = world.deliver(desk, email(to=[tag(app, first.reference), forged, tag(app, "T-99")],
                                       cc=[tag(app, merged.reference)], subject="one ticket"))

    assert result.ticket.id == first.id
    assert [m.id for m in messages_of(first.id)][-1] == result.message.id
    assert db.session.scalar(select(func.count()).select_from(Message)
                             .where(Message.subject == "one ticket")) == 1  # no second copy on the survivor
    trace = "\n".join(result.trace)
    assert "plus address tag T-77 ignored: its signature does not match" in trace
    assert "plus address tag T-99 ignored: no ticket T-99 in this MSP" in trace
    assert (f"plus address tag {merged.reference} ignored: the mail already goes where the tag "
            f"{first.reference} takes it") in trace


def test_a_single_tag_threads_as_before(world, app, desk):
    first = world.deliver(desk, email(subject="printer", body="The printer.")).ticket
    result = world.deliver(desk, email(to=[tag(app, first.reference)], subject="no reference"))
    assert result.ticket.id == first.id and result.trace[0].startswith("thread: plus address tag")
    assert len(messages_of(first.id)) == 2


def test_only_mode_without_a_usable_tag_opens_a_new_ticket(world, app):
    msp = world.msp("Acme MSP")
    box = world.mailbox(msp, address=DESK, plus_addressing="only")
    result = world.deliver(box, email(to=[tag(app, "T-42")], subject="hello"))
    assert result.outcome == "created"
    assert "thread: plus-addressing only, no tag names a ticket: new conversation" in result.trace


def test_a_batch_writes_the_copies_with_the_rest(world, app, desk, caplog):
    """The fast path (rows written without the flush, COPY on PostgreSQL) takes the copies too."""
    from portal.inbound import fetch
    from portal.services import commit

    first = world.deliver(desk, email(subject="printer", body="The printer.")).ticket
    second = world.deliver(desk, email(subject="scanner", body="The scanner.")).ticket
    raws = [email(to=[tag(app, first.reference), tag(app, second.reference)], subject="both",
                  attachments=[("log.txt", "text/plain", b"a\tb\\c\n")]),
            email(subject="a new one", sender="bob@contoso.com")]
    for i, raw in enumerate(raws):
        fetch.store_raw(desk, raw, server_id=f"p{i}", folder="INBOX")
    commit()
    with caplog.at_level(logging.WARNING, logger="portal.inbound.batch"):
        report = fetch.decide_pending(desk, app.config["SECRET_KEY"].encode(), commit)
    assert report.decided == 2 and report.failed == 0
    assert not [r for r in caplog.records if "failed as a whole" in r.getMessage()]
    db.session.expire_all()
    for ticket_id in (first.id, second.id):
        last = messages_of(ticket_id)[-1]
        assert last.subject == "both" and [a.data for a in last.attachments] == [b"a\tb\\c\n"]
