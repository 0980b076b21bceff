"""The server's receive time of each fetched message (raw_messages.received_at): IMAP's
INTERNALDATE, Graph's receivedDateTime; POP3 gives none (fetched_at stands in)."""

from datetime import datetime, timezone

from sqlalchemy import select

from portal.extensions import db
from portal.models import RawMessage
from tests.inbound.test_fetch_graph import ADDRESS, graph_mailbox
from tests.inbound.test_fetch_graph import email as graph_email
from tests.inbound.test_fetch_graph import fetch as graph_fetch
from tests.mailfactory import email
from tests.workers.test_fetch import make_mailbox
from workers.fetch import fetch_mailbox

ARRIVED = datetime(2026, 11, 19, 8, 30, 15, tzinfo=timezone.utc)
DATED = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)  # the sender's Date header: not the receive time


def stored():
    db.session.expire_all()
    return list(db.session.scalars(select(RawMessage).order_by(RawMessage.id)))


def test_imap_keeps_the_internaldate_of_each_message(world, dovecot, mail_user, redis, app):
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    dovecot.deliver(mail_user, email(subject="first", date=DATED), internal_date=ARRIVED)
    dovecot.deliver(mail_user, email(subject="second", date=DATED),
                    internal_date=datetime(2026, 11, 19, 9, 0, tzinfo=timezone.utc))
    mailbox = make_mailbox(world, msp, dovecot, mail_user)
    assert fetch_mailbox(mailbox.id)["fetched"] == 2
    rows = stored()
    assert [r.received_at for r in rows] == [ARRIVED, datetime(2026, 11, 19, 9, 0, tzinfo=timezone.utc)]
    assert all(r.fetched_at > r.received_at for r in rows)


def test_an_oversized_imap_message_keeps_its_internaldate_too(world, dovecot, mail_user, redis):
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    dovecot.deliver(mail_user, email(subject="huge", body="x" * 5000), internal_date=ARRIVED)
    mailbox = make_mailbox(world, msp, dovecot, mail_user, max_message_size=1024)
    fetch_mailbox(mailbox.id)
    (row,) = stored()
    assert row.raw is None and row.received_at == ARRIVED


def test_pop3_gives_no_receive_time(world, dovecot, mail_user, redis):
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    dovecot.deliver(mail_user, email(subject="pop"), internal_date=ARRIVED)
    mailbox = make_mailbox(world, msp, dovecot, mail_user, protocol="pop3")
    assert fetch_mailbox(mailbox.id)["fetched"] == 1
    (row,) = stored()
    assert row.received_at is None and row.fetched_at is not None


def test_graph_keeps_received_date_time_from_the_delta_page(app, world, graph_server):
    msp = world.msp("Acme MSP")
    world.client(msp, "Contoso", allow=["contoso.com"])
    mailbox = graph_mailbox(app, world, msp, graph_server)
    graph_server.deliver(ADDRESS, graph_email(subject="via graph", date=DATED), received=ARRIVED)
    graph_server.requests.clear()
    report = graph_fetch(app, mailbox)
    assert report.error is None and report.fetched == 1
    (row,) = stored()
    assert row.received_at == ARRIVED
    # From the delta answer itself: no request per message beyond its $value and the mark as read.
    assert not [r for r in graph_server.requests if r[0] == "GET" and r[1].split("?")[0].endswith(row.server_id)]
