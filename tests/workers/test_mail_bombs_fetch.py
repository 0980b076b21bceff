"""A mailbox holding mail bombs beside ordinary mail, fetched from a real Dovecot by the real
fetch: every bomb is kept and flagged, and the ordinary mail after it still becomes tickets in the
same run. Their time and peak memory are measured by `python -m tests.soak.bombs` (make soak),
with a 500 MB base64 line beside these."""

from sqlalchemy import select

from portal.extensions import db
from portal.inbound.fetch import run_fetch
from portal.mail.parse import DEFAULT_MAX_SIZE
from portal.models import Attachment, Message, RawMessage, Ticket
from portal.services import commit
from portal.transport import open_session
from tests.mailbombs import bombs, forty_megabytes
from tests.mailfactory import email
from tests.workers.test_fetch import acme, make_mailbox  # noqa: F401 - acme is a fixture


def test_bombs_are_kept_and_flagged_and_the_mail_after_them_still_becomes_tickets(world, acme, dovecot,  # noqa: F811
                                                                                    mail_user, redis):
    dovecot.deliver(mail_user, email(subject="Before the bombs"))
    for message in bombs().values():
        dovecot.deliver(mail_user, message)
    dovecot.deliver(mail_user, email(subject="After the bombs"))
    mailbox = make_mailbox(world, acme, dovecot, mail_user)

    report = run_fetch(mailbox, open_session=open_session, keys=world.app.config["TIDEMARK_ENCRYPTION_KEY"],
                       secret=b"s", commit=commit)

    assert (report.fetched, report.decided, report.failed, report.error) == (10, 10, 0, None)
    assert db.session.scalar(select(db.func.count()).select_from(RawMessage)) == 10
    subjects = set(db.session.scalars(select(Ticket.subject)))
    assert {"Before the bombs", "After the bombs"} <= subjects
    traces = {m.subject.split()[0] if m.subject else "": " ".join(m.trace) for m in db.session.scalars(select(Message))}
    assert "more than 1000 MIME parts" in traces["attachments"]
    assert "nested too deeply" in traces["nested"]
    assert "subject longer than 2,000 characters" in traces["subject"]
    assert "nests tags more than 500 deep" in traces["deep"]
    assert "more than 200 attributes" in traces["attributes"]
    assert "10,001 recipients in To and Cc" in traces["recipients"]  # the desk and the 10,000
    deep = db.session.scalar(select(Message).where(Message.subject == "deep"))
    assert deep.ticket_id is not None and "deep text" in deep.body_text
    # The line of 4 MB is decoded into its file whole; the 40 MB message is kept as a record
    # without its bytes (it waits in unprocessed) and says how large it was.
    line = db.session.scalar(select(Attachment).join(Message).where(Message.subject == "line"))
    assert (line.filename, line.size) == ("a.bin", 3 * 2**20)
    big = db.session.scalar(select(RawMessage).where(RawMessage.size > DEFAULT_MAX_SIZE))
    assert big.raw is None and big.size == len(forty_megabytes())
    shown = db.session.scalar(select(Message).where(Message.raw_message_id == big.id))
    assert (shown.outcome, shown.ticket_id) == ("unprocessed", None)
    assert f"{big.size:,} bytes is over the size limit" in shown.trace[0]


def test_a_reply_to_ten_thousand_adds_each_address_to_the_ticket_once(world, acme, dovecot,  # noqa: F811
                                                                      mail_user, redis):
    first = email(subject="Printer", cc=["boss@contoso.com"], message_id="<first@contoso.com>")
    everyone = [f"user{i}@r{i % 97}.example" for i in range(10_000)]
    reply = email(subject="Re: Printer", in_reply_to="<first@contoso.com>", cc=["boss@contoso.com", *everyone,
                                                                                  *everyone[:100]])
    dovecot.deliver(mail_user, first)
    dovecot.deliver(mail_user, reply)
    mailbox = make_mailbox(world, acme, dovecot, mail_user)

    report = run_fetch(mailbox, open_session=open_session, keys=world.app.config["TIDEMARK_ENCRYPTION_KEY"],
                       secret=b"s", commit=commit)

    assert (report.decided, report.failed) == (2, 0)
    ticket = db.session.scalar(select(Ticket))
    assert ticket.cc == ["boss@contoso.com", *everyone]
