"""A decided batch is written without the ORM's flush (COPY on PostgreSQL, one executemany on
SQLite). What it writes must be exactly what deciding the same mail one message at a time
writes through the flush, and the session must end up as a flush would leave it."""

import logging

import pytest
from sqlalchemy import func, select

from portal.extensions import db
from portal.models import Attachment, Contact, Message, Ticket, TicketLink
from tests.mailfactory import email

BOTH = ("support@a.example", "support@b.example")


@pytest.fixture
def twins(world):
    """Two MSPs alike in every way that matters, each with a mailbox the same mail reaches."""
    out = []
    for name, address in (("Alpha MSP", BOTH[0]), ("Beta MSP", BOTH[1])):
        msp = world.msp(name, waterline="## Please reply above this line ##")
        world.client(msp, "Contoso", allow=["contoso.com"], waterline="Best regards")
        out.append(world.mailbox(msp, address=address, alert_recipients=["noc@msp.example"]))
    return out


def mails() -> list[bytes]:
    first = "<first@contoso.com>"
    return [
        email(message_id="<closed@contoso.com>", subject="Re: old printer", in_reply_to="<old@contoso.com>",
              sender="alice@contoso.com", to=BOTH),
        email(message_id=first, subject="Printer on fire", to=BOTH, cc=["carol@contoso.com"],
              body="Help.\n\nBest regards\nAlice",
              attachments=[("photo.jpg", "image/jpeg", b"\xff\xd8jpeg" * 50), ("log.txt", "text/plain", b"x\ty\\z\n")]),
        email(message_id="<r1@contoso.com>", subject="Re: Printer on fire", in_reply_to=first, references=[first],
              to=BOTH, html="<p>Still <b>burning</b></p><script>x()</script>"),
        email(message_id="<ooo@contoso.com>", subject="Out of office", in_reply_to=first, to=BOTH,
              headers={"Auto-Submitted": "auto-replied"}),
        email(message_id="<stranger@nowhere.example>", sender="Who Ever <who@nowhere.example>", to=BOTH,
              subject="Tab\there, quote ' and backslash \\"),
        email(message_id="<bob@contoso.com>", sender="bob@contoso.com", to=BOTH, subject="Another one"),
    ]


def snapshot(mailbox) -> dict:
    """Everything the pipeline wrote for one mailbox, without ids, times or the MSP's name."""
    session = db.session
    session.expire_all()
    msgs = session.scalars(select(Message).where(Message.mailbox_id == mailbox.id).order_by(Message.id)).all()
    position = {m.id: i for i, m in enumerate(msgs)}
    tickets = session.scalars(select(Ticket).where(Ticket.mailbox_id == mailbox.id).order_by(Ticket.id)).all()
    ref = {t.id: t.reference for t in tickets}
    links = session.scalars(select(TicketLink).where(TicketLink.ticket_id.in_(list(ref)))).all()
    contacts = session.scalars(select(Contact).where(Contact.msp_id == mailbox.msp_id).order_by(Contact.id)).all()
    return {
        "messages": [
            (m.direction, m.outcome, ref.get(m.ticket_id), m.message_id, m.in_reply_to, m.references, m.from_address,
             m.from_name, m.to, m.cc, m.subject, m.sent_at, m.body_text, m.body_html, m.full_text, m.auto_generated,
             m.auto_reason, m.priority, m.fp_raw, m.fp_content, m.fp_envelope, position.get(m.duplicate_of_id),
             m.delivery, {k: v for k, v in (m.details or {}).items() if k != "route_id"},
             [(a.filename, a.content_type, a.size, a.sha256, a.inline, a.data) for a in m.attachments],
             m.created_at.tzinfo is not None)
            for m in msgs],
        # The other twin's mailbox is an ordinary CC here.
        "tickets": [(t.reference, t.subject, t.status, t.priority, t.type, t.source, [c for c in t.cc if c not in BOTH],
                     t.new_information,
                     t.contact.email if t.contact else None, t.client.name if t.client.parent_id else "the MSP")
                    for t in tickets],
        "links": sorted((ref[link.ticket_id], ref[link.linked_id], link.kind) for link in links),
        "contacts": [(c.email, c.name, c.client.name if c.client.parent_id else "the MSP") for c in contacts],
    }


def test_a_batch_writes_exactly_what_one_message_at_a_time_writes(world, app, db, twins, caplog):
    from portal.inbound import fetch
    from portal.services import commit

    batch_box, single_box = twins
    old_mail = email(message_id="<old@contoso.com>", subject="old printer", to=BOTH)
    for box in twins:  # a closed ticket for the first mail's reply to open a linked follow-up
        old = world.deliver(box, old_mail)
        old.ticket.status = "closed"
        commit()

    raws = mails()
    for i, raw in enumerate([*raws, raws[1]]):  # the last one again: a duplicate within the batch
        fetch.store_raw(batch_box, raw, server_id=f"b{i}", folder="INBOX")
    commit()
    with caplog.at_level(logging.WARNING, logger="portal.inbound.batch"):
        report = fetch.decide_pending(batch_box, app.config["SECRET_KEY"].encode(), commit)
    assert report.decided == 7 and report.failed == 0
    assert not [r for r in caplog.records if "failed as a whole" in r.getMessage()]  # no silent fallback
    for raw in [*raws, raws[1]]:
        world.deliver(single_box, raw)

    batch, single = snapshot(batch_box), snapshot(single_box)
    assert [m[1] for m in batch["messages"] if m[0] == "in"] == [
        "created", "created", "created", "appended", "appended", "created", "created", "duplicate"]
    assert batch["links"] == [("T-2", "T-1", "follow-up")]
    assert any(m[24] and m[24][1][5] == b"x\ty\\z\n" for m in batch["messages"])  # bytes kept exactly
    for key in batch:
        for mine, theirs in zip(batch[key], single[key], strict=True):
            assert mine == theirs, [(i, a, b) for i, (a, b) in enumerate(zip(mine, theirs)) if a != b]


def test_the_session_sees_the_rows_as_a_flush_leaves_them_and_a_rollback_takes_them_back(world, db, twins):
    from portal.inbound.write import insert_new_rows

    box = twins[0]

    def rows(reference):  # asked of the database itself, not of the session
        return db.session.execute(select(func.count()).select_from(Ticket.__table__)
                                  .where(Ticket.__table__.c.reference == reference)).scalar_one()

    ticket = Ticket(msp_id=box.msp_id, number=90, reference="T-90", mailbox_id=box.id, client_id=box.client_id,
                    subject="kept")
    message = Message(msp_id=box.msp_id, mailbox_id=box.id, ticket=ticket, direction="in", subject="kept")
    message.attachments.append(Attachment(filename="a.txt", content_type="text/plain", size=1, sha256="0", data=b"a"))
    with db.session.begin_nested():  # it flushes what is pending: the rows are added after
        db.session.add_all([ticket, message])
        insert_new_rows(db.session)
        assert not db.session.new and message in db.session and ticket.id and message.ticket_id == ticket.id
        assert message.attachments[0].message_id == message.id
        assert rows("T-90") == 1
        db.session.flush()  # nothing left to insert: a second INSERT would break the unique keys
        assert rows("T-90") == 1
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(Message, message.id).attachments[0].data == b"a"

    doomed = Ticket(msp_id=box.msp_id, number=91, reference="T-91", mailbox_id=box.id, client_id=box.client_id,
                    subject="rolled back")
    nested = db.session.begin_nested()
    db.session.add(doomed)
    insert_new_rows(db.session)
    assert rows("T-91") == 1
    nested.rollback()
    assert doomed not in db.session
    db.session.commit()
    assert rows("T-91") == 0 and rows("T-90") == 1


def test_a_grown_table_is_analysed_so_lookups_keep_using_their_indexes(world, db, twins):
    """PostgreSQL only: after a big first fetch the planner must know raw_messages is no longer
    empty."""
    import time

    from sqlalchemy import text

    from portal.inbound.fetch import refresh_statistics
    from portal.inbound.write import insert_rows
    from portal.models import RawMessage
    from portal.services import commit

    if db.session.get_bind().dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite keeps no planner statistics unless asked")
    box = twins[0]
    insert_rows(db.session, RawMessage.__table__, [
        dict(msp_id=box.msp_id, mailbox_id=box.id, folder="INBOX", uidvalidity=1, server_id=str(i), raw=b"x",
             size=1, sha256="0") for i in range(3000)])
    commit()

    def seen():
        db.session.execute(text("SELECT pg_stat_clear_snapshot()"))
        return db.session.execute(text(
            "SELECT s.n_live_tup, c.reltuples FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid"
            " WHERE s.relname = 'raw_messages'")).one()

    deadline = time.monotonic() + 10
    while seen()[0] < 3000 and time.monotonic() < deadline:  # the statistics arrive shortly after the commit
        db.session.rollback()
        time.sleep(0.2)
    assert seen()[1] < 3000  # not analysed yet
    refresh_statistics()
    commit()
    assert seen()[1] >= 3000


def test_a_fetched_batch_keeps_every_byte_and_is_sent_as_bytes_on_postgresql(world, db, twins):
    from types import SimpleNamespace

    from portal.inbound import fetch
    from portal.inbound.write import _carries_bytes
    from portal.models import RawMessage
    from portal.services import commit

    box = twins[0]
    every_byte = bytes(range(256)) * 3
    fetched = [SimpleNamespace(server_id="1", raw=b"From: a@b.example\r\n\r\n" + every_byte, size=None, internal_date=None),
               SimpleNamespace(server_id="2", raw=None, size=50_000_000, internal_date=None),  # over the size limit: no bytes
               SimpleNamespace(server_id="3", raw=b"", size=0, internal_date=None)]
    assert fetch.store_raw_batch(box, fetched, folder="INBOX", uidvalidity=7) == 3
    commit()
    db.session.expire_all()
    rows = db.session.scalars(select(RawMessage).where(RawMessage.mailbox_id == box.id).order_by(RawMessage.id)).all()
    assert [(r.server_id, r.raw, r.size, r.uidvalidity, r.state, r.fetched_at is not None) for r in rows] == [
        ("1", fetched[0].raw, len(fetched[0].raw), 7, "new", True), ("2", None, 50_000_000, 7, "new", True),
        ("3", b"", 0, 7, "new", True)]
    # Raw messages and attachments carry bytes (binary COPY); messages carry JSON (text COPY).
    assert _carries_bytes(RawMessage.__table__) and _carries_bytes(Attachment.__table__)
    assert not _carries_bytes(Message.__table__)


def test_a_batch_that_loses_the_database_stops_instead_of_trying_one_message_at_a_time(world, app, db, twins,
                                                                                         monkeypatch, caplog):
    """One at a time would meet the same outage, and on a broken transaction (the worker runs
    its jobs in its own process): the fetch stops in one line, the next one goes on. Any other
    failure of the whole batch still falls back to one message at a time."""
    import psycopg
    from sqlalchemy.exc import OperationalError

    from portal.inbound import batch as batches
    from portal.inbound import fetch
    from portal.services import commit, database_unreachable

    box = twins[0]
    for i, raw in enumerate(mails()[:3]):
        fetch.store_raw(box, raw, server_id=f"o{i}", folder="INBOX")
    commit()
    lost = OperationalError("SELECT 1", {}, psycopg.OperationalError("server closed the connection unexpectedly"))
    assert database_unreachable(lost)

    def cut(*args, **kwargs):
        raise lost

    monkeypatch.setattr(batches, "decide", cut)
    with caplog.at_level(logging.WARNING, logger="portal.inbound.batch"), pytest.raises(OperationalError):
        fetch.decide_pending(box, app.config["SECRET_KEY"].encode(), commit)
    assert not [r for r in caplog.records if "failed as a whole" in r.getMessage()]
    db.session.rollback()

    def broken(*args, **kwargs):
        raise ValueError("a bug in one message")

    monkeypatch.setattr(batches, "decide", broken)
    with caplog.at_level(logging.WARNING, logger="portal.inbound.batch"):
        fetch.decide_pending(box, app.config["SECRET_KEY"].encode(), commit)
    assert [r for r in caplog.records if "failed as a whole" in r.getMessage()]
